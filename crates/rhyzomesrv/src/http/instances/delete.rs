//! `DELETE /v1/instances/{name}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use rhyzome_api::ErrorBody;

/// Delete an instance: destroy its guest, and remove its console log and record.
#[utoipa::path(delete, path = "/v1/instances/{name}", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "msgrouter")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not delete", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable; the delete finishes later", body = ErrorBody),
    ))]
pub async fn delete_instance(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc.delete(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
