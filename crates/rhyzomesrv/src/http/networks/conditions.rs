//! `GET /v1/networks/{name}/conditions`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, NetworkConditions};

/// What applies now on an emulated network: its defaults and seed, each NIC's effective
/// conditions, and each partition with the instances on either side.
#[utoipa::path(get, path = "/v1/networks/{name}/conditions", tag = "networks",
    params(("name" = String, Path, description = "Network name", example = "wan")),
    responses(
        (status = 200, description = "What applies now", body = NetworkConditions),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such network", body = ErrorBody),
        (status = 409, description = "The network is not emulated", body = ErrorBody),
    ))]
pub async fn get_network_conditions(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<NetworkConditions>, ApiError> {
    Ok(Json(svc.network_conditions(&caller, &name).await?))
}
