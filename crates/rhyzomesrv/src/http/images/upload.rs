//! `POST /v1/images`: the body is streamed to disk (never buffered whole), hashed on the way,
//! checked against a digest the client may send, inspected, and committed atomically.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::query::ApiQuery;
use crate::http::AppState;
use crate::service::authz::Action;
use crate::service::images::{drain, ExpectedDigest};
use crate::service::Service;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::{Extension, Json};
use rhyzome_api::{ErrorBody, ImageUpload, UploadQuery};

/// Upload an image.
///
/// The body is the raw image (`application/octet-stream`), at most `MaxImageBytes` (default
/// 64 MiB). Identical content is stored once, but a tenant is answered as if it were alone:
/// content that only other tenants stored is new to it (201, with its own names and time).
/// When the image with the given `sha256` is
/// already stored, an empty body only applies `name`; clients check with
/// `HEAD /v1/images/sha256:<hex>` first, so a second push sends nothing. A body that is not a
/// kernel is refused; images that are kernels but cannot run here (a Solo5 `hvt` build, for
/// example) are stored, and refused when an instance is created from them.
#[utoipa::path(post, path = "/v1/images", tag = "images",
    params(
        UploadQuery,
        ("X-Rhyzome-Sha256" = Option<String>, Header,
            pattern = "^(sha256:)?[0-9a-fA-F]{64}$",
            description = "Expected SHA-256 of the body (like the `sha256` query parameter)"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The image file"),
    responses(
        (status = 200, description = "The caller already had this content", body = ImageUpload),
        (status = 201, description = "Stored (new to the caller)", body = ImageUpload),
        (status = 400, description = "Bad query, or the upload ended early (nothing stored)", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not upload", body = ErrorBody),
        (status = 413, description = "Larger than MaxImageBytes", body = ErrorBody),
        (status = 422, description = "Digest mismatch (`field` names where the digest came from), bad name, or not a kernel", body = ErrorBody),
        (status = 429, description = "Too many uploads; retry later", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until an upload will be accepted"))),
    ))]
pub async fn upload_image(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ImageUpload>), ApiError> {
    let mut stream = body.into_data_stream();
    let checked = check_request(&svc, &caller, &uri, &headers);
    let (q, expected) = match checked {
        Ok(v) => v,
        Err(e) => {
            drain(&mut stream, svc.config().max_image_bytes).await;
            return Err(e);
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let upload = svc
        .upload_image(stream, declared, expected, q.name.as_deref(), &caller)
        .await?;
    let status = if upload.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(upload)))
}

/// Checks role, query and digest header before the body is read.
fn check_request(
    svc: &Service,
    caller: &Caller,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(UploadQuery, Option<ExpectedDigest>), ApiError> {
    svc.authorize(caller, Action::UploadImages)?;
    let ApiQuery(q) = ApiQuery::<UploadQuery>::try_from_uri(uri)?;
    let expected = crate::http::digest::expected(q.sha256.clone(), headers)?;
    Ok((q, expected))
}
