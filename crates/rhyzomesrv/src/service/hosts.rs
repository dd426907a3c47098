//! The libvirt hosts the daemon drives, one backend connection each ([`HostRegistry`]), and
//! their reachability.
//!
//! A host is reachable until a call says otherwise: the reconciler's listing (or any call)
//! that fails with `BackendError::Unavailable` marks it unreachable, and from then on calls
//! for it fail at once, without waiting on a dead TCP connection, while the watcher
//! ([`Service::run_host_watch`]) retries with back-off (1 s doubling to 60 s). The first
//! answer marks it reachable again and wakes the reconciler, which adopts its domains as after
//! a daemon restart. Each transition is logged and published as an event `host:NAME`.
//!
//! Concurrency: the registry is shared (`Arc`) and its per-host state sits behind short
//! `std::sync::Mutex`es that are never held across an await or a libvirt call. Each host's
//! check (facts, reconnection) runs on a thread of its own, at most one per host at a time,
//! so a host whose packets vanish delays only itself.

use super::authz::{authorize, Action};
use super::{blocking, now_rfc3339, Service, ServiceError};
use crate::auth::Caller;
use crate::backend::{BackendError, Hypervisor, NodeInfo, NoticeSink};
use crate::config::HostConfig;
use rhyzome_api::Event;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// First delay before a reconnection attempt, and its cap.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Seconds between two refreshes of a reachable host's facts (free memory for the scheduler).
const FACTS_EVERY: u64 = 5;

/// Connects to a host: returns its backend and the domain type its guests get. The daemon
/// uses libvirt; unit tests hand in fakes.
pub type Connector = Arc<
    dyn Fn(&HostConfig) -> Result<(Arc<dyn Hypervisor>, &'static str), BackendError> + Send + Sync,
>;

/// One host: its configuration, connection and what is known of it.
pub struct Host {
    pub config: HostConfig,
    state: Mutex<HostState>,
    /// A check of this host runs (see [`HostRegistry::check`]).
    checking: std::sync::atomic::AtomicBool,
}

struct HostState {
    backend: Option<Arc<dyn Hypervisor>>,
    domain_type: Option<&'static str>,
    reachable: bool,
    error: Option<String>,
    unreachable_since: Option<SystemTime>,
    /// When the next reconnection attempt is due, while unreachable.
    next_try: Instant,
    retry_delay: Duration,
    facts: Option<NodeInfo>,
}

/// A change of a host's reachability, to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostChange {
    Unreachable { host: String, error: String },
    Reachable { host: String },
}

impl Host {
    fn lock(&self) -> std::sync::MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its backend, unless it is unreachable (then at once an `Unavailable` error naming it).
    pub fn backend(&self) -> Result<Arc<dyn Hypervisor>, BackendError> {
        let s = self.lock();
        match (&s.backend, s.reachable) {
            (Some(b), true) => Ok(b.clone()),
            _ => Err(BackendError::Unavailable(format!(
                "host {:?} is unreachable{}",
                self.config.name,
                s.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ))),
        }
    }

    pub fn reachable(&self) -> bool {
        self.lock().reachable
    }

    pub fn domain_type(&self) -> Option<&'static str> {
        self.lock().domain_type
    }

    /// Since when it has been unreachable.
    pub fn unreachable_since(&self) -> Option<SystemTime> {
        self.lock().unreachable_since
    }

    pub fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    pub fn facts(&self) -> Option<NodeInfo> {
        self.lock().facts.clone()
    }

    /// Marks it unreachable after a failed call; returns the change when it was reachable.
    pub fn failed(&self, error: &BackendError) -> Option<HostChange> {
        let mut s = self.lock();
        s.error = Some(error.to_string());
        if !s.reachable {
            return None;
        }
        s.reachable = false;
        s.unreachable_since = Some(SystemTime::now());
        s.retry_delay = FIRST_RETRY;
        s.next_try = Instant::now() + FIRST_RETRY;
        Some(HostChange::Unreachable {
            host: self.config.name.clone(),
            error: error.to_string(),
        })
    }

    fn connected(
        &self,
        backend: Arc<dyn Hypervisor>,
        domain_type: &'static str,
        facts: Option<NodeInfo>,
    ) -> Option<HostChange> {
        let mut s = self.lock();
        let was = s.reachable;
        s.backend = Some(backend);
        s.domain_type = Some(domain_type);
        s.reachable = true;
        s.error = None;
        s.unreachable_since = None;
        if facts.is_some() {
            s.facts = facts;
        }
        (!was).then(|| HostChange::Reachable {
            host: self.config.name.clone(),
        })
    }

    /// Whether a reconnection attempt is due now (and, if so, the next one's time is set).
    fn retry_due(&self, now: Instant) -> bool {
        let mut s = self.lock();
        if s.reachable || now < s.next_try {
            return false;
        }
        s.next_try = now + s.retry_delay;
        s.retry_delay = (s.retry_delay * 2).min(MAX_RETRY);
        true
    }
}

/// Every host, in configuration order; the first is the primary.
pub struct HostRegistry {
    hosts: Vec<Arc<Host>>,
    connector: Connector,
    sink: Mutex<Option<NoticeSink>>,
    /// Changes found by checks that outlived the pass that started them.
    late: Arc<Mutex<Vec<HostChange>>>,
}

/// How long [`HostRegistry::check`] waits for its hosts' answers before it returns; a check
/// still running then reports at a later pass.
const CHECK_WAIT: Duration = Duration::from_secs(2);

impl HostRegistry {
    /// The registry with the primary host already connected (`primary`, as the daemon made it
    /// at start) and the others to be connected by [`HostRegistry::connect_all`].
    pub fn new(
        configs: &[HostConfig],
        primary: Arc<dyn Hypervisor>,
        primary_domain_type: &'static str,
        connector: Connector,
    ) -> HostRegistry {
        let hosts = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let host = Host {
                    checking: std::sync::atomic::AtomicBool::new(false),
                    config: c.clone(),
                    state: Mutex::new(HostState {
                        backend: None,
                        domain_type: None,
                        reachable: false,
                        error: Some("not connected yet".into()),
                        unreachable_since: Some(SystemTime::now()),
                        next_try: Instant::now(),
                        retry_delay: FIRST_RETRY,
                        facts: None,
                    }),
                };
                if i == 0 {
                    host.connected(primary.clone(), primary_domain_type, None);
                }
                Arc::new(host)
            })
            .collect();
        HostRegistry {
            hosts,
            connector,
            sink: Mutex::new(None),
            late: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn all(&self) -> &[Arc<Host>] {
        &self.hosts
    }

    pub fn primary(&self) -> &Arc<Host> {
        &self.hosts[0]
    }

    /// The primary is never gated as unreachable: its backend reconnects at each call, as
    /// before hosts existed, and a pass that cannot list it fails as a whole.
    fn is_primary(&self, host: &Host) -> bool {
        std::ptr::eq(host, &*self.hosts[0])
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Host>> {
        self.hosts.iter().find(|h| h.config.name == name)
    }

    /// The host of a record's `host` column: empty is the primary (records from before hosts).
    pub fn of(&self, host: &str) -> Option<&Arc<Host>> {
        if host.is_empty() {
            Some(self.primary())
        } else {
            self.get(host)
        }
    }

    /// Where each host's lifecycle events go (the reconciler's wake-up).
    pub fn set_sink(&self, sink: NoticeSink) {
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    /// Connects to `host` now (blocking): its backend, domain type, node facts and event
    /// subscription. Returns the change of reachability, if any.
    pub fn connect(&self, host: &Host) -> Result<Option<HostChange>, BackendError> {
        let sink = self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone();
        connect_with(host, &self.connector, sink)
    }

    /// Refreshes the facts of the reachable hosts and retries the unreachable ones whose
    /// back-off has passed, each on a thread of its own: a host that drops packets makes its
    /// attempt wait for TCP's timeout, which must not hold up the others. Waits up to
    /// [`CHECK_WAIT`] for them (blocking); a check still running then is not started again
    /// and reports its change at a later call. Returns the changes found.
    pub fn check(&self, now: Instant, refresh_facts: bool) -> Vec<HostChange> {
        use std::sync::atomic::Ordering;
        let sink = self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut running = Vec::new();
        for host in &self.hosts {
            let due = if host.reachable() {
                refresh_facts
            } else {
                host.retry_due(now)
            };
            if !due || host.checking.swap(true, Ordering::AcqRel) {
                continue;
            }
            let (job_host, connector, sink, late) = (
                host.clone(),
                self.connector.clone(),
                sink.clone(),
                self.late.clone(),
            );
            let primary = self.is_primary(host);
            let spawned = std::thread::Builder::new()
                .name(format!("host-check-{}", host.name()))
                .spawn(move || {
                    let changes = check_host(&job_host, &connector, sink, primary);
                    late.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(changes);
                    job_host.checking.store(false, Ordering::Release);
                });
            match spawned {
                Ok(thread) => running.push(thread),
                Err(e) => {
                    // Out of threads or memory: this host waits for the next pass.
                    tracing::warn!(host = %host.name(), error = %e, "cannot start a host check");
                    host.checking.store(false, Ordering::Release);
                }
            }
        }
        let deadline = Instant::now() + CHECK_WAIT;
        while running.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::mem::take(&mut *self.late.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One host's check: its facts when reachable, a reconnection when not. Returns the change.
fn check_host(
    host: &Host,
    connector: &Connector,
    sink: Option<NoticeSink>,
    primary: bool,
) -> Vec<HostChange> {
    let attempt = if host.reachable() {
        match host.backend().and_then(|b| b.node_info()) {
            Ok(facts) => {
                host.lock().facts = Some(facts);
                return Vec::new();
            }
            Err(e) => Err(e),
        }
    } else {
        connect_with(host, connector, sink)
    };
    match attempt {
        Ok(change) => change.into_iter().collect(),
        Err(e @ BackendError::Unavailable(_)) if !primary => {
            tracing::debug!(host = %host.name(), error = %e, "host unreachable");
            host.failed(&e).into_iter().collect()
        }
        Err(e) => {
            tracing::debug!(host = %host.name(), error = %e, "host check failed");
            Vec::new()
        }
    }
}

impl Service {
    /// Every host as the API shows it, in configuration order.
    pub fn list_hosts(&self, caller: &Caller) -> Result<Vec<rhyzome_api::Host>, ServiceError> {
        authorize(caller, Action::ReadHosts)?;
        let counts = self.store.instances_per_host()?;
        Ok(self
            .hosts
            .all()
            .iter()
            .map(|h| self.host_to_api(h, &counts))
            .collect())
    }

    pub fn get_host(&self, caller: &Caller, name: &str) -> Result<rhyzome_api::Host, ServiceError> {
        authorize(caller, Action::ReadHosts)?;
        let host = self
            .hosts
            .get(name)
            .ok_or_else(|| ServiceError::HostNotFound(name.to_string()))?;
        Ok(self.host_to_api(host, &self.store.instances_per_host()?))
    }

    fn host_to_api(
        &self,
        h: &Host,
        counts: &std::collections::HashMap<String, u32>,
    ) -> rhyzome_api::Host {
        let mut instances = counts.get(h.name()).copied().unwrap_or(0);
        if self.hosts.is_primary(h) {
            instances += counts.get("").copied().unwrap_or(0);
        }
        let facts = h.facts();
        let reachable = h.reachable();
        rhyzome_api::Host {
            name: h.name().to_string(),
            uri: h.config.public_uri().to_string(),
            reachable,
            error: (!reachable).then(|| h.error()).flatten(),
            unreachable_since: h
                .unreachable_since()
                .filter(|_| !reachable)
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            libvirt_version: facts.as_ref().map(|f| f.libvirt_version.clone()),
            domain_type: h.domain_type().map(str::to_string),
            cpus: facts.as_ref().map(|f| f.cpus),
            memory_mib: facts.as_ref().map(|f| f.memory_kib / 1024),
            free_memory_mib: facts.as_ref().map(|f| f.free_memory_kib / 1024),
            instances,
            max_instances: h.config.max_instances,
            labels: h.config.labels.clone(),
            insecure: h.config.is_unencrypted(),
        }
    }

    /// The hosts.
    pub fn hosts(&self) -> &HostRegistry {
        &self.hosts
    }

    /// The name of the host a record's `host` column names (empty: the primary's).
    pub(crate) fn host_name<'a>(&'a self, host: &'a str) -> &'a str {
        if host.is_empty() {
            self.hosts.primary().name()
        } else {
            host
        }
    }

    /// The name on the host a record names (its `Bridges`) of the bridge an instance names.
    pub(crate) fn bridge_on(&self, host: &str, bridge: &str) -> String {
        self.hosts
            .of(host)
            .map_or(bridge, |h| h.config.bridge(bridge))
            .to_string()
    }

    /// The backend of the host a record names, or an `Unavailable` error when that host is
    /// unreachable or no longer configured.
    pub(crate) fn backend_on(&self, host: &str) -> Result<Arc<dyn Hypervisor>, ServiceError> {
        match self.hosts.of(host) {
            Some(h) => h.backend().map_err(ServiceError::Backend),
            None => Err(ServiceError::Backend(BackendError::Unavailable(format!(
                "host {host:?} is not in the daemon's Hosts"
            )))),
        }
    }

    /// Notes that a call to `host` failed: an `Unavailable` error makes it unreachable.
    pub(crate) fn host_failed(&self, host: &str, error: &BackendError) {
        if !matches!(error, BackendError::Unavailable(_)) {
            return;
        }
        let Some(h) = self.hosts.of(host) else {
            return;
        };
        if self.hosts.is_primary(h) {
            return;
        }
        if let Some(change) = h.failed(error) {
            self.announce_host(&change);
        }
    }

    fn announce_host(&self, change: &HostChange) {
        let (host, state, reason) = match change {
            HostChange::Unreachable { host, error } => {
                tracing::warn!(%host, %error, "host unreachable; its instances are unknown until it answers");
                (host, "unreachable", Some(error.clone()))
            }
            HostChange::Reachable { host } => {
                tracing::info!(%host, "host reachable again; adopting its domains");
                (host, "reachable", None)
            }
        };
        self.events.publish(Event {
            time: now_rfc3339(),
            instance: format!("host:{host}"),
            state: state.into(),
            exit_code: None,
            reason,
            restart_count: 0,
        });
    }

    /// Connects the hosts at start-up (the primary is, already); a host that cannot be reached
    /// is reported (with libvirt's words) and retried by [`Service::run_host_watch`], while
    /// the others serve.
    pub async fn connect_hosts(self: &Arc<Self>) {
        let svc = self.clone();
        let results = blocking(move || {
            // The primary is connected already; this reads its facts.
            svc.hosts
                .all()
                .iter()
                .map(|h| (h.name().to_string(), svc.hosts.connect(h)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (name, result) in results {
            match result {
                Ok(_) => tracing::info!(host = %name, "host connected"),
                Err(e) => {
                    tracing::error!(host = %name, error = %e, "cannot reach host; retrying in the background");
                    if let Some(h) = self.hosts.get(&name) {
                        h.lock().error = Some(e.to_string());
                    }
                }
            }
        }
    }

    /// Watches the hosts for ever: every second, retries the unreachable ones that are due;
    /// every [`FACTS_EVERY`] seconds, refreshes the facts of the others (which also finds a
    /// host gone while nothing called it). A host that comes back wakes the reconciler.
    pub async fn run_host_watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            tick.tick().await;
            let svc = self.clone();
            let refresh = n % FACTS_EVERY == 0;
            let Ok(changes) = blocking(move || svc.hosts.check(Instant::now(), refresh)).await
            else {
                continue;
            };
            for change in &changes {
                self.announce_host(change);
            }
            if self.fail_over_due(SystemTime::now()).await > 0 {
                let _ = self.wake.send(());
            }
            if changes
                .iter()
                .any(|c| matches!(c, HostChange::Reachable { .. }))
            {
                let _ = self.wake.send(());
            }
        }
    }
}

/// [`HostRegistry::connect`], for a check's own thread.
fn connect_with(
    host: &Host,
    connector: &Connector,
    sink: Option<NoticeSink>,
) -> Result<Option<HostChange>, BackendError> {
    let existing = host.lock().backend.clone();
    let (backend, domain_type) = match existing {
        // An existing libvirt backend reconnects by itself at its next call.
        Some(b) => {
            let dt = host.domain_type().unwrap_or("qemu");
            (b, dt)
        }
        None => {
            let (b, dt) = connector(&host.config)?;
            if let Some(sink) = sink {
                if let Err(e) = b.watch(sink) {
                    tracing::warn!(host = %host.name(), error = %e, "no lifecycle events from this host; relying on polling");
                }
            }
            (b, dt)
        }
    };
    let facts = match backend.node_info() {
        Ok(facts) => Some(facts),
        Err(e @ BackendError::Unavailable(_)) => return Err(e),
        // It answered: reachable, though it would not describe itself.
        Err(e) => {
            tracing::warn!(host = %host.name(), error = %e, "cannot read the host's facts");
            None
        }
    };
    Ok(host.connected(backend, domain_type, facts))
}
