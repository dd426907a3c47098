//! The hypervisor boundary. The service talks to a [`Hypervisor`]; [`libvirt::LibvirtBackend`]
//! drives real libvirt through the `virt` crate, and [`fake::FakeBackend`] keeps domains in
//! memory for fast tests of service logic. The service describes a domain with a typed
//! [`DomainDefinition`]; rendering it (libvirt XML) is the backend's business.
//!
//! Every method blocks (libvirt calls are synchronous RPCs), so async callers run them on
//! `tokio::task::spawn_blocking`. Implementations are `Send + Sync` and may be called from
//! several threads at once.

pub mod counters;
pub mod definition;
pub mod fake;
mod fake_host_files;
mod fake_storage;
pub mod host_files;
pub mod libvirt;
pub mod network;
pub mod storage;
pub mod storage_xml;

pub use counters::DomainCounters;
pub use definition::{Disk, DomainDefinition, DomainMark, EmulatedPort, Nic};
use network::{DhcpHost, HostRoute, NetworkDefinition, NetworkStatus};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The hypervisor cannot be reached; the call may succeed after a reconnect.
    #[error("libvirt is unavailable: {0}")]
    Unavailable(String),
    /// The hypervisor refused the domain. `message` is its own words.
    #[error("libvirt refused the domain: {message}")]
    Rejected { message: String },
    #[error("libvirt error: {0}")]
    Other(String),
}

/// What the hypervisor reports about one of rhyzome's domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStatus {
    pub uuid: String,
    pub name: String,
    pub active: bool,
}

/// Resource use of a running domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainStats {
    pub cpu_time_ns: u64,
    pub memory_kib: u64,
    pub rss_kib: Option<u64>,
    /// One entry per MAC asked for, in that order.
    pub nics: Vec<NicCounters>,
}

/// A NIC's counters, seen from the guest (`rx` is what it received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NicCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// What an interface on the hypervisor's host is, as libvirt sees it: in the network
/// namespace where libvirtd runs, which need not be the daemon's own (the lab runs libvirtd in
/// its own namespace; a remote libvirt runs on another machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceKind {
    Bridge,
    /// Another kind, in libvirt's words (`ethernet`, `vlan`, `bond`).
    Other(String),
    Missing,
    /// libvirt cannot say (no interface driver, or a fictional host such as `test:///`); the
    /// guest's start is then the check.
    Unknown,
}

/// What the hypervisor tells the daemon without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A domain started, stopped, crashed, ... (libvirt's lifecycle event), with libvirt's
    /// detail: a `stopped` domain was `destroyed` (someone called destroy), `shutdown` (the
    /// guest powered off), `crashed`, ...
    Lifecycle {
        uuid: String,
        event: String,
        detail: String,
    },
    /// The connection was re-established; events may have been missed meanwhile.
    Reconnected,
}

/// What a hypervisor's host is and has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// libvirt's version on the host, `10.0.0`.
    pub libvirt_version: String,
    /// The hypervisor and its version, `QEMU 7.2.0`.
    pub hypervisor: String,
    pub cpus: u32,
    pub memory_kib: u64,
    pub free_memory_kib: u64,
    /// The domain types the host's capabilities offer (`qemu`, `kvm`), in their order.
    pub domain_types: Vec<String>,
}

/// Receives [`Notice`]s; called from the hypervisor's event thread, so it must not block.
pub type NoticeSink = std::sync::Arc<dyn Fn(Notice) + Send + Sync>;

/// Domains are transient: a domain exists while its guest runs and disappears when the guest
/// powers off or is destroyed. The daemon's store, not libvirt, remembers instances.
pub trait Hypervisor: storage::Storage + host_files::HostFiles + Send + Sync + 'static {
    /// Human-readable identity, for logs (`qemu:///system`).
    fn uri(&self) -> String;
    /// What the host is and has: libvirt's and the hypervisor's versions, CPUs, memory.
    fn node_info(&self) -> Result<NodeInfo, BackendError>;
    /// Creates and starts a transient domain as `def` describes it.
    fn create(&self, def: &DomainDefinition) -> Result<(), BackendError>;
    /// Destroys the domain with this UUID; `Ok(false)` when there was none.
    fn destroy(&self, uuid: &str) -> Result<bool, BackendError>;
    /// The active domains whose names carry rhyzome's prefix.
    fn list(&self) -> Result<Vec<DomainStatus>, BackendError>;
    /// The domain with this UUID, if it exists.
    fn status(&self, uuid: &str) -> Result<Option<DomainStatus>, BackendError>;
    /// Rhyzome's mark in the domain's `<metadata>` (current or legacy), or `None` when the
    /// domain has no such mark or does not exist. The reconciler only ever destroys domains
    /// marked with its own daemon identity, never one that merely has a rhyzome-like name,
    /// another daemon's, or one of an older release's.
    fn mark(&self, uuid: &str) -> Result<Option<DomainMark>, BackendError>;
    /// The UUID and mark of the domain called `name`, if one exists: who holds a name that a
    /// create was refused.
    fn named(&self, name: &str) -> Result<Option<(String, Option<DomainMark>)>, BackendError>;
    /// Delivers lifecycle events to `sink` from now on, across reconnections.
    fn watch(&self, sink: NoticeSink) -> Result<(), BackendError>;
    /// What the interface `name` is on the hypervisor's host (a guest NIC joins it).
    fn interface_kind(&self, name: &str) -> Result<InterfaceKind, BackendError>;
    /// CPU, memory and the counters of the NICs with these MACs, of the running domain with
    /// this UUID; `None` when it does not run.
    fn stats(&self, uuid: &str, macs: &[String]) -> Result<Option<DomainStats>, BackendError>;

    /// Defines the persistent network `def` (replacing the definition of that name) without
    /// starting it.
    fn define_network(&self, def: &NetworkDefinition) -> Result<(), BackendError>;
    /// Starts the defined network `libvirt_name` (its bridge, and dnsmasq with DHCP); a
    /// running one is left as it is.
    fn start_network(&self, libvirt_name: &str) -> Result<(), BackendError>;
    /// Stops and undefines the network `libvirt_name` if, and only if, its mark names
    /// `daemon`: a network without rhyzome's mark or with another daemon's is never touched.
    fn remove_network(
        &self,
        libvirt_name: &str,
        daemon: &str,
    ) -> Result<NetworkRemoval, BackendError>;
    /// The network `libvirt_name`, whoever made it.
    fn network(&self, libvirt_name: &str) -> Result<Option<NetworkStatus>, BackendError>;
    /// Every network the hypervisor knows, running or not, whoever made it.
    fn networks(&self) -> Result<Vec<NetworkStatus>, BackendError>;
    /// Adds (`present`) or removes a static DHCP entry of the network `libvirt_name`, in its
    /// definition and, when it runs, live.
    fn set_dhcp_host(
        &self,
        libvirt_name: &str,
        host: &DhcpHost,
        present: bool,
    ) -> Result<(), BackendError>;
    /// The routes of the hypervisor's host (in the network namespace libvirtd runs in), or
    /// `None` when they cannot be looked at (a remote or fictional host).
    fn host_routes(&self) -> Result<Option<Vec<HostRoute>>, BackendError>;
    /// The counters of every running domain whose name carries rhyzome's prefix, in one call
    /// (libvirt's `virConnectGetAllDomainStats`), so that a metrics scrape costs one RPC
    /// whatever the number of guests. Which of them are this daemon's is the caller's to
    /// decide. Disk counters are read only for the domains whose UUID is in `block_stats_of`
    /// (one more bulk call), because reading them costs a monitor round trip per domain.
    fn all_counters(
        &self,
        block_stats_of: &std::collections::HashSet<String>,
    ) -> Result<Vec<DomainCounters>, BackendError>;
}

/// What [`Hypervisor::remove_network`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkRemoval {
    Removed,
    /// There was no network of that name.
    Absent,
    /// The network is not this daemon's (its mark, if any, is given); it was left alone.
    NotOurs(Option<network::NetworkMark>),
}

/// Prefix of every domain name rhyzome creates.
pub const DOMAIN_PREFIX: &str = "rhyzome-";

pub fn domain_name(instance: &str) -> String {
    format!("{DOMAIN_PREFIX}{instance}")
}
