//! `Hosts` and `FailoverAfterSeconds` of `rhyzome.conf`: the libvirt hosts one daemon drives
//! over libvirt's own remote protocol. Without `Hosts`, `LibvirtURI` is the one host, named
//! `local`. The first host is the primary: managed networks, volumes and link emulators are
//! made there. Pure parsing and checks; no state.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The name of the one host made from `LibvirtURI` when `Hosts` is absent.
pub const LOCAL_HOST: &str = "local";
/// Default of `FailoverAfterSeconds`.
pub const DEFAULT_FAILOVER_AFTER_SECONDS: u64 = 300;
/// Most hosts one daemon drives.
pub const MAX_HOSTS: usize = 64;

/// One entry of `Hosts`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "URI")]
    uri: String,
    #[serde(rename = "Labels", default)]
    labels: BTreeMap<String, String>,
    #[serde(rename = "MaxInstances")]
    max_instances: Option<u32>,
    #[serde(rename = "Insecure", default)]
    insecure: bool,
    #[serde(rename = "FrameAddress")]
    frame_address: Option<Ipv4Addr>,
    #[serde(rename = "Bridges", default)]
    bridges: BTreeMap<String, String>,
}

/// A libvirt host the daemon drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    pub name: String,
    /// Its libvirt URI (`qemu:///system`, `qemu+tls://b.example.org/system`).
    pub uri: String,
    /// Labels a `host_selector` matches (`{"rack": "2"}`).
    pub labels: BTreeMap<String, String>,
    /// The most of this daemon's instances the scheduler puts there.
    pub max_instances: Option<u32>,
    /// `qemu+tcp` (no encryption, no authentication) is allowed only with this.
    pub insecure: bool,
    /// A remote host's address on the network between the hosts, from which its guests'
    /// NICs on emulated networks exchange frames with the controller's link emulators (at
    /// `LinkEmulatorAddress`). Written as `FrameAddress`; when absent, the URI's server if that
    /// is an IPv4 address. `None`: emulated networks cannot reach this host's guests.
    pub frame_address: Option<Ipv4Addr>,
    /// This host's names of host bridges (`{"br0": "br-lan"}`): an instance on bridge `br0`
    /// (its `--bridge`, or `BridgeInterface`) joins `br-lan` when it runs here. The shared L2
    /// segment is the operator's; the name is per host. A bridge not named here keeps its
    /// name.
    pub bridges: BTreeMap<String, String>,
}

impl HostConfig {
    /// The name on this host of the bridge an instance names.
    pub fn bridge<'a>(&'a self, bridge: &'a str) -> &'a str {
        self.bridges.get(bridge).map_or(bridge, String::as_str)
    }

    /// Whether the host is another machine: its URI names a server. Kernels reach such a host
    /// by upload into its `rhyzome-kernels` pool, and its consoles are read through libvirt.
    pub fn is_remote(&self) -> bool {
        uri_server(&self.uri).is_some()
    }

    /// Whether libvirt's protocol to it is unencrypted and unauthenticated (`qemu+tcp`).
    pub fn is_unencrypted(&self) -> bool {
        transport(&self.uri) == Some("tcp")
    }

    /// The URI without its query, which may name key files or a socket: what the API shows.
    pub fn public_uri(&self) -> &str {
        self.uri.split('?').next().unwrap_or(&self.uri)
    }
}

/// The server part of a libvirt URI (`b.example.org` of `qemu+tls://b.example.org/system`),
/// `None` for a local one (`qemu:///system`).
fn uri_server(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    let server = rest.split(['/', '?']).next().unwrap_or("");
    (!server.is_empty()).then_some(server)
}

/// The transport of a libvirt URI: `tls` of `qemu+tls://...`; `None` when it names none.
fn transport(uri: &str) -> Option<&str> {
    let scheme = uri.split_once("://")?.0;
    scheme.split_once('+').map(|(_, t)| t)
}

/// The hosts the daemon drives: `Hosts` when given (then `LibvirtURI` must not be), else
/// `LibvirtURI` (default `qemu:///system`) as the host `local`. Errors name the key and say
/// what is wrong, in words.
pub(super) fn hosts_from(
    raw: Option<Vec<RawHost>>,
    libvirt_uri: Option<String>,
) -> Result<Vec<HostConfig>, (&'static str, String)> {
    let Some(raw) = raw else {
        let uri = libvirt_uri.unwrap_or_else(|| "qemu:///system".into());
        check_uri(&uri, true).map_err(|m| ("LibvirtURI", m))?;
        return Ok(vec![HostConfig {
            name: LOCAL_HOST.into(),
            uri,
            labels: BTreeMap::new(),
            max_instances: None,
            insecure: true,
            frame_address: None,
            bridges: BTreeMap::new(),
        }]);
    };
    if libvirt_uri.is_some() {
        return Err((
            "LibvirtURI",
            "cannot be given with Hosts: name that libvirt as one of the Hosts".into(),
        ));
    }
    if raw.is_empty() {
        return Err(("Hosts", "is empty: list at least one host".into()));
    }
    if raw.len() > MAX_HOSTS {
        return Err((
            "Hosts",
            format!(
                "lists {} hosts; at most {MAX_HOSTS} are supported",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<HostConfig> = Vec::with_capacity(raw.len());
    for h in raw {
        let at = |m: String| ("Hosts", format!("{:?}: {m}", h.name));
        rhyzome_api::validate::validate_name(&h.name).map_err(|e| at(e.message))?;
        if out.iter().any(|o| o.name == h.name) {
            return Err(at("is listed twice".into()));
        }
        check_uri(&h.uri, h.insecure).map_err(at)?;
        if let Some(o) = out.iter().find(|o| o.uri == h.uri) {
            return Err(at(format!("has the same URI as {:?}", o.name)));
        }
        rhyzome_api::validate::validate_labels(&h.labels).map_err(|e| at(e.message))?;
        if h.max_instances == Some(0) {
            return Err(at("MaxInstances is 0: leave the host out instead".into()));
        }
        // `user@10.0.0.2:16514` names 10.0.0.2. A URI through a tunnel (127.0.0.1) names no
        // address the guests could use: then there is no default.
        let server_address = uri_server(&h.uri)
            .and_then(|s| {
                let s = s.rsplit_once('@').map_or(s, |(_, server)| server);
                s.rsplit_once(':')
                    .map_or(s, |(host, _)| host)
                    .parse::<Ipv4Addr>()
                    .ok()
            })
            .filter(|a| !(a.is_loopback() || a.is_unspecified() || a.is_multicast()));
        let frame_address = h.frame_address.or(server_address);
        for (from, to) in &h.bridges {
            for name in [from, to] {
                rhyzome_api::validate::validate_bridge(name)
                    .map_err(|e| at(format!("Bridges: {}", e.message)))?;
            }
        }
        match (frame_address, uri_server(&h.uri).is_some()) {
            (Some(_), false) => {
                return Err(at(
                    "FrameAddress is for a remote host; a local one's guests reach the emulators on loopback"
                        .into(),
                ))
            }
            (Some(a), true) if a.is_loopback() || a.is_unspecified() || a.is_multicast() => {
                return Err(at(format!(
                    "FrameAddress {a} is loopback, unspecified or multicast: give the host's \
                     address on the network between the hosts"
                )))
            }
            _ => {}
        }
        out.push(HostConfig {
            name: h.name,
            uri: h.uri,
            labels: h.labels,
            max_instances: h.max_instances,
            insecure: h.insecure,
            frame_address,
            bridges: h.bridges,
        });
    }
    Ok(out)
}

/// A URI libvirt could open, over an encrypted transport unless `insecure`.
fn check_uri(uri: &str, insecure: bool) -> Result<(), String> {
    if uri.is_empty() || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("URI {uri:?} is not a libvirt URI"));
    }
    let Some((scheme, _)) = uri.split_once("://") else {
        return Err(format!(
            "URI {uri:?} is not a libvirt URI (driver[+transport]://[host]/path)"
        ));
    };
    if scheme.is_empty() {
        return Err(format!("URI {uri:?} names no driver"));
    }
    match transport(uri) {
        None | Some("tls") | Some("ssh") | Some("libssh") | Some("libssh2") | Some("unix") => {
            Ok(())
        }
        Some("tcp") if insecure => Ok(()),
        Some("tcp") => Err(format!(
            "URI {uri:?} is unencrypted and unauthenticated (qemu+tcp): use qemu+tls or \
             qemu+ssh, or set \"Insecure\": true for this host in a lab"
        )),
        Some(other) => Err(format!(
            "URI {uri:?}: transport {other:?} is not supported (use tls, ssh, or tcp with \
             \"Insecure\": true)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, uri: &str, insecure: bool) -> RawHost {
        RawHost {
            name: name.into(),
            uri: uri.into(),
            labels: BTreeMap::new(),
            max_instances: None,
            insecure,
            frame_address: None,
            bridges: BTreeMap::new(),
        }
    }

    #[test]
    fn the_frame_address_is_given_or_the_uris_ipv4_server() {
        let hosts = hosts_from(
            Some(vec![
                raw("a", "qemu:///system", false),
                raw("b", "qemu+ssh://root@10.0.0.2:22/system", false),
                raw("c", "qemu+tls://c.example.org/system", false),
                RawHost {
                    frame_address: Some("10.8.0.4".parse().unwrap()),
                    ..raw("d", "qemu+tls://d.example.org/system", false)
                },
            ]),
            None,
        )
        .unwrap();
        let addresses: Vec<Option<String>> = hosts
            .iter()
            .map(|h| h.frame_address.map(|a| a.to_string()))
            .collect();
        assert_eq!(
            addresses,
            [None, Some("10.0.0.2".into()), None, Some("10.8.0.4".into())]
        );
        let local_with_one = RawHost {
            frame_address: Some("10.8.0.4".parse().unwrap()),
            ..raw("a", "qemu:///system", false)
        };
        let e = hosts_from(Some(vec![local_with_one]), None).unwrap_err();
        assert!(e.1.contains("FrameAddress"), "{}", e.1);
        let loopback = RawHost {
            frame_address: Some("127.0.0.1".parse().unwrap()),
            ..raw("b", "qemu+tls://b/system", false)
        };
        assert!(hosts_from(Some(vec![loopback]), None).is_err());
        // Through an SSH tunnel: no default, and no error for what was not written.
        let tunnel = hosts_from(
            Some(vec![raw(
                "t",
                "qemu+ssh://root@127.0.0.1:2222/system",
                false,
            )]),
            None,
        )
        .unwrap();
        assert_eq!(tunnel[0].frame_address, None);
        // Two libvirtds on one server (other ports) share its address: their NICs' ports
        // differ.
        let same_server = RawHost {
            frame_address: Some("10.0.0.2".parse().unwrap()),
            ..raw("c", "qemu+tls://c/system", false)
        };
        hosts_from(
            Some(vec![
                raw("b", "qemu+tcp://10.0.0.2/system", true),
                same_server,
            ]),
            None,
        )
        .unwrap();
    }

    #[test]
    fn without_hosts_libvirt_uri_is_the_host_local() {
        let hosts = hosts_from(None, None).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].name, LOCAL_HOST);
        assert_eq!(hosts[0].uri, "qemu:///system");
        assert!(!hosts[0].is_remote());
        let hosts = hosts_from(None, Some("test:///default".into())).unwrap();
        assert_eq!(hosts[0].uri, "test:///default");
    }

    #[test]
    fn hosts_and_libvirt_uri_together_are_refused() {
        let e = hosts_from(
            Some(vec![raw("a", "qemu:///system", false)]),
            Some("qemu:///system".into()),
        )
        .unwrap_err();
        assert_eq!(e.0, "LibvirtURI");
    }

    #[test]
    fn tcp_needs_insecure_and_tls_does_not() {
        let e = hosts_from(
            Some(vec![raw("b", "qemu+tcp://10.0.0.2/system", false)]),
            None,
        )
        .unwrap_err();
        assert_eq!(e.0, "Hosts");
        assert!(e.1.contains("Insecure"), "{}", e.1);
        let ok = hosts_from(
            Some(vec![raw("b", "qemu+tcp://10.0.0.2/system", true)]),
            None,
        )
        .unwrap();
        assert!(ok[0].is_remote());
        let ok = hosts_from(
            Some(vec![raw("b", "qemu+tls://b.example.org/system", false)]),
            None,
        )
        .unwrap();
        assert!(ok[0].is_remote());
        assert!(hosts_from(Some(vec![raw("b", "qemu+http://x/system", true)]), None).is_err());
    }

    #[test]
    fn names_are_checked_and_unique() {
        assert!(hosts_from(Some(vec![raw("Bad Name", "qemu:///system", false)]), None).is_err());
        let e = hosts_from(
            Some(vec![
                raw("a", "qemu:///system", false),
                raw("a", "qemu+tls://b/system", false),
            ]),
            None,
        )
        .unwrap_err();
        assert!(e.1.contains("twice"), "{}", e.1);
        let e = hosts_from(
            Some(vec![
                raw("a", "qemu:///system", false),
                raw("b", "qemu:///system", false),
            ]),
            None,
        )
        .unwrap_err();
        assert!(e.1.contains("same URI"), "{}", e.1);
        assert!(hosts_from(Some(vec![]), None).is_err());
        assert!(hosts_from(Some(vec![raw("a", "nonsense", false)]), None).is_err());
    }

    #[test]
    fn the_public_uri_hides_the_query() {
        let h = &hosts_from(
            Some(vec![raw(
                "b",
                "qemu+tls://b/system?pkipath=/etc/secret",
                false,
            )]),
            None,
        )
        .unwrap()[0];
        assert_eq!(h.public_uri(), "qemu+tls://b/system");
    }
}
