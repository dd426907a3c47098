//! `DELETE /v1/networks/{name}/partitions`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, NetworkConditions};

/// Remove every partition of an emulated network.
#[utoipa::path(delete, path = "/v1/networks/{name}/partitions", tag = "networks",
    params(("name" = String, Path, description = "Network name", example = "wan")),
    responses(
        (status = 200, description = "What applies now", body = NetworkConditions),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not do this", body = ErrorBody),
        (status = 404, description = "No such network", body = ErrorBody),
        (status = 409, description = "The network is not emulated", body = ErrorBody),
    ))]
pub async fn heal_network(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<NetworkConditions>, ApiError> {
    Ok(Json(svc.heal_network(&caller, &name).await?))
}
