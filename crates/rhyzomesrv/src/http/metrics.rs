//! `GET /metrics`, Prometheus's conventional path, and the middleware that times every API
//! request for `rhyzome_http_request_duration_seconds`.

use super::error::ApiError;
use super::AppState;
use crate::auth::Caller;
use crate::metrics::Metrics;
use axum::extract::{MatchedPath, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use std::sync::Arc;

/// Prometheus metrics of this node and its guests.
///
/// In the Prometheus text format: this daemon's instances, their domains'
/// CPU, memory, network and disk counters (named as the libvirt exporters name them), and
/// the daemon's own request, reconcile and process figures. Any token without a name prefix
/// may read them, including one with the `metrics` role, which may read nothing else.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses(
        (status = 200, description = "Prometheus text exposition (format 0.0.4)",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, description = "No or invalid token", body = rhyzome_api::ErrorBody),
        (status = 403, description = "The token is limited to a name prefix", body = rhyzome_api::ErrorBody),
    ))]
pub async fn get_metrics(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<impl IntoResponse, ApiError> {
    let text = svc.scrape(&caller).await?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text))
}

/// The router of `MetricsBind`: `GET /metrics` alone, without authentication (the address is
/// loopback, checked by the configuration), as a caller with the `metrics` role, so that
/// nothing else could be reached through it even if a route were added by mistake.
pub fn unauthenticated_router(service: AppState) -> axum::Router {
    let caller = Caller {
        // Not a token's name: those have no ':'.
        name: "listener:MetricsBind".into(),
        role: crate::auth::Role::Metrics,
        prefix: None,
        quota: Default::default(),
    };
    axum::Router::new()
        .route("/metrics", axum::routing::get(get_metrics))
        .layer(Extension(caller))
        .with_state(service)
}

/// Times a request to its response head and records it under its route template; requests
/// that matched no route share the route `unmatched`, so that arbitrary paths cannot make
/// new series.
pub async fn record_request(
    State(metrics): State<Arc<Metrics>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    metrics.observe_http(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
