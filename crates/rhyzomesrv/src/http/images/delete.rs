//! `DELETE /v1/images/{reference}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use rhyzome_api::ErrorBody;

/// Delete an image (its content and every name pointing to it). Refused while an instance
/// boots it.
#[utoipa::path(delete, path = "/v1/images/{reference}", tag = "images",
    params(super::ImageReferencePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not delete", body = ErrorBody),
        (status = 422, description = "Malformed image reference", body = ErrorBody),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 409, description = "An instance boots the image", body = ErrorBody),
    ))]
pub async fn delete_image(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(reference): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc.delete_image(&reference, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
