//! `GET /v1/images/{reference}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, Image};

/// Show one image, with what inspection found in it.
#[utoipa::path(get, path = "/v1/images/{reference}", tag = "images",
    params(super::ImageReferencePath),
    responses(
        (status = 200, description = "The image", body = Image),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 422, description = "Not a valid reference", body = ErrorBody),
    ))]
pub async fn get_image(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(reference): Path<String>,
) -> Result<Json<Image>, ApiError> {
    Ok(Json(svc.get_image(&reference, &caller)?))
}
