//! What the service asks of the hypervisor's network driver, in types: the definition of a
//! managed network, the mark that says which daemon made it, and what the hypervisor reports
//! about networks and routes on its host. Pure data; the libvirt backend turns it into XML
//! (`backend/libvirt/network_xml.rs`), the fake keeps it as is.

use rhyzome_api::networks::Ipv4Subnet;
use rhyzome_api::ForwardMode;
use std::net::Ipv4Addr;

/// Prefix of every libvirt network name rhyzome makes.
pub const NETWORK_PREFIX: &str = "rhyzome-";

/// The libvirt network that backs the managed network `name`.
pub fn libvirt_network_name(name: &str) -> String {
    format!("{NETWORK_PREFIX}{name}")
}

/// Everything that goes into one libvirt network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDefinition {
    pub libvirt_name: String,
    /// The bridge libvirt makes (at most 15 bytes, the kernel's limit).
    pub bridge: String,
    pub subnet: Ipv4Subnet,
    /// The host's address on the bridge.
    pub gateway: Ipv4Addr,
    pub mode: ForwardMode,
    /// Whether libvirt runs DHCP (dnsmasq) on the network, with `hosts` as static entries.
    pub dhcp: bool,
    pub hosts: Vec<DhcpHost>,
    pub mark: NetworkMark,
}

/// A static DHCP entry: the NIC with this MAC gets this address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: String,
    pub ip: Ipv4Addr,
}

/// Rhyzome's mark in a libvirt network's `<metadata>`: the daemon that made it, and the
/// managed network's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkMark {
    pub daemon: String,
    pub name: String,
}

/// A network libvirt knows, whoever made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    pub libvirt_name: String,
    pub active: bool,
    /// Rhyzome's mark, when the network has one.
    pub mark: Option<NetworkMark>,
    /// The IPv4 subnets of its `<ip>` elements.
    pub subnets: Vec<Ipv4Subnet>,
    pub bridge: Option<String>,
    /// The static DHCP entries in its definition.
    pub hosts: Vec<DhcpHost>,
}

/// A route on the hypervisor's host: every address configured on an interface gives one for
/// its subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub interface: String,
    pub subnet: Ipv4Subnet,
}
