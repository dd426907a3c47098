//! `PUT /v1/instances/{name}/link`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, Instance, InstanceLink};

/// Set the link conditions of every NIC of an instance, replacing those set before. On a
/// plain network only `rate_bps` can be honoured (from the guest's next start); latency,
/// jitter, loss and down need an emulated network and are refused with a 422.
#[utoipa::path(put, path = "/v1/instances/{name}/link", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "msgrouter")),
    request_body = InstanceLink,
    responses(
        (status = 200, description = "The instance afterwards", body = Instance),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not do this", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A condition out of range, one the network cannot honour, or an instance without a NIC; `field` names it", body = ErrorBody),
    ))]
pub async fn set_instance_link(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(link): ApiJson<InstanceLink>,
) -> Result<Json<Instance>, ApiError> {
    Ok(Json(svc.set_link(&caller, &name, link).await?))
}
