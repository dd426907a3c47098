//! Wire types of hosts (`/v1/hosts`) and of where an instance is placed: the libvirt hosts one
//! daemon drives over libvirt's own remote protocol, and the scheduler's decision.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// How the scheduler ranks the hosts that can take an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlacementPolicy {
    /// The host with the fewest of this daemon's instances (ties: the most free memory):
    /// instances spread evenly over the hosts. The default.
    #[default]
    Spread,
    /// The host with the most instances that still has room: hosts fill up one by one.
    Binpack,
}

impl PlacementPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementPolicy::Spread => "spread",
            PlacementPolicy::Binpack => "binpack",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "spread" => Some(PlacementPolicy::Spread),
            "binpack" => Some(PlacementPolicy::Binpack),
            _ => None,
        }
    }
}

/// Where an instance runs, and why there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Placement {
    /// The host's name (`Hosts[].Name` of the daemon's configuration; `local` without it).
    pub host: String,
    /// `pinned` (the request named the host), `spread` or `binpack` (the scheduler chose),
    /// or `failover` (its earlier host stayed unreachable).
    pub how: String,
    /// The scheduler's reason, in words (`fewest instances (3 of 400), 1800 MiB free; passed over:
    /// b (unreachable)`).
    pub reason: String,
    /// RFC 3339 time of the decision.
    pub decided_at: String,
}

/// A libvirt host, as `GET /v1/hosts` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Host {
    pub name: String,
    /// Its libvirt URI, without any query (which may name key files).
    pub uri: String,
    /// Whether its libvirtd answered the last time the daemon asked.
    pub reachable: bool,
    /// Why it is not reachable, in libvirt's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 time since which it has been unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<String>,
    /// libvirt's version on the host (`9.0.0`), once it was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_version: Option<String>,
    /// The domain type guests get there: `kvm` or `qemu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Free memory by `virNodeGetFreeMemory`, when last asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory_mib: Option<u64>,
    /// This daemon's instances on it (deleted ones excluded).
    pub instances: u32,
    /// The most instances the scheduler puts on it (`MaxInstances`); `null`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether its connection is unencrypted (`qemu+tcp`, allowed by `Insecure`).
    pub insecure: bool,
}

/// `GET /v1/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostList {
    pub hosts: Vec<Host>,
}

/// Parses a host selector, `key=value[,key=value...]`, as the CLI's `--host-selector` takes it.
pub fn parse_host_selector(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected KEY=VALUE"))?;
        if k.is_empty() {
            return Err(format!("{pair:?}: the key is empty"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    if out.is_empty() {
        return Err("the selector is empty: expected KEY=VALUE[,KEY=VALUE...]".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_bad_ones_say_why() {
        let s = parse_host_selector("rack=2,zone=eu").unwrap();
        assert_eq!(s.get("rack").map(String::as_str), Some("2"));
        assert_eq!(s.len(), 2);
        assert!(parse_host_selector("rack")
            .unwrap_err()
            .contains("KEY=VALUE"));
        assert!(parse_host_selector("=2").unwrap_err().contains("empty"));
        assert!(parse_host_selector("").is_err());
    }

    #[test]
    fn policies_round_trip() {
        for p in [PlacementPolicy::Spread, PlacementPolicy::Binpack] {
            assert_eq!(PlacementPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(PlacementPolicy::parse("random"), None);
    }
}
