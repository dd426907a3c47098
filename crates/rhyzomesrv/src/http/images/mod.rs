//! `/v1/images`: one module per operation, and how image errors become HTTP answers.

pub mod delete;
pub mod get;
pub mod head;
pub mod list;
pub mod upload;

use crate::http::error::ApiError;
use crate::images::ImageError;
use axum::http::StatusCode;

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
