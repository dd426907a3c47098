//! `GET /v1/volumes/{name}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use rhyzome_api::{ErrorBody, Volume};

/// Show a volume: size, allocation, format, base and clones, and the instances attaching it
/// (read-write or read-only).
#[utoipa::path(get, path = "/v1/volumes/{name}", tag = "volumes",
    params(super::VolumeNamePath),
    responses(
        (status = 200, description = "The volume", body = Volume),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such volume", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn get_volume(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    Ok(Json(svc.get_volume(&name, &caller).await?))
}
