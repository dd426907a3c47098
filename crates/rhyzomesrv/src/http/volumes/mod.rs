//! `/v1/volumes`: one module per operation, and how volume errors become HTTP answers.

pub mod create;
pub mod delete;
pub mod download;
pub mod get;
pub mod list;
pub mod resize;
pub mod upload;

use crate::http::error::ApiError;
use crate::service::volumes::VolumeError;
use axum::http::StatusCode;

/// The `{name}` of `/v1/volumes/{name}`, as the API document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by the OpenAPI derive only
pub struct VolumeNamePath {
    /// The volume's name.
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    name: String,
}

impl From<VolumeError> for ApiError {
    fn from(e: VolumeError) -> Self {
        let message = e.to_string();
        match e {
            VolumeError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            VolumeError::NameTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message).with_field("name")
            }
            VolumeError::InUse { .. } | VolumeError::HasClones { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            VolumeError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "volume_too_large", message)
                    .with_field("body")
            }
            VolumeError::Broken(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "truncated_upload", message)
            }
            VolumeError::DigestMismatch { field, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "digest_mismatch", message)
                    .with_field(field)
            }
            VolumeError::Unsupported(_) => {
                ApiError::new(StatusCode::CONFLICT, "unsupported", message)
            }
        }
    }
}
