//! [`Hypervisor`] on real libvirt, through the `virt` crate.
//!
//! One shared connection (libvirt connections are thread-safe, and `virt::Connect` is
//! `Send + Sync`) serves concurrent callers. When libvirtd goes away the connection breaks;
//! idempotent calls then reconnect once and retry, and `create` reports the error so that its
//! caller, not a blind retry, decides (a retried create could double-start a guest).
//!
//! Lifecycle events arrive through libvirt's event loop ([`events`]); a connection closed by
//! libvirt (libvirtd restarted) is noticed by a close callback, replaced on the next call, and
//! the watcher is re-subscribed and told [`Notice::Reconnected`] so it can catch up on what
//! it missed.

pub mod bulk;
pub mod domain_xml;
pub mod events;
pub mod host;
mod host_files;
pub mod network_xml;
pub mod node;
mod storage;

use super::network::{DhcpHost, HostRoute, NetworkDefinition, NetworkStatus};
use super::{
    BackendError, DomainCounters, DomainStats, DomainStatus, Hypervisor, InterfaceKind,
    NetworkRemoval, NicCounters, NodeInfo, Notice, NoticeSink, DOMAIN_PREFIX,
};
use super::{DomainDefinition, DomainMark};
use crate::config::DomainTypeSetting;
use domain_xml::{MarkVersion, LEGACY_METADATA_NAMESPACE, METADATA_NAMESPACE};
use std::ffi::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorDomain, ErrorNumber};
use virt::network::Network;
use virt::sys;

pub struct LibvirtBackend {
    uri: String,
    conn: Mutex<Option<Live>>,
    sink: Mutex<Option<NoticeSink>>,
    /// Whether a connection has been made before, so that the next one is a reconnection.
    connected_once: AtomicBool,
}

/// The current connection and what was registered on it.
struct Live {
    conn: Connect,
    closed: Arc<AtomicBool>,
    lifecycle_id: Option<c_int>,
}

impl LibvirtBackend {
    /// Opens the connection now, so that a wrong URI or a stopped libvirtd is reported at
    /// daemon start rather than at the first request.
    pub fn connect(uri: &str) -> Result<Self, BackendError> {
        // libvirt prints every error to stderr by default; errors are returned and logged
        // through tracing instead (an absent domain is often an expected answer).
        virt::error::clear_error_callback();
        events::ensure_event_loop()?;
        let backend = LibvirtBackend {
            uri: uri.to_string(),
            conn: Mutex::new(None),
            sink: Mutex::new(None),
            connected_once: AtomicBool::new(false),
        };
        backend.connection()?;
        Ok(backend)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current_sink(&self) -> Option<NoticeSink> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn connection(&self) -> Result<Connect, BackendError> {
        let mut slot = self.slot();
        match slot.as_ref() {
            Some(live) if !live.closed.load(Ordering::SeqCst) => return Ok(live.conn.clone()),
            Some(_) => Self::abandon(slot.take()),
            None => {}
        }
        let conn = Connect::open(Some(&self.uri))
            .map_err(|e| BackendError::Unavailable(format!("{}: {}", self.uri, e.message())))?;
        let closed = events::watch_close(&conn);
        let sink = self.current_sink();
        let lifecycle_id = match &sink {
            Some(sink) => Some(
                events::register_lifecycle(&conn, sink.clone())
                    .map_err(|e| BackendError::Other(e.message().to_string()))?,
            ),
            None => None,
        };
        *slot = Some(Live {
            conn: conn.clone(),
            closed,
            lifecycle_id,
        });
        drop(slot);
        let reconnected = self.connected_once.swap(true, Ordering::SeqCst);
        tracing::info!(uri = %self.uri, reconnected, "connected to libvirt");
        if reconnected {
            if let Some(sink) = sink {
                sink(Notice::Reconnected);
            }
        }
        Ok(conn)
    }

    fn abandon(live: Option<Live>) {
        if let Some(live) = live {
            if let Some(id) = live.lifecycle_id {
                events::unregister_lifecycle(&live.conn, id);
            }
            events::unregister_close(&live.conn);
        }
    }

    fn forget_connection(&self) {
        let old = self.slot().take();
        Self::abandon(old);
    }

    /// Runs an idempotent call, reconnecting once if the connection broke.
    fn idempotent<T>(
        &self,
        f: impl Fn(&Connect) -> Result<T, VirtError>,
    ) -> Result<T, BackendError> {
        let conn = self.connection()?;
        match f(&conn) {
            Ok(v) => Ok(v),
            Err(e) if is_connection_error(&e, &conn) => {
                tracing::warn!(error = %e.message(), "libvirt connection lost; reconnecting");
                drop(conn);
                self.forget_connection();
                let conn = self.connection()?;
                f(&conn).map_err(classify)
            }
            Err(e) => Err(classify(e)),
        }
    }

    fn lookup(conn: &Connect, uuid: &str) -> Result<Option<Domain>, VirtError> {
        match conn.lookup_domain_by_uuid_string(uuid) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is_no_domain(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Chooses the domain type for guests. `auto` picks `kvm` only when KVM really serves
    /// guests here: libvirt must offer it, and `/dev/kvm` must not be the nested paravirtual
    /// `kvm_pvm`, under which Solo5 guests crash.
    pub fn domain_type(&self, setting: DomainTypeSetting) -> Result<&'static str, BackendError> {
        let caps = match setting {
            DomainTypeSetting::Auto => self.idempotent(|c| c.capabilities())?,
            _ => String::new(),
        };
        Ok(choose_domain_type(
            setting,
            &HostFacts {
                libvirt_offers_kvm: caps.contains("<domain type='kvm'"),
                dev_kvm: Path::new("/dev/kvm").exists(),
                kvm_pvm: Path::new("/sys/module/kvm_pvm").exists(),
            },
        ))
    }
}

/// What decides between `kvm` and `qemu`.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts {
    pub libvirt_offers_kvm: bool,
    pub dev_kvm: bool,
    pub kvm_pvm: bool,
}

pub fn choose_domain_type(setting: DomainTypeSetting, facts: &HostFacts) -> &'static str {
    match setting {
        DomainTypeSetting::Kvm => "kvm",
        DomainTypeSetting::Qemu => "qemu",
        DomainTypeSetting::Test => "test",
        DomainTypeSetting::Auto => {
            if facts.dev_kvm && facts.libvirt_offers_kvm && !facts.kvm_pvm {
                "kvm"
            } else {
                "qemu"
            }
        }
    }
}

fn is_no_network(e: &VirtError) -> bool {
    matches!(
        e.code(),
        virt::enumutil::Enum::Known(ErrorNumber::NoNetwork)
    )
}

fn lookup_network(conn: &Connect, name: &str) -> Result<Option<Network>, VirtError> {
    match conn.lookup_network_by_name(name) {
        Ok(n) => Ok(Some(n)),
        Err(e) if is_no_network(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn network_status(n: &Network) -> Result<NetworkStatus, VirtError> {
    let name = n.name()?;
    let active = n.is_active()?;
    Ok(network_xml::read(&name, active, &n.xml_desc(0)?))
}

/// libvirt's refusal of a network definition or start is about the request (a subnet or
/// bridge in use), not a broken connection: the caller maps it to the field at fault.
fn refused(e: BackendError) -> BackendError {
    match e {
        BackendError::Other(message) => BackendError::Rejected { message },
        e => e,
    }
}

fn is_no_domain(e: &VirtError) -> bool {
    matches!(e.code(), virt::enumutil::Enum::Known(ErrorNumber::NoDomain))
}

fn is_connection_error(e: &VirtError, conn: &Connect) -> bool {
    let rpc = matches!(e.domain(), virt::enumutil::Enum::Known(ErrorDomain::Rpc))
        || matches!(
            e.code(),
            virt::enumutil::Enum::Known(ErrorNumber::NoConnect | ErrorNumber::Rpc)
        );
    rpc || !conn.is_alive().unwrap_or(false)
}

fn classify(e: VirtError) -> BackendError {
    if matches!(e.domain(), virt::enumutil::Enum::Known(ErrorDomain::Rpc))
        || matches!(
            e.code(),
            virt::enumutil::Enum::Known(ErrorNumber::NoConnect | ErrorNumber::Rpc)
        )
    {
        BackendError::Unavailable(e.message().to_string())
    } else {
        BackendError::Other(e.message().to_string())
    }
}

impl Hypervisor for LibvirtBackend {
    fn uri(&self) -> String {
        self.uri.clone()
    }

    fn node_info(&self) -> Result<NodeInfo, BackendError> {
        self.idempotent(node::node_info)
    }

    fn watch(&self, sink: NoticeSink) -> Result<(), BackendError> {
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink.clone());
        let mut slot = self.slot();
        if let Some(live) = slot.as_mut() {
            if let Some(old) = live.lifecycle_id.take() {
                events::unregister_lifecycle(&live.conn, old);
            }
            live.lifecycle_id = Some(
                events::register_lifecycle(&live.conn, sink)
                    .map_err(|e| BackendError::Other(e.message().to_string()))?,
            );
        }
        Ok(())
    }

    fn create(&self, def: &DomainDefinition) -> Result<(), BackendError> {
        let xml = domain_xml::render(def).map_err(|e| BackendError::Other(e.to_string()))?;
        let conn = self.connection()?;
        match conn.create_domain_xml(&xml, 0) {
            Ok(_domain) => Ok(()),
            Err(e) => {
                if is_connection_error(&e, &conn) {
                    drop(conn);
                    self.forget_connection();
                    return Err(BackendError::Unavailable(e.message().to_string()));
                }
                Err(BackendError::Rejected {
                    message: e.message().to_string(),
                })
            }
        }
    }

    fn destroy(&self, uuid: &str) -> Result<bool, BackendError> {
        self.idempotent(|c| match Self::lookup(c, uuid)? {
            None => Ok(false),
            Some(d) => match d.destroy() {
                Ok(()) => Ok(true),
                // It powered off between lookup and destroy.
                Err(e) if is_no_domain(&e) || !d.is_active().unwrap_or(true) => Ok(false),
                Err(e) => Err(e),
            },
        })
    }

    fn list(&self) -> Result<Vec<DomainStatus>, BackendError> {
        self.idempotent(|c| {
            let domains = c.list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)?;
            let mut out = Vec::new();
            for d in domains {
                let name = d.name()?;
                if name.starts_with(DOMAIN_PREFIX) {
                    out.push(DomainStatus {
                        uuid: d.uuid_string()?,
                        name,
                        active: true,
                    });
                }
            }
            Ok(out)
        })
    }

    fn status(&self, uuid: &str) -> Result<Option<DomainStatus>, BackendError> {
        self.idempotent(|c| {
            let Some(d) = Self::lookup(c, uuid)? else {
                return Ok(None);
            };
            let active = match d.is_active() {
                Ok(a) => a,
                Err(e) if is_no_domain(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            Ok(Some(DomainStatus {
                uuid: uuid.to_string(),
                name: d.name()?,
                active,
            }))
        })
    }

    fn stats(&self, uuid: &str, macs: &[String]) -> Result<Option<DomainStats>, BackendError> {
        // libvirt reports -1 for a counter it does not have.
        let count = |v: i64| u64::try_from(v).unwrap_or(0);
        self.idempotent(|c| {
            let Some(d) = Self::lookup(c, uuid)? else {
                return Ok(None);
            };
            let info = match d.info() {
                Ok(i) => i,
                Err(e) if is_no_domain(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            // QEMU's resident size comes from /proc, so it is there without a balloon device.
            let rss_kib = d.memory_stats(0).ok().and_then(|stats| {
                stats
                    .iter()
                    .find(|s| s.tag == sys::VIR_DOMAIN_MEMORY_STAT_RSS)
                    .map(|s| s.val)
            });
            let mut nics = Vec::with_capacity(macs.len());
            for mac in macs {
                // The interface is named by its MAC: no need to learn its tap's name.
                let s = d.interface_stats(mac)?;
                nics.push(NicCounters {
                    rx_bytes: count(s.rx_bytes),
                    rx_packets: count(s.rx_packets),
                    tx_bytes: count(s.tx_bytes),
                    tx_packets: count(s.tx_packets),
                });
            }
            Ok(Some(DomainStats {
                cpu_time_ns: info.cpu_time,
                memory_kib: info.memory,
                rss_kib,
                nics,
            }))
        })
    }

    fn all_counters(
        &self,
        block_stats_of: &std::collections::HashSet<String>,
    ) -> Result<Vec<DomainCounters>, BackendError> {
        self.idempotent(|conn| bulk::all_counters(conn, block_stats_of))
    }

    /// Asks libvirt's interface driver (the udev backend on Debian), which sees the network
    /// namespace libvirtd runs in: a check of `/sys/class/net` in the daemon's own namespace
    /// would be wrong whenever the two differ (the lab; a remote libvirt).
    fn interface_kind(&self, name: &str) -> Result<InterfaceKind, BackendError> {
        // The test driver's host is fiction: its interfaces say nothing about bridges.
        if self.uri.starts_with("test:") {
            return Ok(InterfaceKind::Unknown);
        }
        self.idempotent(|c| match c.lookup_interface_by_name(name) {
            Ok(iface) => Ok(interface_kind_from_xml(&iface.xml_desc(0)?)),
            Err(e) => match e.code() {
                virt::enumutil::Enum::Known(ErrorNumber::NoInterface) => Ok(InterfaceKind::Missing),
                virt::enumutil::Enum::Known(ErrorNumber::NoSupport) => Ok(InterfaceKind::Unknown),
                _ => Err(e),
            },
        })
    }

    fn define_network(&self, def: &NetworkDefinition) -> Result<(), BackendError> {
        let xml = network_xml::render(def).map_err(|e| BackendError::Other(e.to_string()))?;
        // Defining again replaces a definition: idempotent.
        self.idempotent(|c| c.define_network_xml(&xml).map(|_| ()))
            .map_err(refused)
    }

    fn start_network(&self, libvirt_name: &str) -> Result<(), BackendError> {
        self.idempotent(|c| {
            let n = c.lookup_network_by_name(libvirt_name)?;
            if n.is_active()? {
                return Ok(());
            }
            n.create()
        })
        .map_err(refused)
    }

    fn remove_network(
        &self,
        libvirt_name: &str,
        daemon: &str,
    ) -> Result<NetworkRemoval, BackendError> {
        self.idempotent(|c| {
            let Some(n) = lookup_network(c, libvirt_name)? else {
                return Ok(NetworkRemoval::Absent);
            };
            let status = network_status(&n)?;
            if status.mark.as_ref().is_none_or(|m| m.daemon != daemon) {
                return Ok(NetworkRemoval::NotOurs(status.mark));
            }
            if n.is_active()? {
                match n.destroy() {
                    Ok(()) => {}
                    Err(e) if is_no_network(&e) => return Ok(NetworkRemoval::Removed),
                    Err(e) => return Err(e),
                }
            }
            // A transient network is gone once stopped.
            match n.is_persistent() {
                Ok(true) => match n.undefine() {
                    Ok(()) => {}
                    Err(e) if is_no_network(&e) => {}
                    Err(e) => return Err(e),
                },
                Ok(false) => {}
                Err(e) if is_no_network(&e) => {}
                Err(e) => return Err(e),
            }
            Ok(NetworkRemoval::Removed)
        })
    }

    fn network(&self, libvirt_name: &str) -> Result<Option<NetworkStatus>, BackendError> {
        self.idempotent(|c| match lookup_network(c, libvirt_name)? {
            None => Ok(None),
            Some(n) => match network_status(&n) {
                Ok(s) => Ok(Some(s)),
                Err(e) if is_no_network(&e) => Ok(None),
                Err(e) => Err(e),
            },
        })
    }

    fn networks(&self) -> Result<Vec<NetworkStatus>, BackendError> {
        self.idempotent(|c| {
            let mut out = Vec::new();
            for n in c.list_all_networks(0)? {
                match network_status(&n) {
                    Ok(s) => out.push(s),
                    // Removed while listed.
                    Err(e) if is_no_network(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
    }

    fn set_dhcp_host(
        &self,
        libvirt_name: &str,
        host: &DhcpHost,
        present: bool,
    ) -> Result<(), BackendError> {
        let element =
            network_xml::host_element(host).map_err(|e| BackendError::Other(e.to_string()))?;
        self.idempotent(|c| {
            let n = c.lookup_network_by_name(libvirt_name)?;
            let current = network_xml::read(libvirt_name, false, &n.xml_desc(0)?);
            let has_it = current.hosts.contains(host);
            if has_it == present {
                return Ok(());
            }
            let mut flags = sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG;
            if n.is_active()? {
                flags |= sys::VIR_NETWORK_UPDATE_AFFECT_LIVE;
            }
            let command = if present {
                sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST
            } else {
                sys::VIR_NETWORK_UPDATE_COMMAND_DELETE
            };
            n.update(
                command,
                sys::VIR_NETWORK_SECTION_IP_DHCP_HOST,
                -1,
                &element,
                flags,
            )
        })
        .map_err(refused)
    }

    fn host_routes(&self) -> Result<Option<Vec<HostRoute>>, BackendError> {
        host::routes(&self.uri)
            .map_err(|e| BackendError::Other(format!("cannot read the libvirt host's routes: {e}")))
    }

    fn mark(&self, uuid: &str) -> Result<Option<DomainMark>, BackendError> {
        self.idempotent(|c| match Self::lookup(c, uuid)? {
            None => Ok(None),
            Some(d) => read_mark(&d),
        })
    }

    fn named(&self, name: &str) -> Result<Option<(String, Option<DomainMark>)>, BackendError> {
        self.idempotent(|c| {
            let d = match c.lookup_domain_by_name(name) {
                Ok(d) => d,
                Err(e) if is_no_domain(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            Ok(Some((d.uuid_string()?, read_mark(&d)?)))
        })
    }
}

/// Rhyzome's mark on `d`: the current namespace, else the legacy one.
fn read_mark(d: &Domain) -> Result<Option<DomainMark>, VirtError> {
    for (namespace, version) in [
        (METADATA_NAMESPACE, MarkVersion::Current),
        (LEGACY_METADATA_NAMESPACE, MarkVersion::Legacy),
    ] {
        match d.metadata(sys::VIR_DOMAIN_METADATA_ELEMENT as i32, Some(namespace), 0) {
            Ok(xml) => return Ok(domain_xml::mark_from_metadata(&xml, version)),
            Err(e)
                if matches!(
                    e.code(),
                    virt::enumutil::Enum::Known(ErrorNumber::NoDomainMetadata)
                ) => {}
            Err(e) if is_no_domain(&e) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The kind in `<interface type='bridge' name='br0'>` (libvirt's interface XML).
fn interface_kind_from_xml(xml: &str) -> InterfaceKind {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e))
                if e.local_name().as_ref() == b"interface" =>
            {
                return match e
                    .try_get_attribute("type")
                    .ok()
                    .flatten()
                    .and_then(|a| a.unescape_value().ok())
                {
                    Some(t) if t == "bridge" => InterfaceKind::Bridge,
                    Some(t) => InterfaceKind::Other(t.into_owned()),
                    None => InterfaceKind::Unknown,
                };
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return InterfaceKind::Unknown,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_kinds_are_read_from_libvirt_xml() {
        // As libvirt 9.0's udev backend prints them (lab: rzbr0 and lo).
        let bridge = "<interface type='bridge' name='rzbr0'>\n  <mtu size='1500'/>\n  \
                      <bridge stp='off' delay='0'>\n  </bridge>\n</interface>\n";
        assert_eq!(interface_kind_from_xml(bridge), InterfaceKind::Bridge);
        let lo = "<interface type='ethernet' name='lo'>\n  <mtu size='65536'/>\n</interface>";
        assert_eq!(
            interface_kind_from_xml(lo),
            InterfaceKind::Other("ethernet".into())
        );
        assert_eq!(interface_kind_from_xml("garbage"), InterfaceKind::Unknown);
    }

    #[test]
    fn auto_never_picks_paravirtual_kvm() {
        let facts = |libvirt_offers_kvm, dev_kvm, kvm_pvm| HostFacts {
            libvirt_offers_kvm,
            dev_kvm,
            kvm_pvm,
        };
        let auto = DomainTypeSetting::Auto;
        assert_eq!(choose_domain_type(auto, &facts(true, true, false)), "kvm");
        assert_eq!(choose_domain_type(auto, &facts(true, true, true)), "qemu");
        assert_eq!(choose_domain_type(auto, &facts(false, true, false)), "qemu");
        assert_eq!(choose_domain_type(auto, &facts(true, false, false)), "qemu");
        assert_eq!(
            choose_domain_type(DomainTypeSetting::Kvm, &facts(false, false, true)),
            "kvm"
        );
        assert_eq!(
            choose_domain_type(DomainTypeSetting::Qemu, &facts(true, true, false)),
            "qemu"
        );
    }
}
