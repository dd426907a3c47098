//! `GET /v1/instances/{name}`.

use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Json;
use rhyzome_api::{ErrorBody, Instance};

/// Show one instance.
#[utoipa::path(get, path = "/v1/instances/{name}", tag = "instances",
    params(("name" = String, Path, description = "Instance name")),
    responses(
        (status = 200, description = "The instance", body = Instance),
        (status = 404, description = "No such instance", body = ErrorBody),
    ))]
pub async fn get_instance(
    State(svc): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Instance>, ApiError> {
    Ok(Json(svc.get(&name)?))
}
