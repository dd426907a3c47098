//! Long-lived responses (`GET /v1/events`, `GET /v1/instances/{name}/console?follow=true`):
//! how many one caller may hold open, how long each may live, and ending them when their
//! credential stops being valid.
//!
//! A stream is admitted with [`Streams::admit`], which counts it against its caller
//! (`MaxStreamsPerCaller`; beyond it the answer is 429) and returns a [`StreamGuard`]. The
//! guard wraps the response body: the body ends at `MaxStreamSeconds` (the client reconnects;
//! events resume with `Last-Event-ID`) or as soon as the caller's token is revoked, and the
//! guard gives its slot back when the body is dropped, however the stream ended.
//!
//! Revocation: requests look the token up in the token store, so a revoked token fails at
//! once; open streams have no next request, so a watcher task re-checks the credentials of
//! all open streams every [`RECHECK`] (one lookup per distinct credential, not per stream)
//! and ends the streams whose credential no longer resolves to the same caller. The token
//! store may be changed by another process (`rhyzomesrv token revoke`); re-reading it is what
//! notices.
//!
//! Concurrency: one mutex guards the counts and the table of open streams, held for map
//! updates only; the watcher copies the table out before it touches the token store.

use super::auth::Authenticator;
use super::error::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How often open streams' credentials are re-checked: a revocation ends them within this.
pub const RECHECK: Duration = Duration::from_millis(250);

/// What a refused stream is told to wait before it retries.
const RETRY_AFTER_SECONDS: u64 = 5;

/// Who opened a stream, as the authentication middleware resolved it.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Whom the stream counts against: the token's name, `local:uid=N`, or `ip:ADDRESS` for
    /// the anonymous administrator (one per client address).
    pub key: String,
    /// The caller's name, which a re-check must resolve to again.
    pub caller: String,
    /// How to re-check: `None` for a local-socket caller without a token, whose socket
    /// permissions admitted it and cannot be revoked; otherwise the `Authorization` header as
    /// presented (absent for the anonymous administrator, who loses its streams when the
    /// first token turns authentication on).
    pub recheck: Option<Option<String>>,
}

pub struct Streams {
    auth: Arc<Authenticator>,
    max_per_caller: usize,
    max_lifetime: Duration,
    state: Mutex<State>,
    watching: AtomicBool,
}

#[derive(Default)]
struct State {
    per_caller: HashMap<String, usize>,
    open: HashMap<u64, Open>,
    next_id: u64,
}

struct Open {
    credential: Credential,
    end: Arc<Notify>,
}

/// The refusal of a stream beyond `MaxStreamsPerCaller`: 429.
#[derive(Debug)]
pub struct TooManyStreams {
    key: String,
    max: usize,
}

impl IntoResponse for TooManyStreams {
    fn into_response(self) -> Response {
        tracing::info!(caller = %self.key, max = self.max, "stream refused: too many open");
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "{} already holds {} open streams (MaxStreamsPerCaller); close one or retry later",
                self.key, self.max
            ),
        )
        .into_response();
        let headers = response.headers_mut();
        headers.insert(header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
        // Free the connection too: a caller at its limit should not also hold idle sockets.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// One admitted stream; dropping it gives the slot back.
pub struct StreamGuard {
    streams: Arc<Streams>,
    id: u64,
    key: String,
    end: Arc<Notify>,
}

impl Streams {
    pub fn new(
        auth: Arc<Authenticator>,
        max_per_caller: usize,
        max_lifetime: Duration,
    ) -> Arc<Streams> {
        Arc::new(Streams {
            auth,
            max_per_caller,
            max_lifetime,
            state: Mutex::new(State::default()),
            watching: AtomicBool::new(false),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a stream for `credential`, or answers 429 when its caller holds the maximum.
    pub fn admit(self: &Arc<Self>, credential: &Credential) -> Result<StreamGuard, TooManyStreams> {
        let end = Arc::new(Notify::new());
        let id = {
            let mut state = self.state();
            let count = state.per_caller.entry(credential.key.clone()).or_default();
            if *count >= self.max_per_caller {
                return Err(TooManyStreams {
                    key: credential.key.clone(),
                    max: self.max_per_caller,
                });
            }
            *count += 1;
            state.next_id += 1;
            let id = state.next_id;
            state.open.insert(
                id,
                Open {
                    credential: credential.clone(),
                    end: end.clone(),
                },
            );
            id
        };
        if credential.recheck.is_some() && !self.watching.swap(true, Ordering::SeqCst) {
            tokio::spawn(watch_revocations(Arc::downgrade(self)));
        }
        Ok(StreamGuard {
            streams: self.clone(),
            id,
            key: credential.key.clone(),
            end,
        })
    }

    /// Ends the open streams whose credential no longer stands for the same caller.
    fn recheck(&self) {
        let credentials: Vec<(Option<String>, String)> = {
            let state = self.state();
            let mut distinct: Vec<_> = state
                .open
                .values()
                .filter_map(|o| {
                    let presented = o.credential.recheck.clone()?;
                    Some((presented, o.credential.caller.clone()))
                })
                .collect();
            distinct.sort();
            distinct.dedup();
            distinct
        };
        for (presented, caller) in credentials {
            if self.auth.resolves_to(presented.as_deref(), &caller) {
                continue;
            }
            tracing::info!(%caller, "credential no longer valid; ending its open streams");
            let state = self.state();
            for open in state.open.values() {
                let c = &open.credential;
                if c.caller == caller && c.recheck.as_ref() == Some(&presented) {
                    open.end.notify_one();
                }
            }
        }
    }
}

async fn watch_revocations(streams: Weak<Streams>) {
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(streams) = streams.upgrade() else {
            return;
        };
        streams.recheck();
    }
}

impl StreamGuard {
    /// `body`, ended at the maximum lifetime or when the credential is revoked; the guard
    /// lives as long as the body.
    pub fn bound<S: Stream + Send + 'static>(self, body: S) -> impl Stream<Item = S::Item> + Send {
        let lifetime = self.streams.max_lifetime;
        let end = self.end.clone();
        let ended = async move {
            tokio::select! {
                _ = tokio::time::sleep(lifetime) => {}
                _ = end.notified() => {}
            }
        };
        body.take_until(Box::pin(ended)).map(move |item| {
            // Moved in, so that the slot is held until the body is dropped.
            let _held = &self;
            item
        })
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut state = self.streams.state();
        state.open.remove(&self.id);
        if let Some(count) = state.per_caller.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                state.per_caller.remove(&self.key);
            }
        }
    }
}
