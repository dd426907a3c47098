//! `POST /v1/volumes`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use rhyzome_api::{ErrorBody, Volume, VolumeSpec};

/// Create a volume: empty (`size_bytes`, `format`), or a copy-on-write clone of another
/// (`clone`). On any failure nothing is left behind.
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes",
    request_body = VolumeSpec,
    responses(
        (status = 201, description = "Created", body = Volume),
        (status = 400, description = "Malformed JSON or unknown field", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Role or name prefix forbids it", body = ErrorBody),
        (status = 409, description = "Name taken, or the base is attached read-write", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is invalid: name, size (zero, not whole sectors, more than the pool has free), a missing base", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn create_volume(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(spec): ApiJson<VolumeSpec>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let volume = svc.create_volume(&spec, &caller).await?;
    Ok((StatusCode::CREATED, Json(volume)))
}
