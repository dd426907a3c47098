//! Authentication middleware and the audit log.
//!
//! Every request passes [`authenticate`]: it resolves the bearer token to a [`Caller`] (or the
//! anonymous administrator while no token exists, or the local administrator on the local
//! socket) and stores it in the request's extensions,
//! where handlers find it. Mutating requests are then written to the audit log (one JSON line
//! per request in `StateDir/audit.log`, and a `tracing` event with target `audit`) with who,
//! what and the outcome. The token store is consulted on every request, so a revoked token
//! stops working at once; the lookup is one indexed SQLite read. Beside the caller, the
//! middleware stores the [`Credential`] it was resolved from, so that open streams can be
//! re-checked later ([`super::streams`]).

use super::error::{ApiError, AuditDetail};
use super::local_socket::LocalPeer;
use super::streams::Credential;
use crate::auth::rate::RateLimiter;
use crate::auth::tokens::TokenStore;
use crate::auth::{AuthError, Caller};
use crate::service::authz::Action;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Everything the middleware needs, shared by all connections.
pub struct Authenticator {
    tokens: Option<TokenStore>,
    create_limit: RateLimiter,
    audit: Option<Mutex<std::fs::File>>,
}

impl Authenticator {
    /// Authentication off, no audit file: for tests of other parts.
    pub fn disabled() -> Arc<Authenticator> {
        Arc::new(Authenticator {
            tokens: None,
            create_limit: RateLimiter::new(1e9, u32::MAX),
            audit: None,
        })
    }

    pub fn new(
        tokens: TokenStore,
        creates_per_second: f64,
        create_burst: u32,
        audit_log: PathBuf,
    ) -> std::io::Result<Arc<Authenticator>> {
        // Owner-only (see crate::files): who did what, from where.
        crate::files::owner_only(&audit_log, true)?;
        let audit = std::fs::OpenOptions::new().append(true).open(audit_log)?;
        Ok(Arc::new(Authenticator {
            tokens: Some(tokens),
            create_limit: RateLimiter::new(creates_per_second, create_burst),
            audit: Some(Mutex::new(audit)),
        }))
    }

    /// Changes the create rate limit from the next request on (configuration reload).
    pub fn set_create_limit(&self, creates_per_second: f64, create_burst: u32) {
        self.create_limit
            .set_limits(creates_per_second, create_burst);
    }

    fn caller(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let Some(tokens) = &self.tokens else {
            return Ok(Caller::anonymous());
        };
        let presented = authorization.and_then(bearer_token);
        let internal = |e: crate::auth::tokens::TokenError| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        };
        match presented {
            Some(token) => match tokens.authenticate(token).map_err(internal)? {
                Some(caller) => Ok(caller),
                None => Err(AuthError::Invalid.into()),
            },
            None if tokens.any().map_err(internal)? => Err(AuthError::Missing.into()),
            None => Ok(Caller::anonymous()),
        }
    }

    /// Whether `authorization` (as presented earlier) still stands for the caller named
    /// `caller`: open streams are re-checked with it. A failing token store is no reason to
    /// cut streams, so it counts as yes.
    pub fn resolves_to(&self, authorization: Option<&str>, caller: &str) -> bool {
        match self.caller(authorization) {
            Ok(c) => c.name == caller,
            Err(e) if e.status.is_server_error() => {
                tracing::warn!(error = %e.body, "cannot re-check a stream's credential");
                true
            }
            Err(_) => false,
        }
    }

    fn audit(&self, entry: &serde_json::Value) {
        tracing::info!(target: "audit", "{entry}");
        if let Some(file) = &self.audit {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = writeln!(f, "{entry}") {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme name is case-insensitive
/// (RFC 9110, section 11.1).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Resolves the caller, applies the create rate limit, runs the request, audits it.
pub async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let local = req.extensions().get::<LocalPeer>().copied();
    let peer = match local {
        Some(p) => Some(p.describe()),
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string()),
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    // On the local socket a token is optional: presenting one narrows the caller to it.
    let resolved = match (local, authorization) {
        (Some(p), None) => Ok(Caller::local(p.uid)),
        _ => auth.caller(authorization),
    };
    let caller = match resolved {
        Ok(c) => c,
        Err(e) => {
            if mutating {
                auth.audit(&entry(None, peer.as_deref(), &method, &path, e.status));
            }
            return e.into_response();
        }
    };
    // The `metrics` role may read /metrics and nothing else; refused here, before any
    // handler, so that no endpoint is open to it by omission (the rule is authz.rs's).
    let audit_refusal = |e: &ApiError| {
        auth.audit(&entry(
            Some(&caller),
            peer.as_deref(),
            &method,
            &path,
            e.status,
        ))
    };
    let reads_metrics = matches!(method, Method::GET | Method::HEAD) && path == "/metrics";
    if !reads_metrics {
        if let Err(e) = crate::service::authz::authorize(&caller, Action::UseApi) {
            let e = ApiError::from(e);
            if mutating {
                audit_refusal(&e);
            }
            return e.into_response();
        }
    }
    // Whom rate limits and stream limits count against; anonymous callers are told apart by
    // address.
    let key = match &peer {
        Some(ip) if caller == Caller::anonymous() => format!("ip:{ip}"),
        _ => caller.name.clone(),
    };
    let is_create = method == Method::POST && (path == "/v1/instances" || path == "/v1/images");
    if is_create {
        if let Err(wait) = auth.create_limit.take(&key) {
            let e: ApiError = AuthError::RateLimited {
                caller: caller.name.clone(),
            }
            .into();
            audit_refusal(&e);
            // Whole seconds, rounded up: when a retry will succeed.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = e.into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.max(1).into());
            return response;
        }
    }
    let recheck = match (local, authorization) {
        (Some(_), None) => None,
        (_, presented) => Some(presented.map(str::to_string)),
    };
    req.extensions_mut().insert(Credential {
        key,
        caller: caller.name.clone(),
        recheck,
    });
    req.extensions_mut().insert(caller.clone());
    let response = next.run(req).await;
    if mutating {
        let mut line = entry(
            Some(&caller),
            peer.as_deref(),
            &method,
            &path,
            response.status(),
        );
        if let Some(AuditDetail(detail)) = response.extensions().get::<AuditDetail>() {
            line["detail"] = detail.as_str().into();
        }
        auth.audit(&line);
    }
    response
}

fn entry(
    caller: Option<&Caller>,
    peer: Option<&str>,
    method: &Method,
    path: &str,
    status: StatusCode,
) -> serde_json::Value {
    serde_json::json!({
        "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "caller": caller.map(|c| c.name.as_str()),
        "role": caller.map(|c| c.role.as_str()),
        "peer": peer,
        "method": method.as_str(),
        "path": path,
        "status": status.as_u16(),
        "outcome": if status.is_success() { "ok" } else { "refused" },
    })
}
