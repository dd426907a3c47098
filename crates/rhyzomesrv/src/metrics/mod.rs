//! Prometheus metrics: what `GET /metrics` exposes, in the Prometheus text format (0.0.4).
//!
//! The exposition is written by the `prometheus-client` crate (the Prometheus project's own
//! Rust client: typed metrics, no global registry, no hand-written text format). Two kinds of
//! metrics meet in one answer:
//!
//! - **Events counted as they happen** ([`Metrics`]): HTTP request durations, reconcile
//!   passes, state changes, create durations. Their handles are atomics; recording one never
//!   takes a lock that a scrape holds.
//! - **Values read at scrape time** ([`Scrape`], [`render`](Metrics::render)): per-domain
//!   counters from one bulk libvirt call, instances by state, restarts, libvirt's
//!   reachability and the process's own figures. They are written straight from the
//!   snapshot with constant metrics (`ConstCounter`, `ConstGauge`), with no per-scrape maps.
//!
//! Per-domain metrics carry the names and labels of the community libvirt exporters
//! (`libvirt_domain_info_cpu_time_seconds_total{domain=...}`,
//! `libvirt_domain_interface_stats_receive_bytes_total{target_device=...,source_bridge=...}`),
//! so existing Grafana dashboards work, plus rhyzome's `instance`, `image`, `testbed` and `group`.

pub mod process;
mod scrape;

pub use scrape::{DomainSample, GroupSample, NetworkSample, Scrape};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `Content-Type` of an exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// The route template (`/v1/instances/{name}`), never the raw path: one series per
    /// operation, not per instance name (or per attacker-chosen path).
    route: String,
    method: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    to: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metrics counted as things happen, owned by the service and shared with the HTTP
/// layer.
pub struct Metrics {
    registry: Registry,
    http_requests: HistogramFamily<HttpLabels>,
    reconcile_duration: Histogram,
    reconcile_errors: Counter,
    state_changes: Family<StateLabel, Counter>,
    create_duration: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Request durations: 0.5 ms to about 16 s.
fn http_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let http_requests: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(http_histogram);
        registry.register(
            "rhyzome_http_request_duration_seconds",
            "Time to the response head of an API request, by route template, method and status",
            http_requests.clone(),
        );
        // Passes: 1 ms to about 30 s.
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "rhyzome_reconcile_duration_seconds",
            "Duration of a periodic or woken reconcile pass",
            reconcile_duration.clone(),
        );
        let reconcile_errors = Counter::default();
        registry.register(
            "rhyzome_reconcile_errors",
            "Reconcile passes that failed",
            reconcile_errors.clone(),
        );
        let state_changes = Family::<StateLabel, Counter>::default();
        registry.register(
            "rhyzome_instance_state_changes",
            "Instance state changes, by the state changed to",
            state_changes.clone(),
        );
        // Creates: 50 ms (a unikernel under KVM) to about 100 s.
        let create_duration = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "rhyzome_create_duration_seconds",
            "Time from a create request to its guest running (successful creates)",
            create_duration.clone(),
        );
        Metrics {
            registry,
            http_requests,
            reconcile_duration,
            reconcile_errors,
            state_changes,
            create_duration,
        }
    }
}

impl Metrics {
    /// One API request answered.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                method: method.to_string(),
                status: status.to_string(),
            })
            .observe(seconds);
    }

    /// One reconcile pass ended, well or not.
    pub fn observe_reconcile(&self, seconds: f64, failed: bool) {
        self.reconcile_duration.observe(seconds);
        if failed {
            self.reconcile_errors.inc();
        }
    }

    /// An instance entered the state `to`.
    pub fn state_changed(&self, to: &str) {
        self.state_changes
            .get_or_create(&StateLabel { to: to.to_string() })
            .inc();
    }

    /// A create request ended with its guest running.
    pub fn observe_create(&self, seconds: f64) {
        self.create_duration.observe(seconds);
    }

    /// The whole exposition: the counted metrics, then the snapshot's.
    pub fn render(&self, scrape: Scrape) -> String {
        let mut out = String::with_capacity(4096 + scrape.domains.len() * 3072);
        let mut snapshot = Registry::default();
        snapshot.register_collector(Box::new(scrape));
        // Writing into a String cannot fail; the encoder's own errors are format errors of
        // metric names, which are constants here.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &snapshot);
        out
    }
}
