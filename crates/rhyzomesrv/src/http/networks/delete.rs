//! `DELETE /v1/networks/{name}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use rhyzome_api::ErrorBody;

/// Delete a managed network and its libvirt network and bridge. Refused while an instance
/// is attached to it.
#[utoipa::path(delete, path = "/v1/networks/{name}", tag = "networks",
    params(("name" = String, Path, description = "Network name", example = "lab")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not delete", body = ErrorBody),
        (status = 404, description = "No such network", body = ErrorBody),
        (status = 409, description = "Instances are attached to it", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn delete_network(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc.delete_network(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
