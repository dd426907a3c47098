//! `GET /v1/instances/{name}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, Instance};

/// Show one instance.
#[utoipa::path(get, path = "/v1/instances/{name}", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "msgrouter")),
    responses(
        (status = 200, description = "The instance", body = Instance),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
    ))]
pub async fn get_instance(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Instance>, ApiError> {
    Ok(Json(svc.get(&caller, &name)?))
}
