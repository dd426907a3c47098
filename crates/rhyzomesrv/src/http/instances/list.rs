//! `GET /v1/instances`.

use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::Json;
use rhyzome_api::{ErrorBody, InstanceList};

/// List all instances, ordered by name. Served from the daemon's store (no libvirt call).
#[utoipa::path(get, path = "/v1/instances", tag = "instances",
    responses(
        (status = 200, description = "All instances", body = InstanceList),
        (status = 500, description = "Store failure", body = ErrorBody),
    ))]
pub async fn list_instances(State(svc): State<AppState>) -> Result<Json<InstanceList>, ApiError> {
    Ok(Json(InstanceList {
        instances: svc.list()?,
    }))
}
