//! `PUT /v1/networks/{name}/link`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, NetworkConditions, NetworkLink};

/// Set the default link conditions of every NIC on an emulated network, replacing those set
/// before; a NIC's own conditions win, field by field. They reach the emulator before the
/// answer and apply to the next frame.
#[utoipa::path(put, path = "/v1/networks/{name}/link", tag = "networks",
    params(("name" = String, Path, description = "Network name", example = "wan")),
    request_body = NetworkLink,
    responses(
        (status = 200, description = "What applies now", body = NetworkConditions),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not do this", body = ErrorBody),
        (status = 404, description = "No such network", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A condition out of range, or a network that is not emulated; `field` names it", body = ErrorBody),
    ))]
pub async fn set_network_link(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(link): ApiJson<NetworkLink>,
) -> Result<Json<NetworkConditions>, ApiError> {
    Ok(Json(svc.set_network_link(&caller, &name, link).await?))
}
