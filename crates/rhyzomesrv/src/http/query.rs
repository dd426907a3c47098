//! `ApiQuery<T>`: a query-string extractor whose rejections are [`ApiError`]s (400,
//! `invalid_query`, with serde's message), the query-string counterpart of
//! [`ApiJson`](super::json::ApiJson). Every handler that reads a query goes through it, so a
//! bad query is refused the same way everywhere.

use super::error::ApiError;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use serde::de::DeserializeOwned;

pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> ApiQuery<T> {
    /// Decodes the query string of `uri`, for handlers that check other things (the caller's
    /// role) before they look at the query.
    pub fn try_from_uri(uri: &Uri) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(uri)
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    rejection.body_text(),
                )
            })
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::try_from_uri(&parts.uri)
    }
}
