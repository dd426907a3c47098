//! What one emulator is told to do, as a whole: where it listens, its host-side tap, its
//! seed, its ports with their conditions, and its partitions. The daemon sends it whole
//! ([`crate::protocol::Request::Put`]), the emulator applies it and writes it to its state
//! file (atomically: a temporary file, fsync, rename), and a restarted emulator reads it back
//! from there, so a restart restores every condition without the daemon.

use rhyzome_api::LinkConditions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

/// The name of the host's tap among the ports (in partitions and statistics).
pub const HOST_PORT: &str = "host";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkState {
    /// Where every NIC's frames arrive: each NIC's `<source address port>`. One socket for
    /// all NICs; a frame's sender port (the NIC's `<local port>`) says which NIC sent it.
    pub listen: SocketAddrV4,
    /// Where frames from NICs on other hosts arrive: the controller's address on the network
    /// between hosts (`LinkEmulatorAddress`), the same port as `listen`. Only the NICs whose
    /// [`PortSpec::peer_address`] is set are heard here, each from its own address and port:
    /// that pair is the allow-list. `None`: every NIC is on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_listen: Option<SocketAddrV4>,
    /// The host-side port: a tap carrying the network's gateway address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<TapSpec>,
    /// Seeds every link's generator (with the port's name).
    #[serde(default)]
    pub seed: u64,
    /// The NICs, by name (not `host`).
    #[serde(default)]
    pub ports: BTreeMap<String, PortSpec>,
    #[serde(default)]
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapSpec {
    /// Interface name, at most 15 bytes.
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// Conditions on what the host sends into the network.
    #[serde(default)]
    pub conditions: LinkConditions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// The NIC's own UDP port on 127.0.0.1 (QEMU's `<local port>`): frames for it go there,
    /// and frames from it come from there.
    pub peer_port: u16,
    /// The address of the NIC's host when that is another host (QEMU's `<local address>`
    /// there): its frames arrive on `remote_listen` from this address and `peer_port`, and
    /// frames for it go there. `None`: on 127.0.0.1, through `listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<Ipv4Addr>,
    /// Its effective conditions (the daemon merged the network's defaults in).
    #[serde(default)]
    pub conditions: LinkConditions,
}

/// Two sets of ports (names; `host` is the tap) between which nothing passes, either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub a: Vec<String>,
    pub b: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path}: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl NetworkState {
    pub fn load(path: &Path) -> Result<NetworkState, StateError> {
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = std::fs::read(path).map_err(io)?;
        let state: NetworkState =
            serde_json::from_slice(&text).map_err(|source| StateError::Json {
                path: path.display().to_string(),
                source,
            })?;
        state.check()?;
        Ok(state)
    }

    /// Writes the state so that a crash leaves the old file or the new one, never a part.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("state serialises"))
            .map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// What the emulator refuses to run with.
    pub fn check(&self) -> Result<(), StateError> {
        let bad = |m: String| Err(StateError::Invalid(m));
        if let Some(tap) = &self.tap {
            if tap.name.is_empty() || tap.name.len() > 15 || tap.name.contains(['/', ' ', '\0']) {
                return bad(format!("tap name {:?} is not an interface name", tap.name));
            }
            if tap.prefix_len > 32 {
                return bad(format!("tap prefix length {} is over 32", tap.prefix_len));
            }
        }
        if let Some(remote) = self.remote_listen {
            // Another loopback address is allowed: tests stand one in for a second host.
            let ip = remote.ip();
            if ip == self.listen.ip()
                || ip.is_unspecified()
                || ip.is_multicast()
                || remote.port() == 0
            {
                return bad(format!(
                    "remote listening address {remote} is the local one, unspecified, multicast or port 0"
                ));
            }
        }
        let mut peers = std::collections::HashSet::new();
        for (name, port) in &self.ports {
            if name == HOST_PORT || name.is_empty() {
                return bad(format!("port name {name:?} is reserved or empty"));
            }
            if port.peer_port == 0 || !peers.insert((port.peer_address, port.peer_port)) {
                return bad(format!(
                    "port {name:?}: peer port {} is 0 or taken",
                    port.peer_port
                ));
            }
            match port.peer_address {
                None if port.peer_port == self.listen.port() => {
                    return bad(format!("port {name:?}: peer port is the listening port"));
                }
                None => {}
                Some(_) if self.remote_listen.is_none() => {
                    return bad(format!(
                        "port {name:?} is on another host, and no remote listening address is set"
                    ));
                }
                Some(a)
                    if a == *self.listen.ip()
                        || self.remote_listen.is_some_and(|r| *r.ip() == a)
                        || a.is_unspecified()
                        || a.is_multicast() =>
                {
                    return bad(format!(
                        "port {name:?}: peer address {a} is one of the emulator's own, unspecified or multicast"
                    ));
                }
                Some(_) => {}
            }
        }
        for p in &self.partitions {
            for name in p.a.iter().chain(&p.b) {
                if name != HOST_PORT && !self.ports.contains_key(name) {
                    return bad(format!("partition names {name:?}, which is no port"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> NetworkState {
        NetworkState {
            listen: "127.0.0.1:40000".parse().unwrap(),
            remote_listen: None,
            tap: None,
            seed: 42,
            ports: [(
                "n1".to_string(),
                PortSpec {
                    peer_port: 40001,
                    peer_address: None,
                    conditions: LinkConditions {
                        latency_ms: Some(40.0),
                        ..Default::default()
                    },
                },
            )]
            .into(),
            partitions: vec![Partition {
                a: vec!["n1".into()],
                b: vec![HOST_PORT.into()],
            }],
        }
    }

    #[test]
    fn state_survives_a_save_and_a_load_and_bad_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wan.json");
        let s = sample();
        s.save(&path).unwrap();
        assert_eq!(NetworkState::load(&path).unwrap(), s);
        assert!(!path.with_extension("tmp").exists());

        let mut bad = sample();
        bad.partitions[0].b = vec!["nobody".into()];
        assert!(bad.check().is_err());
        let mut bad = sample();
        bad.ports.get_mut("n1").unwrap().peer_port = 40000;
        assert!(bad.check().is_err());
        let mut bad = sample();
        let port = bad.ports["n1"].clone();
        bad.ports.insert(HOST_PORT.into(), port);
        assert!(bad.check().is_err());
        let mut bad = sample();
        bad.ports.get_mut("n1").unwrap().peer_address = Some("10.0.0.2".parse().unwrap());
        assert!(
            bad.check().is_err(),
            "a remote port needs a remote listening address"
        );
        bad.remote_listen = Some("10.0.0.1:40000".parse().unwrap());
        bad.check().unwrap();
        bad.ports.get_mut("n1").unwrap().peer_address = Some(Ipv4Addr::LOCALHOST);
        assert!(bad.check().is_err());
        std::fs::write(&path, b"{\"listen\": 1}").unwrap();
        assert!(NetworkState::load(&path).is_err());
    }
}
