//! `GET /v1/events`: instance state changes as server-sent events.

use super::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
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
    ))]
pub async fn get_events(
    State(svc): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(query) = query
        .map_err(|rej| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", rej.body_text()))?;
    let rx = svc.subscribe();
    let stream =
        futures_util::stream::unfold((rx, query.instance), |(mut rx, filter)| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if filter.as_ref().is_some_and(|f| *f != ev.instance) {
                            continue;
                        }
                        let sse = SseEvent::default()
                            .event("instance")
                            .json_data(&ev)
                            .unwrap_or_else(|_| SseEvent::default().event("error"));
                        return Some((Ok(sse), (rx, filter)));
                    }
                    Err(RecvError::Lagged(n)) => {
                        let sse = SseEvent::default().event("lagged").data(n.to_string());
                        return Some((Ok(sse), (rx, filter)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
