//! `PUT /v1/volumes/{name}/content`: the body replaces a raw volume's content, streamed
//! through libvirt into a fresh volume that takes the old one's place only when complete and
//! matching the expected digest.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::query::ApiQuery;
use crate::http::AppState;
use crate::images::drain;
use crate::service::authz::Action;
use crate::service::images::ExpectedDigest;
use crate::service::Service;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::{Extension, Json};
use rhyzome_api::{ErrorBody, VolumeUploadQuery, VolumeUploaded};

/// Upload a volume's content.
///
/// The body (`application/octet-stream`) is written from the first byte; it may be shorter
/// than the volume (the rest reads as zeros) but not longer, nor longer than
/// `MaxVolumeUploadBytes`. Raw volumes only; refused while the volume is attached or has
/// clones. A broken, oversized or mismatching upload leaves the volume as it was.
#[utoipa::path(put, path = "/v1/volumes/{name}/content", tag = "volumes",
    params(
        super::VolumeNamePath,
        VolumeUploadQuery,
        ("X-Rhyzome-Sha256" = Option<String>, Header,
            pattern = "^(sha256:)?[0-9a-fA-F]{64}$",
            description = "Expected SHA-256 of the body (like the `sha256` query parameter)"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The volume's new content"),
    responses(
        (status = 200, description = "Stored", body = VolumeUploaded),
        (status = 400, description = "Bad query, or the upload ended early (volume unchanged)", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not upload", body = ErrorBody),
        (status = 404, description = "No such volume", body = ErrorBody),
        (status = 409, description = "Attached, has clones, or not raw", body = ErrorBody),
        (status = 413, description = "Larger than the volume or MaxVolumeUploadBytes", body = ErrorBody),
        (status = 422, description = "Digest mismatch (`field` names where the digest came from) or malformed digest", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn upload_volume(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<VolumeUploaded>), ApiError> {
    let mut stream = body.into_data_stream();
    let expected = match check_request(&svc, &caller, &name, &uri, &headers) {
        Ok(expected) => expected,
        Err(e) => {
            // Read the body (within bounds) first, so the client hears the refusal.
            drain(&mut stream, 1 << 20).await;
            return Err(e);
        }
    };
    let uploaded = svc.upload_volume(&name, stream, expected, &caller).await?;
    Ok((StatusCode::OK, Json(uploaded)))
}

/// Checks role, query and digest header before the body is read.
fn check_request(
    svc: &Service,
    caller: &Caller,
    name: &str,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<Option<ExpectedDigest>, ApiError> {
    svc.authorize(caller, Action::ChangeVolume(name, "upload to"))?;
    let ApiQuery(q) = ApiQuery::<VolumeUploadQuery>::try_from_uri(uri)?;
    crate::http::digest::expected(q.sha256, headers)
}
