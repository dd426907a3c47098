//! The values read at scrape time, and how they are written: one descriptor per metric, then
//! one sample per domain (or per interface, disk, state), as constant metrics.

use super::process::ProcessFigures;
use crate::backend::DomainCounters;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// One of this daemon's running domains, with what labels it.
#[derive(Debug, Clone)]
pub struct DomainSample {
    pub instance: String,
    /// The host it runs on, when the daemon drives several.
    pub host: Option<String>,
    /// The image reference it was created from, if any.
    pub image: Option<String>,
    /// The test bed and group it belongs to (its `testbed=` and `group=` labels), if any.
    pub testbed: Option<String>,
    pub group: Option<String>,
    /// The bridge of each of the domain's NICs, in the order of its `<interface>` elements.
    pub bridges: Vec<String>,
    pub counters: DomainCounters,
}

/// Everything read for one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Whether the bulk statistics call succeeded.
    pub libvirt_up: bool,
    /// Each host and whether it answers (the primary: whether its bulk call succeeded).
    pub hosts: Vec<(String, bool)>,
    /// Instances per observed state; every state is listed, zero or not, so that series do
    /// not appear and vanish.
    pub instances_by_state: Vec<(&'static str, u64)>,
    /// Restart count per instance name.
    pub restarts: Vec<(String, u64)>,
    pub domains: Vec<DomainSample>,
    /// How old the domain counters are (they come from a snapshot refreshed in the
    /// background).
    pub snapshot_age_seconds: f64,
    pub testbed_groups: Vec<GroupSample>,
    pub networks: Vec<NetworkSample>,
    pub process: Option<ProcessFigures>,
}

/// One group of a test bed, counted as `GET /v1/testbeds` counts it.
#[derive(Debug, Clone)]
pub struct GroupSample {
    pub testbed: String,
    pub group: String,
    pub desired: u32,
    pub running: u32,
    pub ready: u32,
    pub exited: u32,
    pub failed: u32,
}

/// One managed network.
#[derive(Debug, Clone)]
pub struct NetworkSample {
    pub name: String,
    /// Addresses given to instances.
    pub used: u32,
    /// Addresses that can be given (the subnet's hosts but the gateway).
    pub total: u32,
    /// Instances with an address on it.
    pub instances: u32,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

impl DomainSample {
    fn labels(&self) -> Labels<'_> {
        let mut labels = vec![
            ("domain", self.counters.name.as_str()),
            ("instance", self.instance.as_str()),
        ];
        for (name, value) in [
            ("host", &self.host),
            ("image", &self.image),
            ("testbed", &self.testbed),
            ("group", &self.group),
        ] {
            if let Some(v) = value {
                labels.push((name, v.as_str()));
            }
        }
        labels
    }
}

/// Writes one metric: its descriptor, then a sample per item that yields one.
fn family<'i, T: 'i>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    items: impl IntoIterator<Item = &'i T>,
    sample: impl Fn(&'i T, &mut dyn FnMut(Labels<'_>, f64) -> std::fmt::Result) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for item in items {
        sample(item, &mut |labels, value| {
            let inner = metric.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value).encode(inner),
                _ => ConstGauge::new(value).encode(inner),
            }
        })?;
    }
    Ok(())
}

/// `(suffix, help, value)` of each interface counter, in the exporters' names.
type InterfaceField = (
    &'static str,
    &'static str,
    fn(&crate::backend::counters::InterfaceCounters) -> u64,
);
const INTERFACE_FIELDS: [InterfaceField; 8] = [
    ("receive_bytes", "Bytes received by the guest", |c| {
        c.rx_bytes
    }),
    ("receive_packets", "Packets received by the guest", |c| {
        c.rx_packets
    }),
    ("receive_errors", "Receive errors", |c| c.rx_errors),
    ("receive_drops", "Received packets dropped", |c| c.rx_drops),
    ("transmit_bytes", "Bytes sent by the guest", |c| c.tx_bytes),
    ("transmit_packets", "Packets sent by the guest", |c| {
        c.tx_packets
    }),
    ("transmit_errors", "Transmit errors", |c| c.tx_errors),
    ("transmit_drops", "Transmitted packets dropped", |c| {
        c.tx_drops
    }),
];

type BlockField = (
    &'static str,
    &'static str,
    fn(&crate::backend::counters::BlockCounters) -> u64,
);
const BLOCK_FIELDS: [BlockField; 4] = [
    ("read_bytes", "Bytes read from the disk", |c| c.read_bytes),
    ("read_requests", "Read requests", |c| c.read_requests),
    ("write_bytes", "Bytes written to the disk", |c| {
        c.write_bytes
    }),
    ("write_requests", "Write requests", |c| c.write_requests),
];

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let e = &mut encoder;
        let domains = &self.domains;
        family(
            e,
            "libvirt_domain_info_cpu_time_seconds",
            "CPU time used by the domain",
            Counter,
            domains,
            |d, put| put(d.labels(), d.counters.cpu_time_ns as f64 / 1e9),
        )?;
        family(
            e,
            "libvirt_domain_info_memory_usage_bytes",
            "Memory given to the domain",
            Gauge,
            domains,
            |d, put| put(d.labels(), (d.counters.memory_kib * 1024) as f64),
        )?;
        family(
            e,
            "libvirt_domain_info_maximum_memory_bytes",
            "Memory the domain may use at most",
            Gauge,
            domains,
            |d, put| put(d.labels(), (d.counters.max_memory_kib * 1024) as f64),
        )?;
        family(
            e,
            "libvirt_domain_info_virtual_cpus",
            "Virtual CPUs of the domain",
            Gauge,
            domains,
            |d, put| put(d.labels(), d.counters.vcpus as f64),
        )?;
        for (suffix, help, value) in INTERFACE_FIELDS {
            family(
                e,
                &format!("libvirt_domain_interface_stats_{suffix}"),
                help,
                Counter,
                domains,
                |d, put| {
                    for (i, nic) in d.counters.interfaces.iter().enumerate() {
                        let mut labels = d.labels();
                        labels.push(("target_device", nic.target_device.as_str()));
                        labels.push(("source_bridge", d.bridges.get(i).map_or("", |b| b)));
                        put(labels, value(nic) as f64)?;
                    }
                    Ok(())
                },
            )?;
        }
        for (suffix, help, value) in BLOCK_FIELDS {
            family(
                e,
                &format!("libvirt_domain_block_stats_{suffix}"),
                help,
                Counter,
                domains,
                |d, put| {
                    for disk in &d.counters.blocks {
                        let mut labels = d.labels();
                        labels.push(("target_device", disk.target_device.as_str()));
                        put(labels, value(disk) as f64)?;
                    }
                    Ok(())
                },
            )?;
        }
        family(
            e,
            "rhyzome_instances",
            "Instances by observed state",
            Gauge,
            &self.instances_by_state,
            |(state, n), put| put(vec![("state", state)], *n as f64),
        )?;
        family(
            e,
            "rhyzome_instance_restarts",
            "Restarts made by the instance's restart policy (the count resets after a stable run)",
            Counter,
            &self.restarts,
            |(name, n), put| put(vec![("instance", name.as_str())], *n as f64),
        )?;
        family(
            e,
            "rhyzome_libvirt_up",
            "Whether the last bulk statistics call to libvirt succeeded",
            Gauge,
            [&()],
            |_, put| put(Vec::new(), if self.libvirt_up { 1.0 } else { 0.0 }),
        )?;
        family(
            e,
            "rhyzome_host_up",
            "Whether the host answers: for the primary, whether its bulk statistics call succeeded",
            Gauge,
            &self.hosts,
            |(host, up), put| put(vec![("host", host.as_str())], if *up { 1.0 } else { 0.0 }),
        )?;
        family(
            e,
            "rhyzome_metrics_snapshot_age_seconds",
            "Age of the domain counters in this answer (refreshed in the background)",
            Gauge,
            [&()],
            |_, put| put(Vec::new(), self.snapshot_age_seconds),
        )?;
        family(
            e,
            "rhyzome_testbed_nodes",
            "Instances of a test bed's group: desired, running, ready (running and past the \
             readiness check), exited, failed (crashed or failed)",
            Gauge,
            &self.testbed_groups,
            |g, put| {
                for (state, n) in [
                    ("desired", g.desired),
                    ("running", g.running),
                    ("ready", g.ready),
                    ("exited", g.exited),
                    ("failed", g.failed),
                ] {
                    let labels = vec![
                        ("testbed", g.testbed.as_str()),
                        ("group", g.group.as_str()),
                        ("state", state),
                    ];
                    put(labels, f64::from(n))?;
                }
                Ok(())
            },
        )?;
        let networks = &self.networks;
        fn net(n: &NetworkSample) -> Labels<'_> {
            vec![("network", n.name.as_str())]
        }
        family(
            e,
            "rhyzome_network_addresses_used",
            "Addresses of a managed network given to instances",
            Gauge,
            networks,
            |n, put| put(net(n), f64::from(n.used)),
        )?;
        family(
            e,
            "rhyzome_network_addresses_total",
            "Addresses of a managed network that can be given to instances",
            Gauge,
            networks,
            |n, put| put(net(n), f64::from(n.total)),
        )?;
        family(
            e,
            "rhyzome_network_instances",
            "Instances with an address on a managed network",
            Gauge,
            networks,
            |n, put| put(net(n), f64::from(n.instances)),
        )?;
        if let Some(p) = &self.process {
            p.encode(e)?;
        }
        Ok(())
    }
}

impl ProcessFigures {
    fn encode(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        use MetricType::{Counter, Gauge};
        let one = [&()];
        family(
            e,
            "process_cpu_seconds",
            "User and system CPU time of the daemon",
            Counter,
            one,
            |_, put| put(Vec::new(), self.cpu_seconds),
        )?;
        family(
            e,
            "process_resident_memory_bytes",
            "Resident memory of the daemon",
            Gauge,
            one,
            |_, put| put(Vec::new(), self.resident_bytes as f64),
        )?;
        family(
            e,
            "process_open_fds",
            "Open file descriptors of the daemon",
            Gauge,
            one,
            |_, put| put(Vec::new(), self.open_fds as f64),
        )?;
        if let Some(max) = self.max_fds {
            family(
                e,
                "process_max_fds",
                "The daemon's file descriptor limit",
                Gauge,
                one,
                |_, put| put(Vec::new(), max as f64),
            )?;
        }
        family(
            e,
            "process_start_time_seconds",
            "Start of the daemon, in seconds since the epoch",
            Gauge,
            one,
            |_, put| put(Vec::new(), self.start_time_seconds),
        )
    }
}
