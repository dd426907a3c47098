//! `GET /v1/volumes/{name}/content`: the volume's bytes, streamed from libvirt.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rhyzome_api::ErrorBody;

/// Download a volume's content: the raw bytes of a raw volume, the qcow2 file of a qcow2 one.
/// Streamed as libvirt reads it (no length is known in advance); a transfer that fails midway
/// ends the response early.
#[utoipa::path(get, path = "/v1/volumes/{name}/content", tag = "volumes",
    params(super::VolumeNamePath),
    responses(
        (status = 200, description = "The content", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such volume", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn download_volume(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let stream = svc.download_volume(&name, &caller).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}
