//! The digest an upload is checked against: the `sha256` query parameter or the
//! `X-Rhyzome-Sha256` header (both may be given if they agree), shared by image and volume
//! uploads. Read before the body, so a mismatch between the two costs no transfer.

use crate::http::error::ApiError;
use crate::service::images::ExpectedDigest;
use axum::http::{HeaderMap, StatusCode};
use rhyzome_api::images::SHA256_HEADER;

/// The expected digest and which field gave it; 422 when the header is not ASCII or differs
/// from the query parameter.
pub fn expected(
    query: Option<String>,
    headers: &HeaderMap,
) -> Result<Option<ExpectedDigest>, ApiError> {
    let header_digest = headers
        .get(SHA256_HEADER)
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    "is not ASCII",
                )
                .with_field(SHA256_HEADER)
            })
        })
        .transpose()?;
    Ok(match (query, header_digest) {
        (Some(a), Some(b))
            if a.trim_start_matches("sha256:") != b.trim_start_matches("sha256:") =>
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "differs from the sha256 query parameter",
            )
            .with_field(SHA256_HEADER))
        }
        (Some(value), _) => Some(ExpectedDigest {
            field: "sha256",
            value,
        }),
        (None, Some(value)) => Some(ExpectedDigest {
            field: SHA256_HEADER,
            value,
        }),
        (None, None) => None,
    })
}
