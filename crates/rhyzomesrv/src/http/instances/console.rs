//! `GET /v1/instances/{name}/console`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::query::ApiQuery;
use crate::http::streams::{Credential, Streams};
use crate::http::AppState;
use crate::service::authz::Action;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use rhyzome_api::{ConsoleQuery, ErrorBody};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Response header: the log offset of the body's first byte. That plus the bytes received is
/// the `after` to go on from.
pub const CONSOLE_OFFSET: HeaderName = HeaderName::from_static("console-offset");

/// How often a follower looks for new output. The log is a plain file that QEMU (through
/// virtlogd) appends to; polling its size is cheap and works for any number of followers.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The serial console output recorded so far, as raw bytes; with `follow=true`, the response
/// stays open and streams new output until the instance is deleted or the client leaves. A
/// followed console counts as one of the caller's `MaxStreamsPerCaller` streams; the server
/// ends it after `MaxStreamSeconds`, and at once when the caller's token is revoked (a
/// client that wants more reconnects with `after`: `Console-Offset` plus the bytes received).
#[utoipa::path(get, path = "/v1/instances/{name}/console", tag = "instances",
    params(("name" = String, Path, description = "Instance name", example = "msgrouter"), ConsoleQuery),
    responses(
        (status = 200, description = "Console output", content_type = "text/plain", body = String,
            headers(("Console-Offset" = u64, description = "Log offset of the body's first byte; plus the bytes received, it is the `after` to go on from"))),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
        (status = 422, description = "`since` is neither an RFC 3339 time nor a duration back from now", body = ErrorBody),
        (status = 429, description = "With follow=true: the caller already holds MaxStreamsPerCaller open streams", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn get_console(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(streams): Extension<Arc<Streams>>,
    Extension(credential): Extension<Credential>,
    Path(name): Path<String>,
    // Decoded after the visibility check, so that a hidden instance stays hidden.
    query: Result<ApiQuery<ConsoleQuery>, ApiError>,
) -> Result<Response, Response> {
    // Before the query and the stream slot: an instance the caller may not read is not
    // found, whatever else is wrong with the request.
    svc.authorize(&caller, Action::ReadInstance(&name))
        .map_err(|e| ApiError::from(e).into_response())?;
    let ApiQuery(query) = query.map_err(IntoResponse::into_response)?;
    let follow = query.follow.unwrap_or(false);
    // Admitted before the log is read, so that a refused follower costs nothing.
    let guard = if follow {
        Some(
            streams
                .admit(&credential)
                .map_err(IntoResponse::into_response)?,
        )
    } else {
        None
    };
    let (bytes, end) = svc
        .console(&caller, &name, &query)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let body_offset = end - bytes.len() as u64;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        ),
        (CONSOLE_OFFSET, HeaderValue::from(body_offset)),
    ];
    let Some(guard) = guard else {
        return Ok((headers, bytes).into_response());
    };
    let first = futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(bytes)) });
    let state = (svc, caller, name, end);
    let rest = futures_util::stream::unfold(state, |(svc, caller, name, offset)| async move {
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            match svc.console_after(&caller, &name, offset).await {
                Ok(Some((bytes, end))) if !bytes.is_empty() => {
                    return Some((Ok(Bytes::from(bytes)), (svc, caller, name, end)));
                }
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    });
    let body = Body::from_stream(guard.bound(first.chain(rest)));
    Ok((headers, body).into_response())
}
