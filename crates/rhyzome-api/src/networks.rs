//! Managed networks: the wire types of `/v1/networks`, IPv4 subnet arithmetic, and the checks
//! of a network request that need no server (name, subnet, gateway, mode). Overlap with other
//! networks and with the libvirt host's addresses is the daemon's check.

use crate::validate::FieldError;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use utoipa::ToSchema;

/// What a client asks for when it creates a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    /// Network name: a DNS label, 1 to 50 characters of `[a-z0-9-]`, not starting or ending
    /// with `-`. Tenant prefixes apply as to instance names.
    #[schema(
        example = "lab",
        min_length = 1,
        max_length = 50,
        pattern = "^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$"
    )]
    pub name: String,
    /// IPv4 subnet in CIDR notation, its network address with a prefix of 8 to 30.
    #[schema(
        example = "10.20.0.0/24",
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/([89]|[12][0-9]|30)$"
    )]
    pub subnet: String,
    /// The host's address on the network, which guests use as their gateway; default: the
    /// subnet's first address.
    #[serde(default)]
    #[schema(
        example = "10.20.0.1",
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
    )]
    pub gateway: Option<String>,
    /// `isolated` (default), `nat` or `route`.
    #[serde(default)]
    pub mode: Option<ForwardMode>,
    /// Run libvirt's DHCP server on the network, with one static host entry per address
    /// given to an instance (default `false`).
    #[serde(default)]
    pub dhcp: Option<bool>,
    /// Put the network's frames through a link emulator of Rhyzome's own instead of a kernel
    /// bridge, so its NICs can have latency, jitter, loss, `down` and partitions (default
    /// `false`). Its host side is a tap with the gateway address; it needs mode `isolated`
    /// and no DHCP (guests get their addresses on their command line).
    #[serde(default)]
    pub emulated: Option<bool>,
    /// Seeds the emulator's loss and jitter, so a run can be replayed with the same drop
    /// pattern; default: drawn at random, and shown by `network show`. Only with `emulated`.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Default link conditions of every NIC on the network that has none of its own, field
    /// by field (as `PUT /v1/networks/{name}/link` sets later). Only with `emulated`.
    #[serde(default)]
    pub link: Option<crate::LinkConditions>,
}

/// How a managed network reaches beyond its bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForwardMode {
    /// Guests and the host's gateway address only.
    #[default]
    Isolated,
    /// Guests reach out through the host, with address translation.
    Nat,
    /// The host routes the subnet without translation.
    Route,
}

impl ForwardMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Isolated => "isolated",
            ForwardMode::Nat => "nat",
            ForwardMode::Route => "route",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "isolated" => ForwardMode::Isolated,
            "nat" => ForwardMode::Nat,
            "route" => ForwardMode::Route,
            _ => return None,
        })
    }
}

/// A managed network as the daemon keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Network {
    pub name: String,
    /// Name of the libvirt network that backs it.
    pub libvirt_name: String,
    /// The bridge libvirt made for it on the libvirt host.
    pub bridge: String,
    #[schema(example = "10.20.0.0/24")]
    pub subnet: String,
    #[schema(example = "10.20.0.1")]
    pub gateway: String,
    pub prefix: u8,
    pub mode: ForwardMode,
    pub dhcp: bool,
    /// Whether a link emulator carries its frames (`network create --emulated`).
    #[serde(default)]
    pub emulated: bool,
    /// The emulator's seed (emulated networks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The default link conditions of its NICs (emulated networks only; absent when none).
    #[serde(default, skip_serializing_if = "crate::LinkConditions::is_empty")]
    pub link: crate::LinkConditions,
    /// Addresses given to instances.
    pub addresses_in_use: u32,
    /// Addresses still free for instances.
    pub addresses_free: u32,
    /// Every address in use, by instance and device.
    pub attachments: Vec<NetworkAddress>,
    /// Whether libvirt runs the network now (for an emulated one: whether its emulator
    /// answers).
    pub active: bool,
    pub created_at: String,
    /// The token that created it (`anonymous` while authentication is off).
    pub owner: String,
}

/// An address of a managed network given to one NIC of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkAddress {
    pub instance: String,
    /// The manifest device of the NIC; absent for an instance's single NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub ip: String,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkList {
    pub networks: Vec<Network>,
}

/// `PUT /v1/networks/{name}/link`: the default conditions of every NIC on an emulated
/// network, replacing those set before (an empty object clears them). A NIC's own conditions
/// win, field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkLink {
    pub conditions: crate::LinkConditions,
}

/// `POST /v1/networks/{name}/partitions`: nothing passes, either way, between the instances
/// whose labels match one selector and those matching the other. Selectors are resolved
/// whenever the network's NICs change, so an instance created later joins its side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartitionRequest {
    /// Two label selectors (`key=value[,key=value]`).
    #[schema(example = json!(["group=eu", "group=us"]))]
    pub between: [String; 2],
}

/// What applies now on an emulated network (`GET /v1/networks/{name}/conditions`, and the
/// answer of every change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NetworkConditions {
    pub network: String,
    pub seed: u64,
    /// The network's defaults.
    pub defaults: crate::LinkConditions,
    /// Each NIC with its effective conditions (its own over the network's).
    pub nics: Vec<NicConditions>,
    pub partitions: Vec<PartitionState>,
    /// What the request did not do, e.g. a selector that matches no instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NicConditions {
    pub instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub conditions: crate::LinkConditions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PartitionState {
    pub between: [String; 2],
    /// The instances each selector matches now.
    pub sides: [Vec<String>; 2],
}

/// Longest network name: `rhyzome-` and the name must stay a short libvirt network name.
pub const MAX_NETWORK_NAME: usize = 50;

/// An IPv4 subnet: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Subnet {
    /// The subnet of `addr`/`prefix` (host bits cleared).
    pub fn containing(addr: Ipv4Addr, prefix: u8) -> Ipv4Subnet {
        let prefix = prefix.min(32);
        Ipv4Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// Parses `A.B.C.D/N` whose host bits are zero.
    pub fn parse(s: &str) -> Result<Ipv4Subnet, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (A.B.C.D/N)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length from 0 to 32"))?;
        let subnet = Ipv4Subnet::containing(addr, prefix);
        if subnet.network != addr {
            return Err(format!("{s} has host bits set; the subnet is {subnet}"));
        }
        Ok(subnet)
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Ipv4Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// Addresses usable by hosts: all but the network and broadcast addresses.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 1;
        let last = u32::from(self.broadcast()).saturating_sub(1);
        (first..=last).map(Ipv4Addr::from)
    }

    /// How many addresses [`Self::hosts`] yields.
    pub fn host_count(&self) -> u32 {
        (u32::from(self.broadcast()) - u32::from(self.network)).saturating_sub(1)
    }

    pub fn is_host(&self, addr: Ipv4Addr) -> bool {
        self.contains(addr) && addr != self.network && addr != self.broadcast()
    }
}

impl std::fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// A network request that passed every check that needs no server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidNetwork {
    pub name: String,
    pub subnet: Ipv4Subnet,
    pub gateway: Ipv4Addr,
    pub mode: ForwardMode,
    pub dhcp: bool,
    pub emulated: bool,
    /// The seed asked for (emulated networks only; the server draws one when absent).
    pub seed: Option<u64>,
    /// Default link conditions (emulated networks only).
    pub link: crate::LinkConditions,
}

/// Checks a network request and fills in defaults.
pub fn validate_network(req: &NetworkCreate) -> Result<ValidNetwork, FieldError> {
    crate::validate::validate_name(&req.name)?;
    if req.name.len() > MAX_NETWORK_NAME {
        return Err(FieldError::new(
            "name",
            format!(
                "is {} characters long; a network name has at most {MAX_NETWORK_NAME}",
                req.name.len()
            ),
        ));
    }
    let subnet = Ipv4Subnet::parse(&req.subnet).map_err(|m| FieldError::new("subnet", m))?;
    if subnet.prefix() > 30 {
        return Err(FieldError::new(
            "subnet",
            format!(
                "{subnet} is too small: a network needs room for the gateway and at least one \
                 instance (a prefix of at most /30)"
            ),
        ));
    }
    if subnet.prefix() < 8 {
        return Err(FieldError::new(
            "subnet",
            format!("{subnet} is too large: the prefix must be at least /8"),
        ));
    }
    let gateway = match &req.gateway {
        None => subnet.hosts().next().expect("a /30 or larger has hosts"),
        Some(g) => {
            let gateway: Ipv4Addr = g
                .parse()
                .map_err(|_| FieldError::new("gateway", format!("{g:?} is not an IPv4 address")))?;
            if !subnet.is_host(gateway) {
                return Err(FieldError::new(
                    "gateway",
                    format!(
                        "{gateway} is not a host address of {subnet} (between {} and {})",
                        subnet.hosts().next().expect("hosts"),
                        Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
                    ),
                ));
            }
            gateway
        }
    };
    Ok(ValidNetwork {
        name: req.name.clone(),
        subnet,
        gateway,
        mode: req.mode.unwrap_or_default(),
        dhcp: req.dhcp.unwrap_or(false),
        emulated: req.emulated.unwrap_or(false),
        seed: req.seed,
        link: req.link.unwrap_or_default(),
    })
    .and_then(check_emulated)
}

/// An emulated network's host side is a tap with the gateway address, not a libvirt network:
/// there is no DHCP server and no forwarding; a seed means nothing without the emulator.
fn check_emulated(n: ValidNetwork) -> Result<ValidNetwork, FieldError> {
    if n.emulated {
        if n.dhcp {
            return Err(FieldError::new(
                "dhcp",
                "an emulated network has no DHCP server: guests get their address on their \
                 command line",
            ));
        }
        if n.mode != ForwardMode::Isolated {
            return Err(FieldError::new(
                "mode",
                "an emulated network is isolated: the host reaches it through the emulator's tap",
            ));
        }
    } else if n.seed.is_some() {
        return Err(FieldError::new(
            "seed",
            "only an emulated network has a seed (add emulated: true)",
        ));
    } else if !n.link.is_empty() {
        return Err(FieldError::new(
            "link",
            "only an emulated network has default link conditions (add emulated: true)",
        ));
    }
    crate::validate::validate_conditions(&n.link, "link.")?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(subnet: &str, gateway: Option<&str>) -> NetworkCreate {
        NetworkCreate {
            name: "lab".into(),
            subnet: subnet.into(),
            gateway: gateway.map(str::to_string),
            mode: None,
            dhcp: None,
            emulated: None,
            seed: None,
            link: None,
        }
    }

    #[test]
    fn default_link_conditions_need_an_emulated_network_and_sane_values() {
        let latency = crate::LinkConditions {
            latency_ms: Some(20.0),
            ..Default::default()
        };
        let plain = NetworkCreate {
            link: Some(latency),
            ..req("10.50.0.0/16", None)
        };
        assert_eq!(field_of(validate_network(&plain)), "link");
        let emulated = NetworkCreate {
            emulated: Some(true),
            ..plain.clone()
        };
        assert_eq!(validate_network(&emulated).unwrap().link, latency);
        let bad = NetworkCreate {
            link: Some(crate::LinkConditions {
                loss_percent: Some(120.0),
                ..Default::default()
            }),
            ..emulated
        };
        assert_eq!(field_of(validate_network(&bad)), "link.loss_percent");
    }

    #[test]
    fn an_emulated_network_is_isolated_without_dhcp_and_only_it_has_a_seed() {
        let emulated = |mode, dhcp, seed| NetworkCreate {
            emulated: Some(true),
            mode,
            dhcp,
            seed,
            ..req("10.50.0.0/16", None)
        };
        let ok = validate_network(&emulated(None, None, Some(7))).unwrap();
        assert!(ok.emulated);
        assert_eq!(ok.seed, Some(7));
        assert_eq!(
            field_of(validate_network(&emulated(None, Some(true), None))),
            "dhcp"
        );
        assert_eq!(
            field_of(validate_network(&emulated(
                Some(ForwardMode::Nat),
                None,
                None
            ))),
            "mode"
        );
        let plain_with_seed = NetworkCreate {
            seed: Some(7),
            ..req("10.50.0.0/16", None)
        };
        assert_eq!(field_of(validate_network(&plain_with_seed)), "seed");
    }

    fn field_of(r: Result<ValidNetwork, FieldError>) -> String {
        r.expect_err("refused").field.into_owned()
    }

    #[test]
    fn subnets_parse_and_overlap() {
        let a = Ipv4Subnet::parse("10.20.0.0/24").unwrap();
        assert_eq!(a.broadcast(), Ipv4Addr::new(10, 20, 0, 255));
        assert_eq!(a.host_count(), 254);
        assert_eq!(a.hosts().next(), Some(Ipv4Addr::new(10, 20, 0, 1)));
        assert_eq!(a.hosts().last(), Some(Ipv4Addr::new(10, 20, 0, 254)));
        let wide = Ipv4Subnet::parse("10.0.0.0/8").unwrap();
        assert!(a.overlaps(&wide) && wide.overlaps(&a));
        let beside = Ipv4Subnet::parse("10.20.1.0/24").unwrap();
        assert!(!a.overlaps(&beside));
        assert!(Ipv4Subnet::parse("10.20.0.1/24")
            .unwrap_err()
            .contains("10.20.0.0/24"));
        assert!(Ipv4Subnet::parse("10.20.0.0").is_err());
        assert!(Ipv4Subnet::parse("10.20.0.0/33").is_err());
        assert!(Ipv4Subnet::parse("10.20.0/24").is_err());
    }

    #[test]
    fn defaults_and_refusals_name_their_field() {
        let ok = validate_network(&req("10.20.0.0/24", None)).unwrap();
        assert_eq!(ok.gateway, Ipv4Addr::new(10, 20, 0, 1));
        assert_eq!(ok.mode, ForwardMode::Isolated);
        assert!(!ok.dhcp);
        assert_eq!(
            field_of(validate_network(&req("10.20.0.0/31", None))),
            "subnet"
        );
        assert_eq!(
            field_of(validate_network(&req("10.20.0.0/32", None))),
            "subnet"
        );
        assert_eq!(field_of(validate_network(&req("nonsense", None))), "subnet");
        assert_eq!(
            field_of(validate_network(&req("10.20.0.0/24", Some("10.21.0.1")))),
            "gateway"
        );
        assert_eq!(
            field_of(validate_network(&req("10.20.0.0/24", Some("10.20.0.255")))),
            "gateway"
        );
        assert_eq!(
            field_of(validate_network(&req("10.20.0.0/24", Some("10.20.0.0")))),
            "gateway"
        );
        let mut bad_name = req("10.20.0.0/24", None);
        bad_name.name = "Bad/Name".into();
        assert_eq!(field_of(validate_network(&bad_name)), "name");
        bad_name.name = "a".repeat(MAX_NETWORK_NAME + 1);
        assert_eq!(field_of(validate_network(&bad_name)), "name");
        assert!(validate_network(&req("10.20.0.0/30", Some("10.20.0.2"))).is_ok());
    }
}
