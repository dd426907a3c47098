//! `GET /v1/events`: instance state changes as server-sent events, resumable with
//! `Last-Event-ID` from the service's event log ([`crate::service::event_log`]).

use super::streams::{Credential, Streams};
use super::AppState;
use crate::auth::Caller;
use crate::service::event_log::{Cursor, Item};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rhyzome_api::ErrorBody;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;

use super::error::ApiError;
use super::query::ApiQuery;

/// The request header a reconnecting client names its last event with.
pub const LAST_EVENT_ID: &str = "Last-Event-ID";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events of this instance.
    pub instance: Option<String>,
}

/// Stream state changes (`text/event-stream`): each `instance` event's data is an `Event` as
/// JSON, and its `id` names it. The server keeps the last 1024 events: a client that
/// reconnects with `Last-Event-ID` first gets the events it missed. When some were lost
/// (the client fell further behind, or resumed from an id older than what is kept), a
/// `lagged` event's data is how many; when the id is not from this run of the daemon, a
/// `reset` event says so and the stream goes on from the next change. The server ends every
/// stream after `MaxStreamSeconds`, and at once when the caller's token is revoked; a
/// client reconnects with `Last-Event-ID` and loses nothing.
#[utoipa::path(get, path = "/v1/events", tag = "instances",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (the `id` of the last event received)", example = "1764547200000-42"),
    ),
    responses(
        (status = 200, description = "Server-sent events whose data is an Event", content_type = "text/event-stream", body = rhyzome_api::Event),
        (status = 400, description = "Bad query or Last-Event-ID", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 429, description = "The caller already holds MaxStreamsPerCaller open streams", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub async fn get_events(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Extension(streams): Extension<Arc<Streams>>,
    Extension(credential): Extension<Credential>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, Response> {
    let bad_id = |message: String| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_header", message)
            .with_field(LAST_EVENT_ID)
            .into_response()
    };
    let last_event_id = match headers.get(LAST_EVENT_ID) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| bad_id("Last-Event-ID must be ASCII".into()))?,
        ),
        None => None,
    };
    let cursor = svc
        .events()
        .cursor(last_event_id)
        .map_err(|e| bad_id(e.to_string()))?;
    let guard = streams
        .admit(&credential)
        .map_err(IntoResponse::into_response)?;
    let state = (svc, cursor, query.instance, caller);
    let stream =
        futures_util::stream::unfold(state, |(svc, mut cursor, filter, caller)| async move {
            let sse = next_event(&svc, &mut cursor, filter.as_deref(), &caller).await;
            Some((Ok::<_, Infallible>(sse), (svc, cursor, filter, caller)))
        });
    Ok(Sse::new(guard.bound(stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The next event this caller sees, as server-sent.
async fn next_event(
    svc: &AppState,
    cursor: &mut Cursor,
    filter: Option<&str>,
    caller: &Caller,
) -> SseEvent {
    loop {
        return match svc.next_event(caller, cursor).await {
            Item::Event { id, event } => {
                if filter.is_some_and(|f| f != event.instance) {
                    continue;
                }
                SseEvent::default()
                    .event("instance")
                    .id(id)
                    .json_data(&event)
                    .unwrap_or_else(|_| SseEvent::default().event("error"))
            }
            Item::Lagged(lost) => SseEvent::default().event("lagged").data(lost.to_string()),
            Item::Reset => SseEvent::default().event("reset").data(
                "Last-Event-ID is not from this run of the daemon: events may have been missed; \
                 re-read the state and go on from here",
            ),
        };
    }
}
