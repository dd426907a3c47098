//! The typed definition of a domain, as the service hands it to a
//! [`Hypervisor`](super::Hypervisor): backend-neutral (no XML), so that each backend renders
//! it its own way (libvirt: [`super::libvirt::domain_xml`]) and the fake backend can check and
//! keep it. Also rhyzome's mark on a domain ([`DomainMark`]), which backends read back.

use std::path::PathBuf;

/// Everything that goes into one domain definition.
#[derive(Debug, Clone)]
pub struct DomainDefinition {
    /// `kvm`, `qemu` or `test`.
    pub domain_type: &'static str,
    pub domain_name: String,
    pub uuid: String,
    pub instance_name: String,
    pub hostname: String,
    /// Identity of the daemon that creates the domain ([`crate::store::Store::daemon_id`]).
    pub daemon_id: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub kernel: PathBuf,
    pub cmdline: String,
    pub console_log: PathBuf,
    /// Every NIC, in the instance's order (the order of its attachments); empty for an
    /// instance without a network.
    pub nics: Vec<Nic>,
    /// Block devices, in manifest order (Solo5 binds them in PCI order).
    pub disks: Vec<Disk>,
}

/// A virtio-blk disk backed by a storage volume.
#[derive(Debug, Clone)]
pub struct Disk {
    pub pool: String,
    /// The volume's name in `pool` (the backend's, not the user's).
    pub volume: String,
    /// `raw` or `qcow2`.
    pub format: &'static str,
    pub read_only: bool,
    /// Fixed PCI slot on bus 0, after the NICs'.
    pub pci_slot: u8,
}

#[derive(Debug, Clone)]
pub struct Nic {
    pub bridge: String,
    pub mac: String,
    /// Fixed PCI slot on bus 0: Solo5 binds NICs to manifest devices in PCI slot order, so a
    /// multi-NIC guest must not leave the order to libvirt's allocator.
    pub pci_slot: Option<u8>,
    /// On an emulated network: the NIC exchanges its frames with the network's link emulator
    /// over UDP, instead of a tap on `bridge`: on the loopback of libvirt's network namespace
    /// on the primary host, across the network between hosts from a remote one.
    pub emulated: Option<EmulatedPort>,
    /// Shaping of what the NIC sends, on a plain network (libvirt's `<bandwidth>`), in bits
    /// per second.
    pub rate_bps: Option<u64>,
}

/// The two UDP ends of a NIC on an emulated network: both on 127.0.0.1 on the primary host;
/// on a remote host, the controller's `LinkEmulatorAddress` and the host's `FrameAddress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulatedPort {
    /// Where the emulator listens (every NIC of the network sends there).
    pub emulator_address: std::net::Ipv4Addr,
    pub emulator_port: u16,
    /// The NIC's own address and port: QEMU sends from it and receives on it.
    pub local_address: std::net::Ipv4Addr,
    pub local_port: u16,
}

impl DomainDefinition {
    /// The mark a domain made from this definition carries: this daemon's identity and host.
    pub fn mark(&self) -> DomainMark {
        DomainMark {
            daemon: Some(self.daemon_id.clone()),
            host: self.hostname.clone(),
        }
    }
}

/// Rhyzome's mark on a domain, read back from its `<metadata>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainMark {
    /// The identity of the daemon that made the domain; `None` for a domain made by a
    /// release before identities (`LEGACY_METADATA_NAMESPACE` of the libvirt backend).
    pub daemon: Option<String>,
    /// The `Hostname` of that daemon (informational: several daemons may share one).
    pub host: String,
}

impl std::fmt::Display for DomainMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.daemon {
            Some(daemon) => write!(f, "rhyzome daemon {daemon} (host {:?})", self.host),
            None => write!(
                f,
                "a rhyzome daemon of a release without identities (host {:?})",
                self.host
            ),
        }
    }
}
