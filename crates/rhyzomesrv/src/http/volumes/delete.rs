//! `DELETE /v1/volumes/{name}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use rhyzome_api::ErrorBody;

/// Delete a volume and its content. Refused while an instance attaches it or a clone is
/// based on it.
#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes",
    params(super::VolumeNamePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not delete", body = ErrorBody),
        (status = 404, description = "No such volume", body = ErrorBody),
        (status = 409, description = "Attached, or has clones", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn delete_volume(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc.delete_volume(&name, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
