//! `GET /v1/instances/{name}/stats`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, InstanceStats};

/// What a running instance uses now: CPU time, memory, and each NIC's traffic counters.
#[utoipa::path(get, path = "/v1/instances/{name}/stats", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "msgrouter")),
    responses(
        (status = 200, description = "Current figures", body = InstanceStats),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 409, description = "The instance is not running", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn instance_stats(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<InstanceStats>, ApiError> {
    Ok(Json(svc.stats(&caller, &name).await?))
}
