//! `ApiJson<T>`: a JSON body extractor whose rejections are [`ApiError`]s that name the
//! offending field (through `serde_path_to_error`) and give line and column for syntax errors.
//! The body size limit is axum's `DefaultBodyLimit`, applied to the router.
//!
//! A body is exactly one JSON object: anything after it but whitespace is refused, and so is
//! a top-level array, string, number or `null` (serde would read a struct from a sequence).
//! Nested objects are guarded by `rhyzome_api`'s request types themselves.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared.filter(|n| *n > super::MAX_BODY_BYTES as u64) {
            // Read a modest excess to the end before refusing (see `drain`).
            if n <= (super::MAX_BODY_BYTES as u64) + (1 << 20) {
                crate::images::drain(&mut req.into_body().into_data_stream(), n).await;
            }
            return Err(too_large());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::new(rej.status(), "bad_body", rej.body_text())
            }
        })?;
        decode(&bytes).map(ApiJson)
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "the request body is larger than {} bytes",
            super::MAX_BODY_BYTES
        ),
    )
}

/// Decodes a JSON document that must be one object, turning serde's error into one that
/// names the field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        // Valid JSON of another kind, or a syntax error: say which.
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return Err(syntax_error(&e));
        }
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object ({...})",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut *de);
    let err = match result {
        Ok(v) => {
            // Trailing data after the object is a syntax error, not something to ignore.
            return de.end().map(|()| v).map_err(|e| syntax_error(&e));
        }
        Err(e) => e,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    let message = without_position(&inner);
    use serde_json::error::Category;
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => Err(syntax_error(&inner)),
        Category::Data => {
            // "missing field `x`" is reported at the parent's path (and "unknown field `x`"
            // at its own); the field worth naming is the one in backticks.
            let named = backticked(&message).filter(|_| {
                message.starts_with("unknown field") || message.starts_with("missing field")
            });
            let field = match (path.as_str(), named) {
                (".", Some(n)) => n.to_string(),
                (p, Some(n)) if p != n && !p.ends_with(&format!(".{n}")) => format!("{p}.{n}"),
                (p, _) => p.to_string(),
            };
            let err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", message);
            Err(if field == "." {
                err
            } else {
                err.with_field(field)
            })
        }
    }
}

/// serde_json's message without its " at line L column C" suffix.
fn without_position(e: &serde_json::Error) -> String {
    let mut message = e.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    message
}

fn syntax_error(e: &serde_json::Error) -> ApiError {
    let message = without_position(e);
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_json",
        format!(
            "malformed JSON at line {} column {}: {message}",
            e.line(),
            e.column()
        ),
    )
}

fn backticked(s: &str) -> Option<&str> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(&s[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhyzome_api::InstanceSpec;

    fn err(body: &str) -> ApiError {
        decode::<InstanceSpec>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"name": "a", "kernel": "/k", "colour": 1}"#);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.field.as_deref(), Some("colour"));
        let e = err(r#"{"name": "a"}"#);
        assert_eq!(e.body.field.as_deref(), Some("kernel"));
        assert!(
            e.body.message.contains("missing field"),
            "{}",
            e.body.message
        );
        let e = err(r#"{"name": "a", "kernel": "/k", "memory_mib": "lots"}"#);
        assert_eq!(e.body.field.as_deref(), Some("memory_mib"));
        let e = err(r#"{"name": "a", "kernel": "/k", "network": {"mode": "bridge", "macc": "x"}}"#);
        assert_eq!(e.body.field.as_deref(), Some("network.macc"));
        let e = err(r#"{"name": "a", "kernel": "/k", "network": {"mode": "wifi"}}"#);
        assert_eq!(e.body.field.as_deref(), Some("network.mode"));
    }

    #[test]
    fn syntax_errors_give_a_position() {
        let e = err("{\"name\": \"a\",\n \"kernel\" \"/k\"}");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.code, "invalid_json");
        assert!(
            e.body.message.contains("line 2 column"),
            "{}",
            e.body.message
        );
        assert_eq!(err("").body.code, "invalid_json");
        assert_eq!(err("{\"name\": ").body.code, "invalid_json");
        assert_eq!(err("[1]").body.code, "invalid_json");
        let e = err(r#"{"name": "a", "kernel": "/k"} x"#);
        assert!(
            e.body.message.contains("trailing characters"),
            "{}",
            e.body.message
        );
    }
}
