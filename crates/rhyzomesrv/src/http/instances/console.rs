//! `GET /v1/instances/{name}/console`.

use crate::auth::Caller;
use crate::http::auth::visible;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use rhyzome_api::{ConsoleQuery, ErrorBody};
use std::convert::Infallible;
use std::time::Duration;

/// How often a follower looks for new output. The log is a plain file that QEMU (through
/// virtlogd) appends to; polling its size is cheap and works for any number of followers.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The serial console output recorded so far, as raw bytes; with `follow=true`, the response
/// stays open and streams new output until the instance is deleted or the client leaves.
#[utoipa::path(get, path = "/v1/instances/{name}/console", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "msgrouter"), ConsoleQuery),
    responses(
        (status = 200, description = "Console output", content_type = "text/plain", body = String),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
    ))]
pub async fn get_console(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    query: Result<Query<ConsoleQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    visible(&caller, &name)?;
    let Query(query) = query
        .map_err(|rej| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", rej.body_text()))?;
    let (bytes, end) = svc.console(&name, &query).await?;
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !query.follow.unwrap_or(false) {
        return Ok((headers, bytes).into_response());
    }
    let first = futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(bytes)) });
    let rest = futures_util::stream::unfold((svc, name, end), |(svc, name, offset)| async move {
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            match svc.console_after(&name, offset).await {
                Ok(Some((bytes, end))) if !bytes.is_empty() => {
                    return Some((Ok(Bytes::from(bytes)), (svc, name, end)));
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    });
    Ok((headers, Body::from_stream(first.chain(rest))).into_response())
}
