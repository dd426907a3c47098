//! The service: what the API does, independent of HTTP. This file is the shared core (the
//! [`Service`] struct over store, backend, event log and locks; errors; the blocking and time
//! helpers); each noun has its own file: [`instances`] (create, get, list, delete, start,
//! stop, restart, garbage collection), [`boot_plan`] (kernel or image, devices, NICs, the
//! domain definition), [`images`], [`console`], [`stats`] and [`testbeds`] (test beds applied
//! from a file and converged by a driver task per bed).
//!
//! Every mutation is first written to the [`Store`] (desired state), then carried out on the
//! [`Hypervisor`], then the observed outcome is recorded. If the daemon dies in between, the
//! reconciler ([`reconcile`]) finishes or undoes the work on the next start.
//!
//! Concurrency: the service is shared (`Arc`) by all request handlers and the reconciler.
//! Operations on one instance are serialised by a per-name async lock ([`locks::NameLocks`]);
//! different instances proceed in parallel. Blocking work (libvirt calls, file copies) runs
//! on tokio's blocking pool. Kernel imports and blob garbage collection exclude each other
//! through the [`BlobStore`]'s lock (imports and creates hold a pin, collection an exclusive
//! guard), so a collection never removes a blob a create is about to reference;
//! a create refused after its kernel was copied runs a collection before it answers, so a
//! refusal leaves no blob behind.
//! Every state change is numbered and kept in a bounded log ([`Service::events`]) for
//! `GET /v1/events`; lifecycle notices from the hypervisor and due restarts wake the
//! reconciler through an unbounded channel.

pub mod addresses;
pub mod authz;
pub mod boot_plan;
pub mod console;
pub mod event_log;
pub mod failover;
pub mod host_files;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod links;
pub mod locks;
pub mod metrics;
pub mod network_hosts;
pub mod networks;
pub mod ownership;
pub mod probes;
pub mod reconcile;
pub mod restart;
pub mod scheduler;
pub mod stats;
pub mod testbed_collect;
pub mod testbeds;
pub mod volumes;

pub use boot_plan::mac_for_name;

use crate::auth::Caller;
use crate::backend::{BackendError, Hypervisor, Notice};
use crate::blobs::BlobStore;
use crate::config::Config;
use crate::kernels::{KernelError, KernelStore};
use crate::store::{InstanceRecord, Observed, Store, StoreError};
use authz::{authorize, Action};
use rhyzome_api::validate::FieldError;
use rhyzome_api::{Event, InstanceState, ServerInfo};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("instance {0:?} not found")]
    NotFound(String),
    #[error("network {0:?} not found")]
    NetworkNotFound(String),
    #[error("test bed {0:?} not found")]
    TestbedNotFound(String),
    #[error("host {0:?} not found")]
    HostNotFound(String),
    #[error("{message}")]
    Conflict {
        field: Option<&'static str>,
        message: String,
    },
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
    /// A kernel path a non-admin may not learn about (outside `KernelDirs`, missing or
    /// unreadable); the detail is for the audit log only.
    #[error("kernel: {0}")]
    KernelPathRefused(KernelError),
    #[error(transparent)]
    Backend(BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    #[error(transparent)]
    Volume(#[from] volumes::VolumeError),
    #[error("internal error: {0}")]
    Internal(String),
}

pub struct Service {
    config: Config,
    domain_type: &'static str,
    /// This daemon's identity, from its store; it marks every domain the daemon creates.
    daemon_id: String,
    store: Store,
    /// The primary host's backend: managed networks, volumes and emulators live there.
    backend: Arc<dyn Hypervisor>,
    /// Every host, the primary first ([`hosts`]).
    hosts: Arc<hosts::HostRegistry>,
    /// Placement decisions not yet written as records ([`scheduler`]).
    reservations: scheduler::Reservations,
    /// Held while the scheduler reads the figures and reserves its choice.
    placing: std::sync::Mutex<()>,
    kernels: Arc<KernelStore>,
    images: Arc<crate::images::ImageFiles>,
    locks: locks::NameLocks,
    /// `StateDir/blobs`, shared with `kernels` and `images`.
    blobs: Arc<BlobStore>,
    events: event_log::EventLog,
    /// The serialised full listing and the store generation it was made at: a test bed polls
    /// `GET /v1/instances` often, and between writes the answer does not change.
    list_cache: std::sync::Mutex<Option<(u64, bytes::Bytes)>>,
    /// Console growth history per instance id, for `since` (see [`crate::console::SizeIndex`]).
    console_index: std::sync::Mutex<std::collections::HashMap<String, crate::console::SizeIndex>>,
    /// The Solo5 manifest of each kernel blob (`None`: it has none), by SHA-256, for the
    /// `devices` of an instance.
    manifests:
        std::sync::Mutex<std::collections::HashMap<String, Option<rhyzome_api::Solo5Manifest>>>,
    wake: tokio::sync::mpsc::UnboundedSender<()>,
    /// The daemon's own destroys, to tell them from someone else's (see [`ownership`]).
    destroys: Arc<ownership::Destroys>,
    /// Domains no instance claims that a pass has already looked at and left alone (another
    /// daemon's, an older release's, another tool's): UUIDs are never reused, so they need
    /// not be looked at (nor logged) again.
    left_alone: std::sync::Mutex<std::collections::HashSet<String>>,
    wake_rx: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<()>>>,
    /// Counted as things happen; read by `GET /metrics` ([`metrics`]).
    metrics: Arc<crate::metrics::Metrics>,
    /// The last bulk statistics call, kept fresh while scrapes come ([`metrics`]).
    counter_cache: Arc<metrics::CounterCache>,
    /// The link emulators of emulated networks, under `StateDir/emulators` ([`links`]).
    emulators: Arc<rhyzome_linkemu::supervise::Supervisor>,
    /// The name of the storage pool volumes live in, once it was made or found.
    volume_pool: tokio::sync::OnceCell<String>,
    /// Test beds a driver task is converging (see [`testbeds`]), so there is one per bed.
    testbed_drivers: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Runs blocking work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms_to_rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// How long ago an RFC 3339 time was (zero if unparsable or in the future).
fn elapsed_since(rfc3339: Option<&str>) -> std::time::Duration {
    rfc3339
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

impl Service {
    /// A service on one host, or on the configured hosts where those other than the primary
    /// are connected later by [`Service::connect_hosts`] (which fails for them: use
    /// [`Service::with_hosts`]).
    pub fn new(
        config: Config,
        domain_type: &'static str,
        store: Store,
        backend: Arc<dyn Hypervisor>,
    ) -> Arc<Service> {
        let connector: hosts::Connector = Arc::new(|h: &crate::config::HostConfig| {
            Err(BackendError::Unavailable(format!(
                "no way to connect to host {:?}",
                h.name
            )))
        });
        Service::with_hosts(config, domain_type, store, backend, connector)
    }

    /// A service on the configured hosts: `backend` is the primary's (connected), and
    /// `connector` connects the others.
    pub fn with_hosts(
        config: Config,
        domain_type: &'static str,
        store: Store,
        backend: Arc<dyn Hypervisor>,
        connector: hosts::Connector,
    ) -> Arc<Service> {
        let blobs = Arc::new(BlobStore::new(config.state_dir.join("blobs")));
        let kernels = Arc::new(KernelStore::new(config.kernel_dirs.clone(), blobs.clone()));
        let images = Arc::new(crate::images::ImageFiles::new(
            &config.state_dir,
            blobs.clone(),
            config.max_image_bytes,
        ));
        images.clean_uploads();
        let (wake, wake_rx) = tokio::sync::mpsc::unbounded_channel();
        let sink_wake = wake.clone();
        let destroys = Arc::new(ownership::Destroys::default());
        let sink_destroys = destroys.clone();
        let sink: crate::backend::NoticeSink = Arc::new(move |notice: Notice| {
            tracing::debug!(?notice, "hypervisor notice");
            if let Notice::Lifecycle {
                uuid,
                event,
                detail,
            } = &notice
            {
                if event == "stopped" && detail == "destroyed" {
                    sink_destroys.destroyed(uuid);
                }
            }
            let _ = sink_wake.send(());
        });
        let hosts = Arc::new(hosts::HostRegistry::new(
            &config.hosts,
            backend.clone(),
            domain_type,
            connector,
        ));
        hosts.set_sink(sink.clone());
        if let Err(e) = backend.watch(sink) {
            tracing::warn!(error = %e, "no lifecycle events from the hypervisor; relying on polling");
        }
        let daemon_id = store.daemon_id().to_string();
        tracing::info!(daemon = %daemon_id, hostname = %config.hostname, "daemon identity");
        let emulators = Arc::new(rhyzome_linkemu::supervise::Supervisor::new(
            config.state_dir.join("emulators"),
            config.link_emulator.clone(),
            config.link_emulator_netns.clone(),
        ));
        let counter_cache = Arc::new(metrics::CounterCache::new(config.metrics_max_age));
        Arc::new(Service {
            emulators,
            config,
            domain_type,
            daemon_id,
            store,
            backend,
            hosts,
            reservations: Default::default(),
            placing: Default::default(),
            kernels,
            images,
            locks: locks::NameLocks::default(),
            blobs,
            events: event_log::EventLog::default(),
            list_cache: std::sync::Mutex::new(None),
            console_index: Default::default(),
            manifests: Default::default(),
            wake,
            destroys,
            left_alone: Default::default(),
            wake_rx: std::sync::Mutex::new(Some(wake_rx)),
            metrics: Default::default(),
            counter_cache,
            volume_pool: tokio::sync::OnceCell::new(),
            testbed_drivers: Default::default(),
        })
    }

    /// The recent state changes, and the way to wait for the next.
    pub fn events(&self) -> &event_log::EventLog {
        &self.events
    }

    /// The next item of `cursor` that `caller` may see: events of instances outside its
    /// prefix are skipped.
    pub async fn next_event(
        &self,
        caller: &Caller,
        cursor: &mut event_log::Cursor,
    ) -> event_log::Item {
        loop {
            match self.events.next(cursor).await {
                event_log::Item::Event { event, .. }
                    if authorize(caller, Action::ReadInstance(&event.instance)).is_err() =>
                {
                    continue
                }
                item => return item,
            }
        }
    }

    fn publish(
        &self,
        r: &InstanceRecord,
        state: &str,
        exit_code: Option<i32>,
        reason: Option<String>,
    ) {
        self.metrics.state_changed(state);
        self.events.publish(Event {
            time: now_rfc3339(),
            instance: r.name.clone(),
            state: state.to_string(),
            exit_code,
            reason,
            restart_count: r.restart_count,
        });
    }

    /// Records an observed state and announces it.
    fn observe(
        &self,
        r: &InstanceRecord,
        state: InstanceState,
        exit_code: Option<i32>,
        last_error: Option<String>,
    ) -> Result<(), ServiceError> {
        self.store.set_observed(
            &r.id,
            &Observed {
                state,
                exit_code,
                last_error: last_error.clone(),
            },
            &now_rfc3339(),
        )?;
        self.publish(r, state.as_str(), exit_code, last_error);
        Ok(())
    }

    fn backoff(&self) -> restart::Backoff {
        restart::Backoff {
            initial: self.config.restart_backoff,
            max: self.config.restart_backoff_max,
            stable_after: self.config.restart_stable,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What this daemon is, and who `caller` is to it.
    pub fn info(&self, caller: &Caller) -> ServerInfo {
        ServerInfo {
            hostname: self.config.hostname.clone(),
            daemon_id: self.daemon_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            domain_type: self.domain_type.to_string(),
            libvirt_uri: self.backend.uri(),
            default_bridge: self.config.bridge_interface.clone(),
            caller: Some(rhyzome_api::CallerInfo {
                name: caller.name.clone(),
                role: caller.role.as_str().to_string(),
                prefix: caller.prefix.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod hosts_tests;
#[cfg(test)]
mod network_tests;
#[cfg(test)]
mod ownership_tests;
#[cfg(test)]
mod tests;
