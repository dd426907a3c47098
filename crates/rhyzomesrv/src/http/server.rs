//! The accept loop: plain TCP or TLS, and a local UNIX socket, HTTP/1.1 through hyper, with the timeouts a daemon
//! facing untrusted networks needs (TLS handshake and request headers must arrive in time),
//! the client address passed to handlers (audit log, rate limits), and a graceful shutdown
//! that gives open connections a few seconds before it drops them.
//!
//! The same router also serves the optional local socket ([`super::local_socket`]); there the
//! peer's credentials, not an address, go to the handlers.
//!
//! Each connection runs on its own tokio task.

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
}

/// Where the API listens: always TCP (HTTP or HTTPS), and optionally a local socket (plain
/// HTTP; the socket's permissions stand in for authentication).
pub struct Listeners {
    pub tcp: TcpListener,
    pub local: Option<UnixListener>,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
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
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listeners.tcp.accept() => a.map(|(s, peer)| Accepted::Tcp(s, peer)),
            a = accept_local(listeners.local.as_ref()) => a.map(Accepted::Local),
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
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
                    graceful.watcher(),
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
                        watcher,
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
                    serve_connection(http, tls, service, watcher, peer.to_string()).await;
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
    watcher: Watcher,
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
