//! Start-up and shutdown: open the store, connect to libvirt, reconcile, then serve the API
//! while the reconciler runs in the background. SIGTERM or SIGINT stops serving; guests keep
//! running (they are libvirt's, and the next start adopts them) unless `StopGuestsOnShutdown`.
//! Under systemd it reports readiness once the listeners are bound and the start-up
//! reconciliation is done, feeds the watchdog, and reloads on SIGHUP (see [`crate::systemd`],
//! [`crate::reload`]).

use crate::auth::tokens::TokenStore;
use crate::backend::libvirt::LibvirtBackend;
use crate::backend::{BackendError, Hypervisor};
use crate::config::Config;
use crate::http::auth::Authenticator;
use crate::http::server::{Listeners, ServeOptions};
use crate::service::{Service, ServiceError};
use crate::store::{Store, StoreError};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot connect to libvirt: {0}")]
    Backend(#[from] BackendError),
    #[error("start-up reconciliation failed: {0}")]
    Recover(#[from] ServiceError),
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    LocalSocket(#[from] crate::http::local_socket::LocalSocketError),
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Tokens(#[from] crate::auth::tokens::TokenError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot handle SIGHUP: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot open the audit log: {0}")]
    Audit(#[source] std::io::Error),
    #[error(
        "refusing to listen on {bind} without TLS or tokens: anyone who can reach it could run \
         guests on this host. Create a token (rhyzomesrv token create --name admin --role admin), \
         configure TLSCert/TLSKey, bind to 127.0.0.1, or set \"Insecure\": true if you really mean it"
    )]
    Unsafe { bind: String },
}

/// Builds the service on real libvirt, as configured.
pub async fn build_service(config: Config) -> Result<Arc<Service>, DaemonError> {
    let store = Store::open(&config.state_dir)?;
    let uri = config.libvirt_uri.clone();
    let setting = config.domain_type;
    let (backend, domain_type) = tokio::task::spawn_blocking(move || {
        let backend = LibvirtBackend::connect(&uri)?;
        let domain_type = backend.domain_type(setting)?;
        Ok::<_, BackendError>((backend, domain_type))
    })
    .await
    .map_err(|e| BackendError::Other(e.to_string()))??;
    tracing::info!(uri = %backend.uri(), domain_type, "libvirt ready");
    // The other hosts: connected by `Service::connect_hosts`, and again after each loss.
    let connector: crate::service::hosts::Connector = Arc::new(
        move |host: &crate::config::HostConfig| {
            let backend = LibvirtBackend::connect(&host.uri)?;
            let domain_type = backend.domain_type(setting)?;
            tracing::info!(host = %host.name, uri = %host.public_uri(), domain_type, "host connected");
            Ok((
                Arc::new(backend) as Arc<dyn crate::backend::Hypervisor>,
                domain_type,
            ))
        },
    );
    Ok(Service::with_hosts(
        config,
        domain_type,
        store,
        Arc::new(backend),
        connector,
    ))
}

/// Runs the daemon until SIGTERM or SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), DaemonError> {
    // First of all: from here on a SIGTERM never kills the process outright; one that comes
    // during start-up waits for the start-up reconciliation, then stops the daemon cleanly.
    let shutdown = shutdown_signal().map_err(DaemonError::Signal)?;
    let open_files = crate::http::server::raise_open_file_limit();
    let max_connections = crate::http::server::connection_limit(open_files);
    let bind = config.bind.clone();
    let addr = config.bind_addr;
    let tokens = TokenStore::open(&config.state_dir)?;
    let has_tokens = tokens.any()?;
    if !addr.ip().is_loopback() && !has_tokens {
        if config.tls.is_none() && !config.insecure {
            return Err(DaemonError::Unsafe { bind });
        }
        tracing::warn!(%bind, "INSECURE: the API listens beyond loopback and no token exists; anyone who can reach it can run guests on this host");
    }
    if !addr.ip().is_loopback() && has_tokens && config.tls.is_none() {
        tracing::warn!(%bind, "tokens travel in clear text: configure TLSCert and TLSKey");
    }
    let tls = match &config.tls {
        Some(files) => Some(crate::tls::server_config(&files.cert, &files.key)?),
        None => None,
    };
    let auth = Authenticator::new(
        tokens,
        config.create_rate_limit,
        config.create_burst,
        config.state_dir.join("audit.log"),
    )
    .map_err(DaemonError::Audit)?;
    let header_timeout = config.header_timeout;
    // Listen before anything acts on guests: a second daemon on the same address or socket
    // must stop here, not after its start-up reconciliation has touched libvirt. Requests
    // that arrive meanwhile wait in the listen backlog.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { bind, source })?;
    let metrics_listener = match config.metrics_bind {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Bind {
                    bind: addr.to_string(),
                    source,
                })?,
        ),
        None => None,
    };
    let socket = config.socket.clone();
    let (local, _socket_file) = match socket.as_ref().map(crate::http::local_socket::bind) {
        Some(bound) => {
            let (listener, file) = bound?;
            (Some(listener), Some(file))
        }
        None => (None, None),
    };
    let service = build_service(config).await?;
    // Before the start-up pass, so that it adopts the guests of every host it can reach; an
    // unreachable host is reported here and retried by the host watch.
    service.connect_hosts().await;
    let host_watch = tokio::spawn(service.clone().run_host_watch());
    let report = service.recover().await?;
    tracing::info!(?report, "start-up reconciliation done");
    let reconciler = tokio::spawn(service.clone().run_reconciler());
    // Emulators outlive the daemon: the first pass adopts those that run, restarts the rest.
    let link_supervision = tokio::spawn(service.clone().run_link_supervision());
    let metrics_server = metrics_listener.map(|listener| {
        tracing::info!(address = ?listener.local_addr().ok(), "serving /metrics without a token (MetricsBind)");
        let router = crate::http::metrics::unauthenticated_router(service.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the MetricsBind listener failed");
            }
        })
    });
    tracing::info!(
        address = %listener.local_addr().map_err(DaemonError::Serve)?,
        tls = tls.is_some(),
        authentication = has_tokens,
        socket = ?socket.as_ref().map(|s| &s.path),
        open_files,
        max_connections,
        "serving the API"
    );
    let reload = match config_path {
        Some(path) => Some(
            crate::reload::watch_sighup(path, service.config().clone(), auth.clone())
                .map_err(DaemonError::Signal)?,
        ),
        None => None,
    };
    crate::systemd::notify_ready();
    let watchdog = crate::systemd::spawn_watchdog();
    crate::http::server::serve(
        Listeners {
            tcp: listener,
            local,
        },
        crate::http::router_with_auth(service.clone(), auth),
        ServeOptions {
            tls,
            header_timeout,
            max_connections,
        },
        shutdown,
    )
    .await;
    crate::systemd::notify_stopping();
    for task in [reload, watchdog, metrics_server].into_iter().flatten() {
        task.abort();
    }
    reconciler.abort();
    host_watch.abort();
    // Only the supervision stops: the emulators go on carrying traffic.
    link_supervision.abort();
    service.shutdown().await;
    if service.config().stop_guests_on_shutdown {
        tracing::info!("stopped, and stopped the guests");
    } else {
        tracing::info!("stopped; guests keep running");
    }
    Ok(())
}

/// SIGTERM and SIGINT, handled from the moment this returns: the handlers are installed here,
/// not when the future is first polled. The accept loop may serve connections before it polls
/// its shutdown future, and until a handler exists a SIGTERM kills the process outright (no
/// socket removal, no graceful stop).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
