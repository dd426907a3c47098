//! `HEAD /v1/images/{reference}`: does the server have it? Clients ask before uploading.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Extension;

/// Whether an image exists: 200 (its size in `X-Rhyzome-Size`, its digest as `ETag`) or 404.
/// No body.
#[utoipa::path(head, path = "/v1/images/{reference}", tag = "images",
    params(super::ImageReferencePath),
    responses(
        (status = 200, description = "Stored"),
        (status = 401, description = "No or invalid token"),
        (status = 422, description = "Malformed image reference"),
        (status = 404, description = "Not stored"),
    ))]
pub async fn head_image(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(reference): Path<String>,
) -> Result<(StatusCode, HeaderMap), ApiError> {
    let image = svc.get_image(&reference, &caller)?;
    let mut h = HeaderMap::new();
    h.insert("x-rhyzome-size", HeaderValue::from(image.size));
    if let Ok(v) = HeaderValue::from_str(&image.digest) {
        h.insert(header::ETAG, v);
    }
    Ok((StatusCode::OK, h))
}
