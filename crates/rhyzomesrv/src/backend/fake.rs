//! In-memory [`Hypervisor`] for unit tests of the service. It checks and keeps the typed
//! definitions it is given (tests assert on them, not on XML), can be told to fail, but runs
//! nothing. A mutex guards its map; calls are instantaneous.

use super::network::{DhcpHost, HostRoute, NetworkDefinition, NetworkMark, NetworkStatus};
use super::{
    BackendError, DomainCounters, DomainStats, DomainStatus, Hypervisor, InterfaceKind,
    NetworkRemoval, NicCounters, NodeInfo, Notice, NoticeSink,
};
use super::{DomainDefinition, DomainMark};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct FakeBackend {
    inner: Mutex<FakeState>,
    /// Storage pools and their volumes (see `fake_storage.rs`).
    pub(super) storage: Mutex<super::fake_storage::FakeStorage>,
    /// Kernel and console volumes, and the host's facts (see `fake_host_files.rs`).
    pub(super) host_files: Mutex<super::fake_host_files::FakeHostFiles>,
}

/// What the fake knows of a domain: the definition it was created from (none for one
/// injected behind the daemon's back) and the mark libvirt would read from its metadata.
#[derive(Clone)]
struct FakeDomain {
    definition: Option<DomainDefinition>,
    mark: Option<DomainMark>,
}

#[derive(Default)]
struct FakeState {
    domains: BTreeMap<String, (DomainStatus, FakeDomain)>,
    fail_next_create: Option<BackendError>,
    creates: usize,
    created_names: Vec<String>,
    /// One per daemon sharing this fake hypervisor.
    sinks: Vec<NoticeSink>,
    /// Notices held back by [`FakeBackend::defer_notices`], in order.
    deferred: Option<Vec<Notice>>,
    /// Interfaces the fake host was told about; any other is `Unknown`.
    interfaces: BTreeMap<String, InterfaceKind>,
    /// Networks by libvirt name: the definition and whether it runs.
    networks: BTreeMap<String, (NetworkDefinition, bool)>,
    /// Networks another tool made: reported, never this fake's to define.
    foreign_networks: BTreeMap<String, NetworkStatus>,
    /// The host's routes; `None`: the host cannot be looked at.
    routes: Option<Vec<HostRoute>>,
    /// Makes the next `start_network` fail with this refusal.
    fail_next_network_start: Option<BackendError>,
    /// Counters set by [`FakeBackend::set_counters`], by UUID.
    counters: BTreeMap<String, DomainCounters>,
    /// Makes `all_counters` fail, as a libvirt that went away would.
    counters_fail: Option<BackendError>,
    /// How long `all_counters` takes, as a busy libvirt would (outside the lock).
    counters_delay: std::time::Duration,
    /// Set by [`FakeBackend::set_down`]: domain calls fail as an unreachable host's would.
    down: bool,
}

impl FakeBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the host unreachable (`true`) or reachable again: until then, domain calls
    /// fail with `Unavailable` while the domains stay as they were, as a remote host's guests
    /// run on while its libvirtd or network is down.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    fn reachable(&self) -> Result<(), BackendError> {
        if self.state().down {
            return Err(BackendError::Unavailable("fake host is down".into()));
        }
        Ok(())
    }

    /// Makes the next `create` fail with `err`.
    pub fn fail_next_create(&self, err: BackendError) {
        self.state().fail_next_create = Some(err);
    }

    /// Holds notices back until [`deliver_notices`](Self::deliver_notices), as libvirt's event
    /// thread may deliver an event after the call that caused it has returned.
    pub fn defer_notices(&self) {
        self.state().deferred.get_or_insert_with(Vec::new);
    }

    /// Delivers the notices held back, and stops holding them.
    pub fn deliver_notices(&self) {
        let (notices, sinks) = {
            let mut s = self.state();
            (s.deferred.take().unwrap_or_default(), s.sinks.clone())
        };
        for notice in notices {
            for sink in &sinks {
                sink(notice.clone());
            }
        }
    }

    /// Declares what the host interface `name` is.
    pub fn set_interface(&self, name: &str, kind: InterfaceKind) {
        self.state().interfaces.insert(name.to_string(), kind);
    }

    /// Declares the routes of the fake host.
    pub fn set_host_routes(&self, routes: Vec<HostRoute>) {
        self.state().routes = Some(routes);
    }

    /// Makes the next `start_network` fail with `err`.
    pub fn fail_next_network_start(&self, err: BackendError) {
        self.state().fail_next_network_start = Some(err);
    }

    /// Adds a network behind the daemon's back, as another tool (or daemon) would.
    pub fn inject_network(&self, status: NetworkStatus) {
        self.state()
            .foreign_networks
            .insert(status.libvirt_name.clone(), status);
    }

    /// The definition of a network this fake defined, and whether it runs.
    pub fn network_definition(&self, libvirt_name: &str) -> Option<(NetworkDefinition, bool)> {
        self.state().networks.get(libvirt_name).cloned()
    }

    /// Simulates a host reboot for networks: every network this fake defined is gone.
    pub fn lose_networks(&self) {
        self.state().networks.clear();
    }

    /// Simulates a guest that powered off: its transient domain disappears, and watchers hear
    /// of it as they would from libvirt.
    pub fn vanish(&self, uuid: &str) {
        self.remove(uuid, "shutdown");
    }

    /// Simulates `virsh destroy` by another tool.
    pub fn destroy_outside(&self, uuid: &str) {
        self.remove(uuid, "destroyed");
    }

    /// Removes a domain and, if there was one, tells every watcher that it stopped, outside
    /// the lock (a sink may call back).
    fn remove(&self, uuid: &str, detail: &str) -> bool {
        let notice = Notice::Lifecycle {
            uuid: uuid.to_string(),
            event: "stopped".into(),
            detail: detail.into(),
        };
        let (removed, sinks) = {
            let mut s = self.state();
            let removed = s.domains.remove(uuid).is_some();
            match s.deferred.as_mut() {
                Some(deferred) if removed => {
                    deferred.push(notice.clone());
                    (removed, Vec::new())
                }
                _ => (removed, s.sinks.clone()),
            }
        };
        if removed {
            for sink in sinks {
                sink(notice.clone());
            }
        }
        removed
    }

    /// Adds a domain behind the daemon's back, as another tool (`mark: None`), another
    /// daemon or an older release would.
    pub fn inject(&self, status: DomainStatus, mark: Option<DomainMark>) {
        let domain = FakeDomain {
            definition: None,
            mark,
        };
        self.state()
            .domains
            .insert(status.uuid.clone(), (status, domain));
    }

    /// The definition the domain with this UUID was created from (`None` for an injected or
    /// missing one).
    pub fn definition(&self, uuid: &str) -> Option<DomainDefinition> {
        self.state()
            .domains
            .get(uuid)
            .and_then(|(_, d)| d.definition.clone())
    }

    /// What `all_counters` reports for the domain with this UUID while it exists (its
    /// `uuid` and `name` are the domain's own).
    pub fn set_counters(&self, uuid: &str, counters: DomainCounters) {
        self.state().counters.insert(uuid.to_string(), counters);
    }

    /// Makes `all_counters` fail with `err` (or succeed again, with `None`).
    pub fn fail_counters(&self, err: Option<BackendError>) {
        self.state().counters_fail = err;
    }

    /// Makes `all_counters` take `delay` before it answers.
    pub fn slow_counters(&self, delay: std::time::Duration) {
        self.state().counters_delay = delay;
    }

    pub fn creates(&self) -> usize {
        self.state().creates
    }

    /// Domain names in the order they were created.
    pub fn created_names(&self) -> Vec<String> {
        self.state().created_names.clone()
    }
}

impl Hypervisor for FakeBackend {
    fn watch(&self, sink: NoticeSink) -> Result<(), BackendError> {
        self.state().sinks.push(sink);
        Ok(())
    }

    fn uri(&self) -> String {
        "fake:///".into()
    }

    fn node_info(&self) -> Result<NodeInfo, BackendError> {
        self.reachable()?;
        self.fake_node_info()
    }

    fn create(&self, def: &DomainDefinition) -> Result<(), BackendError> {
        self.reachable()?;
        let mut s = self.state();
        if let Some(e) = s.fail_next_create.take() {
            return Err(e);
        }
        check(def)?;
        if s.domains.contains_key(&def.uuid)
            || s.domains.values().any(|(d, _)| d.name == def.domain_name)
        {
            return Err(BackendError::Rejected {
                message: format!("domain '{}' already exists", def.domain_name),
            });
        }
        s.creates += 1;
        s.created_names.push(def.domain_name.clone());
        s.domains.insert(
            def.uuid.clone(),
            (
                DomainStatus {
                    uuid: def.uuid.clone(),
                    name: def.domain_name.clone(),
                    active: true,
                },
                FakeDomain {
                    definition: Some(def.clone()),
                    mark: Some(def.mark()),
                },
            ),
        );
        Ok(())
    }

    fn destroy(&self, uuid: &str) -> Result<bool, BackendError> {
        self.reachable()?;
        Ok(self.remove(uuid, "destroyed"))
    }

    fn list(&self) -> Result<Vec<DomainStatus>, BackendError> {
        self.reachable()?;
        Ok(self
            .state()
            .domains
            .values()
            .map(|(d, _)| d.clone())
            .collect())
    }

    fn status(&self, uuid: &str) -> Result<Option<DomainStatus>, BackendError> {
        self.reachable()?;
        Ok(self.state().domains.get(uuid).map(|(d, _)| d.clone()))
    }

    /// Fixed numbers: the fake runs no guest.
    fn stats(&self, uuid: &str, macs: &[String]) -> Result<Option<DomainStats>, BackendError> {
        Ok(self
            .state()
            .domains
            .contains_key(uuid)
            .then(|| DomainStats {
                cpu_time_ns: 1_000_000,
                memory_kib: 32 << 10,
                rss_kib: None,
                nics: vec![NicCounters::default(); macs.len()],
            }))
    }

    /// The counters set with [`FakeBackend::set_counters`], else zeros, for every domain (disk
    /// counters included whatever `block_stats_of` says: they are the test's to set).
    fn all_counters(
        &self,
        _block_stats_of: &std::collections::HashSet<String>,
    ) -> Result<Vec<DomainCounters>, BackendError> {
        let delay = self.state().counters_delay;
        std::thread::sleep(delay);
        let s = self.state();
        if let Some(e) = &s.counters_fail {
            return Err(e.clone());
        }
        Ok(s.domains
            .values()
            .filter(|(d, _)| d.name.starts_with(super::DOMAIN_PREFIX))
            .map(|(d, _)| DomainCounters {
                uuid: d.uuid.clone(),
                name: d.name.clone(),
                ..s.counters.get(&d.uuid).cloned().unwrap_or_default()
            })
            .collect())
    }

    fn interface_kind(&self, name: &str) -> Result<InterfaceKind, BackendError> {
        Ok(self
            .state()
            .interfaces
            .get(name)
            .cloned()
            .unwrap_or(InterfaceKind::Unknown))
    }

    fn mark(&self, uuid: &str) -> Result<Option<DomainMark>, BackendError> {
        self.reachable()?;
        Ok(self
            .state()
            .domains
            .get(uuid)
            .and_then(|(_, d)| d.mark.clone()))
    }

    fn named(&self, name: &str) -> Result<Option<(String, Option<DomainMark>)>, BackendError> {
        Ok(self
            .state()
            .domains
            .values()
            .find(|(d, _)| d.name == name)
            .map(|(status, d)| (status.uuid.clone(), d.mark.clone())))
    }

    fn define_network(&self, def: &NetworkDefinition) -> Result<(), BackendError> {
        let mut s = self.state();
        if s.foreign_networks.contains_key(&def.libvirt_name) {
            return Err(BackendError::Rejected {
                message: format!("network '{}' already exists", def.libvirt_name),
            });
        }
        let active = s
            .networks
            .get(&def.libvirt_name)
            .is_some_and(|(_, active)| *active);
        s.networks
            .insert(def.libvirt_name.clone(), (def.clone(), active));
        Ok(())
    }

    fn start_network(&self, libvirt_name: &str) -> Result<(), BackendError> {
        let mut s = self.state();
        if let Some(e) = s.fail_next_network_start.take() {
            return Err(e);
        }
        match s.networks.get_mut(libvirt_name) {
            Some((_, active)) => {
                *active = true;
                Ok(())
            }
            None => Err(BackendError::Other(format!(
                "Network not found: no network with matching name '{libvirt_name}'"
            ))),
        }
    }

    fn remove_network(
        &self,
        libvirt_name: &str,
        daemon: &str,
    ) -> Result<NetworkRemoval, BackendError> {
        let mut s = self.state();
        if let Some(foreign) = s.foreign_networks.get(libvirt_name) {
            return Ok(NetworkRemoval::NotOurs(foreign.mark.clone()));
        }
        match s.networks.get(libvirt_name) {
            None => Ok(NetworkRemoval::Absent),
            Some((def, _)) if def.mark.daemon != daemon => {
                Ok(NetworkRemoval::NotOurs(Some(def.mark.clone())))
            }
            Some(_) => {
                s.networks.remove(libvirt_name);
                Ok(NetworkRemoval::Removed)
            }
        }
    }

    fn network(&self, libvirt_name: &str) -> Result<Option<NetworkStatus>, BackendError> {
        Ok(self
            .networks()?
            .into_iter()
            .find(|n| n.libvirt_name == libvirt_name))
    }

    fn networks(&self) -> Result<Vec<NetworkStatus>, BackendError> {
        let s = self.state();
        let own = s.networks.values().map(|(def, active)| NetworkStatus {
            libvirt_name: def.libvirt_name.clone(),
            active: *active,
            mark: Some(NetworkMark::clone(&def.mark)),
            subnets: vec![def.subnet],
            bridge: Some(def.bridge.clone()),
            hosts: def.hosts.clone(),
        });
        Ok(own.chain(s.foreign_networks.values().cloned()).collect())
    }

    fn set_dhcp_host(
        &self,
        libvirt_name: &str,
        host: &DhcpHost,
        present: bool,
    ) -> Result<(), BackendError> {
        let mut s = self.state();
        let Some((def, _)) = s.networks.get_mut(libvirt_name) else {
            return Err(BackendError::Other(format!(
                "Network not found: no network with matching name '{libvirt_name}'"
            )));
        };
        def.hosts.retain(|h| h.mac != host.mac);
        if present {
            def.hosts.push(host.clone());
        }
        Ok(())
    }

    fn host_routes(&self) -> Result<Option<Vec<HostRoute>>, BackendError> {
        Ok(self.state().routes.clone())
    }
}

/// What libvirt would refuse, or what no definition of the service may contain: a domain
/// name without rhyzome's prefix, no kernel, two NICs with one MAC or one PCI slot, or a slot
/// outside bus 0's free slots (3 to 31).
fn check(def: &DomainDefinition) -> Result<(), BackendError> {
    let refuse = |message: String| Err(BackendError::Rejected { message });
    if !def.domain_name.starts_with(super::DOMAIN_PREFIX) {
        return refuse(format!(
            "domain name {:?} lacks the prefix",
            def.domain_name
        ));
    }
    if def.kernel.as_os_str().is_empty() || def.memory_mib == 0 || def.vcpus == 0 {
        return refuse(format!("incomplete definition of {:?}", def.domain_name));
    }
    let nics = &def.nics;
    for (i, nic) in nics.iter().enumerate() {
        if nics[..i].iter().any(|n| n.mac == nic.mac) {
            return refuse(format!("MAC {} is used twice", nic.mac));
        }
        if let Some(slot) = nic.pci_slot {
            if !(3..=31).contains(&slot) || nics[..i].iter().any(|n| n.pci_slot == Some(slot)) {
                return refuse(format!("PCI slot {slot} is taken or out of range"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Nic;

    fn definition() -> DomainDefinition {
        let nic = |i: u8| Nic {
            bridge: format!("br{i}"),
            mac: format!("02:00:00:00:00:0{i}"),
            pci_slot: Some(3 + i),
            emulated: None,
            rate_bps: None,
        };
        DomainDefinition {
            domain_type: "test",
            domain_name: "rhyzome-a".into(),
            uuid: "11111111-1111-1111-1111-111111111111".into(),
            instance_name: "a".into(),
            hostname: "h".into(),
            daemon_id: "d".into(),
            memory_mib: 32,
            vcpus: 1,
            kernel: "/blobs/sha256-00".into(),
            cmdline: String::new(),
            console_log: "/consoles/a.log".into(),
            nics: vec![nic(0), nic(1)],
            disks: Vec::new(),
        }
    }

    #[test]
    fn definitions_are_checked_and_kept() {
        let fake = FakeBackend::new();
        let mut twice = definition();
        twice.nics[1].mac = twice.nics[0].mac.clone();
        let mut slot = definition();
        slot.nics[1].pci_slot = Some(3);
        let mut unprefixed = definition();
        unprefixed.domain_name = "a".into();
        for bad in [twice, slot, unprefixed] {
            assert!(
                matches!(fake.create(&bad), Err(BackendError::Rejected { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(fake.creates(), 0);
        let good = definition();
        fake.create(&good).unwrap();
        let kept = fake.definition(&good.uuid).unwrap();
        assert_eq!(kept.nics.len(), 2);
        assert_eq!(fake.mark(&good.uuid).unwrap(), Some(good.mark()));
    }
}
