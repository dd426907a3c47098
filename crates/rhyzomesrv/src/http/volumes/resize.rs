//! `POST /v1/volumes/{name}/resize`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use rhyzome_api::{ErrorBody, Volume, VolumeResize};

/// Grow a volume. Volumes only grow; refused while attached or cloned.
#[utoipa::path(post, path = "/v1/volumes/{name}/resize", tag = "volumes",
    params(super::VolumeNamePath),
    request_body = VolumeResize,
    responses(
        (status = 200, description = "Resized", body = Volume),
        (status = 400, description = "Malformed JSON or unknown field", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not resize", body = ErrorBody),
        (status = 404, description = "No such volume", body = ErrorBody),
        (status = 409, description = "Attached, or has clones", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Not larger, not whole sectors, or more than the pool has free", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn resize_volume(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<VolumeResize>,
) -> Result<Json<Volume>, ApiError> {
    Ok(Json(
        svc.resize_volume(&name, body.size_bytes, &caller).await?,
    ))
}
