//! What a metrics scrape reads: the counters of this daemon's own running domains (one bulk
//! hypervisor call), its instances by state and their restarts, its test beds' groups and
//! its managed networks, and the process's figures.
//!
//! The bulk call is libvirt's per-domain cost (about 1 ms per TCG guest: half a second at 500
//! guests, docs/benchmarks.md), so it is kept off the scrape's path: a [`CounterCache`] holds
//! the last answer, and a refresher task makes one bulk call every `MetricsMaxAgeMillis` while
//! scrapes keep coming (it stops after [`IDLE_STOP`] without one). A scrape uses the snapshot
//! it finds; it waits only when there is none at all (the first scrape, or the first after
//! the refresher stopped), and then for one call, never for more. `MetricsMaxAgeMillis: 0`
//! reads the hypervisor at every scrape instead.
//!
//! Concurrency: the bulk call, the `/proc` reads and the writing of the exposition run on
//! the blocking pool; the store is read with short statements; no instance lock is taken, so
//! a scrape never waits for (or holds up) a create, a stop or the reconciler.

use super::authz::{authorize, Action};
use super::{blocking, Service, ServiceError};
use crate::auth::Caller;
use crate::backend::{BackendError, DomainCounters};
use crate::metrics::{DomainSample, GroupSample, Metrics, NetworkSample, Scrape};
use rhyzome_api::InstanceState;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every state an instance can be in, for `rhyzome_instances{state}`.
const STATES: [InstanceState; 8] = [
    InstanceState::Pending,
    InstanceState::Starting,
    InstanceState::Running,
    InstanceState::Stopped,
    InstanceState::Exited,
    InstanceState::Crashed,
    InstanceState::Failed,
    InstanceState::Unknown,
];

/// The refresher stops when no scrape came for this long (or for four refresh intervals,
/// whichever is longer), so that an unscraped daemon makes no bulk calls.
const IDLE_STOP: Duration = Duration::from_secs(120);

/// One bulk call's answer and when it was taken.
#[derive(Debug)]
struct CounterSnapshot {
    taken: Instant,
    /// Each domain's counters with the name of the host that reported it.
    counters: Result<Vec<(String, DomainCounters)>, BackendError>,
}

#[derive(Debug)]
struct CacheState {
    snapshot: Option<Arc<CounterSnapshot>>,
    /// The domains to read disk counters of (the instances with volumes), as the last scrape
    /// found them.
    block_stats_of: Arc<HashSet<String>>,
    /// Whether a refresher task runs.
    refreshing: bool,
    last_scrape: Instant,
}

/// Where the counters come from: one bulk statistics call per reachable host, concatenated
/// (see [`Service::counter_source`]).
pub(super) type CounterSource = Arc<
    dyn Fn(&HashSet<String>) -> Result<Vec<(String, DomainCounters)>, BackendError> + Send + Sync,
>;

/// The last bulk statistics call's answer, shared by the scrapes and the refresher task.
#[derive(Debug)]
pub(super) struct CounterCache {
    max_age: Duration,
    state: Mutex<CacheState>,
    /// Told when a snapshot is stored.
    stored: tokio::sync::Notify,
}

impl CounterCache {
    pub(super) fn new(max_age: Duration) -> Self {
        CounterCache {
            max_age,
            state: Mutex::new(CacheState {
                snapshot: None,
                block_stats_of: Arc::default(),
                refreshing: false,
                last_scrape: Instant::now(),
            }),
            stored: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // The state is a few plain fields, valid whatever a panicking holder did.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counters for a scrape: the stored snapshot if there is one (starting the
    /// refresher if it does not run), else the next one stored.
    async fn get(
        self: &Arc<Self>,
        backend: &CounterSource,
        block_stats_of: HashSet<String>,
    ) -> Result<Arc<CounterSnapshot>, ServiceError> {
        if self.max_age.is_zero() {
            let backend = backend.clone();
            let counters = blocking(move || backend(&block_stats_of)).await?;
            return Ok(Arc::new(CounterSnapshot {
                taken: Instant::now(),
                counters,
            }));
        }
        loop {
            let stored = self.stored.notified();
            tokio::pin!(stored);
            // Registered before the state is looked at, so a store in between is not missed.
            stored.as_mut().enable();
            {
                let mut state = self.lock();
                state.last_scrape = Instant::now();
                if *state.block_stats_of != block_stats_of {
                    state.block_stats_of = Arc::new(block_stats_of.clone());
                }
                if !state.refreshing {
                    state.refreshing = true;
                    // A snapshot left from before the refresher stopped is too old to serve.
                    if state
                        .snapshot
                        .as_ref()
                        .is_some_and(|s| s.taken.elapsed() > self.max_age)
                    {
                        state.snapshot = None;
                    }
                    tokio::spawn(self.clone().refresh(backend.clone()));
                }
                if let Some(s) = &state.snapshot {
                    return Ok(s.clone());
                }
            }
            stored.await;
        }
    }

    /// The refresher: one bulk call per `max_age` while scrapes come.
    async fn refresh(self: Arc<Self>, backend: CounterSource) {
        let idle_stop = IDLE_STOP.max(self.max_age * 4);
        loop {
            let b = backend.clone();
            let disks = self.lock().block_stats_of.clone();
            let counters = match tokio::task::spawn_blocking(move || b(&disks)).await {
                Ok(c) => c,
                Err(e) => Err(BackendError::Unavailable(format!(
                    "statistics task failed: {e}"
                ))),
            };
            {
                let mut state = self.lock();
                state.snapshot = Some(Arc::new(CounterSnapshot {
                    taken: Instant::now(),
                    counters,
                }));
                self.stored.notify_waiters();
                if state.last_scrape.elapsed() > idle_stop {
                    state.refreshing = false;
                    return;
                }
            }
            tokio::time::sleep(self.max_age).await;
        }
    }
}

impl Service {
    /// One bulk statistics call per reachable host, at each call (a host that comes or goes
    /// is seen at the next refresh). The primary's failure is the scrape's
    /// (`rhyzome_libvirt_up 0`, as with one host); another host's leaves its guests out.
    fn counter_source(&self) -> CounterSource {
        let hosts = self.hosts.clone();
        Arc::new(move |block_stats_of: &HashSet<String>| {
            let mut all = Vec::new();
            for (i, host) in hosts.all().iter().enumerate() {
                let counters = host.backend().and_then(|b| b.all_counters(block_stats_of));
                match counters {
                    Ok(c) => all.extend(c.into_iter().map(|c| (host.name().to_string(), c))),
                    Err(e) if i == 0 => return Err(e),
                    Err(e) => {
                        tracing::debug!(host = %host.name(), error = %e, "no statistics from this host")
                    }
                }
            }
            Ok(all)
        })
    }

    /// The metrics counted as things happen, for the HTTP layer to record requests in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The Prometheus exposition of this daemon and of its own domains. Domains of other
    /// daemons or tools on the same libvirt are left out: only a domain whose UUID is one of
    /// this daemon's instances is reported.
    pub async fn scrape(&self, caller: &Caller) -> Result<String, ServiceError> {
        authorize(caller, Action::ReadMetrics)?;
        let with_volumes = self.store.instances_with_volumes()?;
        let snapshot = self
            .counter_cache
            .get(&self.counter_source(), with_volumes)
            .await?;
        let process = blocking(crate::metrics::process::read).await?;
        let libvirt_up = match &snapshot.counters {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: no domain statistics from the hypervisor");
                false
            }
        };
        let records = self.store.all()?;
        let mut by_state: HashMap<&'static str, u64> = HashMap::new();
        for r in &records {
            *by_state.entry(r.state.as_str()).or_default() += 1;
        }
        let instances_by_state = STATES
            .iter()
            .map(|s| (s.as_str(), by_state.get(s.as_str()).copied().unwrap_or(0)))
            .collect();
        let restarts = records
            .iter()
            .map(|r| (r.name.clone(), u64::from(r.restart_count)))
            .collect();
        let mut domains = Vec::new();
        if let Ok(counters) = &snapshot.counters {
            let by_id: HashMap<&str, &crate::store::InstanceRecord> =
                records.iter().map(|r| (r.id.as_str(), r)).collect();
            // A domain counts on the host its record names: a stale copy left on a host that
            // came back after a failover is not the instance (the reconciler destroys it).
            let owned: Vec<_> = counters
                .iter()
                .filter_map(|(host, c)| {
                    by_id
                        .get(c.uuid.as_str())
                        .filter(|r| self.host_name(&r.host) == host)
                        .map(|r| (*r, host, c))
                })
                .collect();
            let several_hosts = self.hosts.all().len() > 1;
            if !owned.is_empty() {
                let images = self.store.all_instance_images()?;
                domains = owned
                    .into_iter()
                    .map(|(r, host, counters)| {
                        let mut counters = counters.clone();
                        // libvirt is not asked for vCPUs (see backend/libvirt/bulk.rs): the
                        // domain runs with the instance's.
                        if counters.vcpus == 0 {
                            counters.vcpus = u64::from(r.vcpus);
                        }
                        DomainSample {
                            instance: r.name.clone(),
                            host: several_hosts.then(|| host.clone()),
                            image: images.get(&r.id).cloned(),
                            testbed: r.labels.get("testbed").cloned(),
                            group: r.labels.get("group").cloned(),
                            bridges: r.attachments.iter().map(|a| a.bridge.clone()).collect(),
                            counters,
                        }
                    })
                    .collect();
            }
        }
        let testbed_groups = self.testbed_samples(&records)?;
        let networks = self.network_samples()?;
        // Writing the text takes milliseconds at hundreds of domains (docs/benchmarks.md):
        // off the async runtime too, so that API requests never wait behind it.
        let metrics = self.metrics.clone();
        let hosts = self
            .hosts
            .all()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                // The primary is never gated (see service/hosts.rs): its bulk call says.
                let up = if i == 0 { libvirt_up } else { h.reachable() };
                (h.name().to_string(), up)
            })
            .collect();
        let scrape = Scrape {
            libvirt_up,
            hosts,
            snapshot_age_seconds: snapshot.taken.elapsed().as_secs_f64(),
            instances_by_state,
            restarts,
            domains,
            testbed_groups,
            networks,
            process,
        };
        blocking(move || metrics.render(scrape)).await
    }

    /// Every group of every test bed, with its instances counted as `GET /v1/testbeds`
    /// counts them.
    fn testbed_samples(
        &self,
        records: &[crate::store::InstanceRecord],
    ) -> Result<Vec<GroupSample>, ServiceError> {
        let beds = self.store.testbeds()?;
        if beds.is_empty() {
            return Ok(Vec::new());
        }
        // The records are already read: one lookup each, not one store query per member.
        let states: HashMap<&str, (InstanceState, u32)> = records
            .iter()
            .map(|r| (r.name.as_str(), (r.state, r.restart_count)))
            .collect();
        let mut out = Vec::new();
        for record in beds {
            let bed = self.testbed_status_with(&record, Some(&states))?;
            for g in bed.groups {
                out.push(GroupSample {
                    testbed: bed.name.clone(),
                    group: g.name,
                    desired: g.desired,
                    running: g.running,
                    ready: g.ready,
                    exited: g.exited,
                    failed: g.failed,
                });
            }
        }
        Ok(out)
    }

    /// Every managed network's address use and instances.
    fn network_samples(&self) -> Result<Vec<NetworkSample>, ServiceError> {
        let mut out = Vec::new();
        for record in self.store.networks()? {
            // Whether it is active is not a store fact; the gauges do not need it.
            let n = self.network_to_api(&record, false)?;
            let instances: HashSet<&str> =
                n.attachments.iter().map(|a| a.instance.as_str()).collect();
            out.push(NetworkSample {
                instances: instances.len() as u32,
                used: n.addresses_in_use,
                total: n.addresses_in_use + n.addresses_free,
                name: n.name,
            });
        }
        Ok(out)
    }
}
