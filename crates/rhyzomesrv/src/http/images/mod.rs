//! `/v1/images`: one module per operation, and how image errors become HTTP answers.

pub mod delete;
pub mod get;
pub mod head;
pub mod list;
pub mod upload;

use crate::http::error::ApiError;
use crate::images::ImageError;
use axum::http::StatusCode;

/// The `{reference}` of `/v1/images/{reference}`, as the API document describes it (the
/// handlers extract it as a plain string and parse it with `parse_image_ref`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by the OpenAPI derive only
pub struct ImageReferencePath {
    /// `name[:tag]` or `sha256:<hex>`; the name `sha256` is reserved for digests.
    #[param(
        pattern = "^(sha256:[0-9a-fA-F]{64}|(?!sha256(:|$))[a-z0-9][a-z0-9._-]{0,127}(:[A-Za-z0-9._-]{1,128})?)$"
    )]
    reference: String,
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let message = e.to_string();
        match e {
            ImageError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "image_too_large", message)
            }
            ImageError::Truncated(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "truncated_upload", message)
            }
            ImageError::DigestMismatch { field, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch", message)
                    .with_field(field)
            }
            ImageError::NotAKernel(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_a_kernel", message)
                    .with_field("body")
            }
            ImageError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            ImageError::InUse { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            ImageError::Io { .. } | ImageError::Inspect(_) => {
                tracing::error!(error = %message, "image store failure");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}
