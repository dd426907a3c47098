//! The accept loop: plain TCP or TLS, and a local UNIX socket, HTTP/1.1 through hyper, with the timeouts a daemon
//! facing untrusted networks needs (TLS handshake and request headers must arrive in time),
//! the client address passed to handlers (audit log, rate limits), and a graceful shutdown
//! that gives open connections a few seconds before it drops them.
//!
//! The same router also serves the optional local socket ([`super::local_socket`]); there the
//! peer's credentials, not an address, go to the handlers.
//!
//! Each connection runs on its own tokio task, holding one of [`ServeOptions::max_connections`]
//! permits: at the limit the loop stops accepting (new connections wait in the kernel's
//! listen backlog) until one closes, so the daemon never runs out of file descriptors for
//! its own files. The limit is derived from the open-file limit at start-up
//! ([`connection_limit`]). Should `accept` fail anyway (out of descriptors), the loop backs
//! off up to a second and logs once per episode rather than spinning.

use super::local_socket::LocalPeer;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tower::ServiceExt;

pub struct ServeOptions {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub header_timeout: Duration,
    /// Most connections open at once, over TCP and the local socket together.
    pub max_connections: usize,
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit, and returns the
/// soft limit in effect afterwards. Each connection costs a descriptor, and the default
/// soft limit (often 1024) is far below what the hard limit allows.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = limit.rlim_cur,
                to = limit.rlim_max,
                "raised the open-file limit"
            );
            return limit.rlim_max;
        }
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, soft = limit.rlim_cur, hard = limit.rlim_max, "cannot raise the open-file limit");
    }
    limit.rlim_cur
}

/// How many connections to serve at once under an open-file limit of `open_files`: all but
/// a reserve (a quarter, at least 64 and at most 4096) that the daemon keeps for its
/// database, logs, kernels and libvirt; at least 16.
pub fn connection_limit(open_files: u64) -> usize {
    let reserve = (open_files / 4).clamp(64, 4096);
    let limit = open_files.saturating_sub(reserve).max(16);
    usize::try_from(limit).unwrap_or(usize::MAX).min(1 << 20)
}

/// Where the API listens: always TCP (HTTP or HTTPS), and optionally a local socket (plain
/// HTTP; the socket's permissions stand in for authentication).
pub struct Listeners {
    pub tcp: TcpListener,
    pub local: Option<UnixListener>,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning per this interval while the connection limit is reached.
const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Local(UnixStream),
}

pub async fn serve(
    listeners: Listeners,
    router: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let acceptor = opts.tls.map(tokio_rustls::TlsAcceptor::from);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout);
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let mut backoff: Option<Duration> = None;
    let mut limit_logged: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if limit_logged.is_none_or(|at| at.elapsed() > LIMIT_LOG_INTERVAL) {
                    limit_logged = Some(std::time::Instant::now());
                    tracing::warn!(
                        max = opts.max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                }
            }
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listeners.tcp.accept() => a.map(|(s, peer)| Accepted::Tcp(s, peer)),
            a = accept_local(listeners.local.as_ref()) => a.map(Accepted::Local),
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning, and say
                // so once per episode, not once per attempt.
                let pause = match backoff {
                    None => {
                        tracing::warn!(error = %e, "accept failed; backing off until it works again");
                        ACCEPT_BACKOFF
                    }
                    Some(previous) => {
                        tracing::debug!(error = %e, "accept failed");
                        (previous * 2).min(ACCEPT_BACKOFF_MAX)
                    }
                };
                backoff = Some(pause);
                drop(permit);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        if backoff.take().is_some() {
            tracing::info!("accepting connections again");
        }
        match accepted {
            Accepted::Local(stream) => {
                let Some(peer) = LocalPeer::of(&stream) else {
                    tracing::warn!("no peer credentials on a local connection; dropped");
                    continue;
                };
                let service = with_extension(&router, peer);
                let label = peer.describe();
                tokio::spawn(serve_connection(
                    http.clone(),
                    stream,
                    service,
                    (graceful.watcher(), permit),
                    label,
                ));
            }
            Accepted::Tcp(stream, peer) => {
                let service = with_extension(&router, ConnectInfo(peer));
                let http = http.clone();
                let watcher = graceful.watcher();
                let Some(acceptor) = acceptor.clone() else {
                    tokio::spawn(serve_connection(
                        http,
                        stream,
                        service,
                        (watcher, permit),
                        peer.to_string(),
                    ));
                    continue;
                };
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    serve_connection(http, tls, service, (watcher, permit), peer.to_string()).await;
                });
            }
        }
    }
    drop(listeners);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("dropping connections still open after {SHUTDOWN_GRACE:?}");
    }
}

async fn accept_local(listener: Option<&UnixListener>) -> std::io::Result<UnixStream> {
    match listener {
        Some(l) => l.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

/// The router, with what handlers and middleware learn about the peer added to each request.
fn with_extension<T: Clone + Send + Sync + 'static>(
    router: &Router,
    extension: T,
) -> TowerToHyperService<
    impl tower::Service<
            hyper::Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
> {
    let router = router.clone();
    TowerToHyperService::new(tower::service_fn(
        move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(extension.clone());
            router.clone().oneshot(req)
        },
    ))
}

async fn serve_connection<IO, S>(
    http: hyper::server::conn::http1::Builder,
    io: IO,
    service: S,
    (watcher, _permit): (Watcher, tokio::sync::OwnedSemaphorePermit),
    peer: String,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = http.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_descriptors_for_the_daemon() {
        assert_eq!(connection_limit(128), 64);
        assert_eq!(connection_limit(1024), 768);
        assert_eq!(connection_limit(1 << 20), (1 << 20) - 4096);
        assert_eq!(connection_limit(20), 16, "a floor, even under a tiny limit");
        assert_eq!(connection_limit(u64::MAX), 1 << 20);
    }
}
