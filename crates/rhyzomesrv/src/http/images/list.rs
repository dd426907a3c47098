//! `GET /v1/images`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, ImageList};

/// List stored images, newest first.
#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses(
        (status = 200, description = "All images", body = ImageList),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    ))]
pub async fn list_images(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ImageList>, ApiError> {
    Ok(Json(ImageList {
        images: svc.list_images(&caller)?,
    }))
}
