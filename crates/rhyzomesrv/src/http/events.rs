//! `GET /v1/events`: instance state changes as server-sent events.

use super::AppState;
use crate::auth::Caller;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Extension;
use futures_util::Stream;
use rhyzome_api::ErrorBody;
use serde::Deserialize;
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

use super::error::ApiError;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events of this instance.
    pub instance: Option<String>,
}

/// Stream state changes (`text/event-stream`): each `instance` event's data is an `Event`
/// as JSON. Events are not stored: the stream starts with the next change. A client too slow
/// to keep up gets a `lagged` event with the number of events it missed.
#[utoipa::path(get, path = "/v1/events", tag = "instances",
    params(EventsQuery),
    responses(
        (status = 200, description = "Server-sent events whose data is an Event", content_type = "text/event-stream", body = rhyzome_api::Event),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    ))]
pub async fn get_events(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query
        .map_err(|rej| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", rej.body_text()))?;
    let rx = svc.subscribe();
    let state = (rx, query.instance, caller);
    let stream = futures_util::stream::unfold(state, |(mut rx, filter, caller)| async move {
        loop {
            let sse = match rx.recv().await {
                Ok(ev) => {
                    let wanted = filter.as_ref().is_none_or(|f| *f == ev.instance);
                    if !wanted || !caller.sees(&ev.instance) {
                        continue;
                    }
                    SseEvent::default()
                        .event("instance")
                        .json_data(&ev)
                        .unwrap_or_else(|_| SseEvent::default().event("error"))
                }
                Err(RecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(sse), (rx, filter, caller)));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
