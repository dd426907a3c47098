//! `POST /v1/instances/{name}/restart`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, Instance};

/// Restart an instance: destroy its guest and boot it again.
#[utoipa::path(post, path = "/v1/instances/{name}/restart", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "msgrouter")),
    responses(
        (status = 200, description = "The instance afterwards", body = Instance),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not do this", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn restart_instance(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Instance>, ApiError> {
    Ok(Json(svc.restart(&caller, &name).await?))
}
