//! Test-bed files (issue 15): the TOML that declares a P2P experiment, checked whole before
//! anything is created, and planned into the networks and instance requests it stands for.
//!
//! It lives here, in the crate the daemon and the CLI share, because both read the same file:
//! the CLI to refuse a bad file (and print a `--dry-run` plan) without a round trip, the daemon
//! because it is the authority and a file may come from any client. Nothing here does I/O.
//!
//! Every error carries the line and column of the key or value at fault; the checks collect
//! all errors of a file rather than stopping at the first, except TOML syntax errors.
//!
//! Addresses are assigned by the plan, not by the server's "lowest free" allocation, so that
//! `{group.G.ip}` and `{peers:G:K}` are known before any instance exists: on each of the bed's
//! networks, hosts are handed out in subnet order (skipping the gateway) to the groups in file
//! order, each group's instances by index. The instances pin them with `network.ipv4`.
//!
//! `{peers:G:K}` for instance `i` (see [`peers`]): with `n` members of G (the instance itself
//! left out when it belongs to G), the first peer is the ring successor, which makes the
//! "knows" graph contain a directed ring over G and therefore connected; the other `K - 1`
//! are drawn without replacement from the rest by a SplitMix64 generator seeded from the
//! bed's `seed`, the group's name and `i`.

use crate::networks::Ipv4Subnet;
use crate::placeholders::{parse_placeholder, tokenize, Token};
use crate::validate::{validate_name, validate_restart_policy};
use crate::{InstanceSpec, LinkConditions, NetworkCreate, NetworkSpec, RestartMode, RestartPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use toml::Spanned;

/// One thing wrong with a test-bed file, where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("line {line}, column {column}: {message}")]
pub struct BedError {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// Every error found in a file; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct BedErrors(pub Vec<BedError>);

/// The most instances one bed may declare, all groups together.
pub const MAX_BED_INSTANCES: u32 = 5000;

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBed {
    name: Spanned<String>,
    #[serde(default)]
    seed: Option<Spanned<u64>>,
    #[serde(default)]
    networks: Vec<Spanned<RawNetwork>>,
    groups: Spanned<Vec<Spanned<RawGroup>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: Spanned<String>,
    subnet: Spanned<String>,
    #[serde(default)]
    gateway: Option<Spanned<String>>,
    #[serde(default)]
    emulated: Option<Spanned<bool>>,
    #[serde(default)]
    link: Option<Spanned<RawLink>>,
}

/// `link = { latency = "20ms", jitter = "5ms", loss = "1%", rate = "10mbit" }`: each value as
/// `rhyzomectl ... --link` takes it.
type RawLink = BTreeMap<String, Spanned<toml::Value>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    count: Spanned<i64>,
    #[serde(default)]
    kernel: Option<Spanned<String>>,
    #[serde(default)]
    image: Option<Spanned<String>>,
    #[serde(default)]
    kernel_file: Option<Spanned<String>>,
    #[serde(default)]
    network: Option<Spanned<String>>,
    #[serde(default)]
    bridge: Option<Spanned<String>>,
    #[serde(default)]
    nets: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    kernel_parameters: Option<Spanned<String>>,
    #[serde(default)]
    memory_mib: Option<Spanned<u32>>,
    #[serde(default)]
    vcpus: Option<Spanned<u32>>,
    #[serde(default)]
    restart: Option<Spanned<String>>,
    #[serde(default)]
    ready: Option<Spanned<RawReady>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    #[serde(default)]
    link: Option<Spanned<RawLink>>,
    #[serde(default)]
    placement: Option<Spanned<String>>,
    #[serde(default)]
    host_selector: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    failover: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    #[serde(default)]
    console: Option<String>,
    #[serde(default)]
    udp: Option<UdpProbe>,
    #[serde(default)]
    ping: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// The file as understood.

/// When an instance of a group counts as ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// As soon as it runs.
    Running,
    /// When its console has printed this text.
    Console(String),
    /// When it answers `send` on UDP `port` with a datagram containing `expect`.
    Udp(UdpProbe),
    /// When it answers ICMP echo.
    Ping,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpProbe {
    pub port: u16,
    pub send: String,
    pub expect: String,
}

/// What a group's instances boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boot {
    /// A path on the server.
    Kernel(String),
    /// An uploaded image reference.
    Image(String),
    /// A local file the CLI uploads first; the server sees it as an image.
    KernelFile(String),
}

/// How a group's instances are connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attachment {
    /// The daemon's default bridge.
    Default,
    /// One of the bed's networks.
    Network(String),
    /// A host bridge.
    Bridge(String),
    /// Manifest device name to bed network.
    Nets(BTreeMap<String, String>),
}

/// One of the bed's managed networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BedNetwork {
    pub name: String,
    pub subnet: String,
    pub gateway: Option<String>,
    /// Carried by a link emulator (`emulated = true`).
    #[serde(default)]
    pub emulated: bool,
    /// Default conditions of its NICs (`link = {...}`; emulated networks only).
    #[serde(default, skip_serializing_if = "LinkConditions::is_empty")]
    pub link: LinkConditions,
}

/// A group of alike instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub count: u32,
    pub boot: Boot,
    pub attachment: Attachment,
    /// As written: bed placeholders are filled in per instance by [`Bed::plan`].
    pub kernel_parameters: String,
    pub memory_mib: Option<u32>,
    pub vcpus: Option<u32>,
    pub restart: RestartPolicy,
    pub ready: Readiness,
    pub after: Vec<String>,
    /// Conditions of each instance's NICs (`link = {...}`), over its network's defaults.
    #[serde(default, skip_serializing_if = "LinkConditions::is_empty")]
    pub link: LinkConditions,
    /// How its instances are spread over the daemon's hosts (`placement = "binpack"`;
    /// default `spread`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::hosts::PlacementPolicy>,
    /// Only hosts with these labels (`host_selector = { rack = "2" }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selector: Option<BTreeMap<String, String>>,
    /// Its instances move to another host when theirs stays unreachable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failover: bool,
}

/// A checked test-bed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bed {
    pub name: String,
    pub seed: u64,
    pub networks: Vec<BedNetwork>,
    /// In file order.
    pub groups: Vec<Group>,
}

/// One instance of a planned bed; its spec carries the labels `testbed=NAME` and `group=G`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedInstance {
    pub group: String,
    pub index: u32,
    /// Bed placeholders filled in; the server's own (`{ip}`, ...) left for the server.
    pub spec: InstanceSpec,
}

/// Everything a bed stands for, ready to be created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BedPlan {
    pub networks: Vec<NetworkCreate>,
    /// Groups in an order that respects `after` (file order among independent groups).
    pub start_order: Vec<String>,
    /// By group, in index order.
    pub instances: BTreeMap<String, Vec<PlannedInstance>>,
}

// ---------------------------------------------------------------------------------------------
// Positions.

/// Turns byte offsets into 1-based lines and columns (columns in characters).
struct Source<'a> {
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, offset: usize, message: impl Into<String>) -> BedError {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |p| p + 1);
        BedError {
            line,
            column: self.text[line_start..offset].chars().count() + 1,
            message: message.into(),
        }
    }

    fn span<T>(&self, value: &Spanned<T>, message: impl Into<String>) -> BedError {
        self.at(value.span().start, message)
    }

    /// Where `needle` lies inside the quoted string value `value`: exact for strings without
    /// escapes, the value's own start otherwise.
    fn inside(&self, value: &Spanned<String>, byte: usize, message: impl Into<String>) -> BedError {
        let span = value.span();
        let raw = self.text.get(span.clone()).unwrap_or("");
        let quote = raw.find(['"', '\'']).map_or(0, |q| q + 1);
        let literal = raw.get(quote..).unwrap_or("");
        let offset = if literal.get(..value.get_ref().len()) == Some(value.get_ref().as_str()) {
            span.start + quote + byte
        } else {
            span.start
        };
        self.at(offset, message)
    }
}

// ---------------------------------------------------------------------------------------------
// Bed placeholders.

/// A placeholder that the bed fills in, as opposed to the server's own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BedPlaceholder {
    Index,
    GroupIps(String),
    Peers { group: String, count: u32 },
}

/// Reads `{...}`: `Ok(None)` for the server's placeholders, `Err` for neither.
fn parse_bed_placeholder(inner: &str) -> Result<Option<BedPlaceholder>, String> {
    if inner == "i" {
        return Ok(Some(BedPlaceholder::Index));
    }
    if let Some(rest) = inner.strip_prefix("group.") {
        return match rest.strip_suffix(".ip") {
            Some(group) if !group.is_empty() => Ok(Some(BedPlaceholder::GroupIps(group.into()))),
            _ => Err(format!(
                "bad placeholder {{{inner}}}: write {{group.NAME.ip}} for a group's addresses"
            )),
        };
    }
    if let Some(rest) = inner.strip_prefix("peers:") {
        let bad = || {
            format!("bad placeholder {{{inner}}}: write {{peers:GROUP:K}} with K a count from 1")
        };
        let (group, count) = rest.split_once(':').ok_or_else(bad)?;
        let count: u32 = count.parse().map_err(|_| bad())?;
        if group.is_empty() || count == 0 {
            return Err(bad());
        }
        return Ok(Some(BedPlaceholder::Peers {
            group: group.into(),
            count,
        }));
    }
    match parse_placeholder(inner) {
        Some(_) => Ok(None),
        None => Err(format!(
            "unknown placeholder {{{inner}}}: a test bed fills in {{i}}, {{group.G.ip}} and \
             {{peers:G:K}}, the server {{ip}}, {{cidr}}, {{prefix}}, {{gateway}}, {{mac}}, \
             {{name}} and {{DEVICE.ip}} etc. ({{{{ and }}}} for literal braces)"
        )),
    }
}

/// The byte offset of each token of `text`, in `tokenize`'s order.
fn token_offsets(tokens: &[Token]) -> Vec<usize> {
    let mut at = 0;
    tokens
        .iter()
        .map(|t| {
            let start = at;
            at += match t {
                Token::Text(s) => s.len(),
                Token::Brace(_) => 2,
                Token::Placeholder(inner) => inner.len() + 2,
            };
            start
        })
        .collect()
}

/// The SplitMix64 step: small, well mixed and the same on every platform, which is all a
/// reproducible experiment needs.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator seeded from the bed's seed and the words naming one choice.
pub fn seeded_rng(seed: u64, words: &[&str]) -> impl FnMut() -> u64 {
    // FNV-1a over the words, folded into the seed.
    let mut state = seed;
    for word in words {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        state ^= h;
        splitmix64(&mut state);
    }
    move || splitmix64(&mut state)
}

/// `k` distinct indices of `0..n` picked by `rng` (a partial Fisher-Yates shuffle).
pub fn pick(n: usize, k: usize, rng: &mut impl FnMut() -> u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    for j in 0..k {
        let r = j + (rng() % (n - j) as u64) as usize;
        all.swap(j, r);
    }
    all.truncate(k);
    all
}

/// The indices within group `target` (of `n` instances) that instance `index` of group
/// `source` takes as its `k` peers; see the module documentation. `None` when the group is too
/// small.
pub fn peers(
    seed: u64,
    source: &str,
    index: u32,
    target: &str,
    n: u32,
    k: u32,
) -> Option<Vec<u32>> {
    let same = source == target;
    let others: Vec<u32> = (0..n).filter(|&j| !(same && j == index)).collect();
    if (k as usize) > others.len() {
        return None;
    }
    // The ring successor: `index + 1` in the own group, `index` (mod n) in another one.
    let first = if same { (index + 1) % n } else { index % n };
    let rest: Vec<u32> = others.iter().copied().filter(|&j| j != first).collect();
    let mut rng = seeded_rng(seed, &["peers", source, &index.to_string(), target]);
    let mut chosen = vec![first];
    chosen.extend(
        pick(rest.len(), k as usize - 1, &mut rng)
            .into_iter()
            .map(|p| rest[p]),
    );
    Some(chosen)
}

// ---------------------------------------------------------------------------------------------
// Checking.

/// Reads `link = {...}`: each key is a term of the CLI's conditions text (`latency = "20ms"`
/// is `latency=20ms`; `down = true` is `down`), checked where its value is written.
fn parse_link(src: &Source, link: &Spanned<RawLink>, errors: &mut Vec<BedError>) -> LinkConditions {
    let mut conditions = LinkConditions::default();
    for (key, value) in link.get_ref() {
        let text = match (key.as_str(), value.get_ref()) {
            ("down", toml::Value::Boolean(b)) => if *b { "down" } else { "up" }.to_string(),
            (_, toml::Value::String(v)) => format!("{key}={v}"),
            (_, toml::Value::Integer(v)) => format!("{key}={v}"),
            (_, toml::Value::Float(v)) => format!("{key}={v}"),
            _ => {
                errors.push(src.span(
                    value,
                    format!("link.{key}: give a string such as \"20ms\", \"1%\" or \"10mbit\""),
                ));
                continue;
            }
        };
        if ![
            "latency",
            "jitter",
            "loss",
            "loss-correlation",
            "rate",
            "down",
        ]
        .contains(&key.as_str())
        {
            errors.push(src.span(
                value,
                format!("link.{key}: unknown condition; give latency, jitter, loss, loss-correlation, rate or down"),
            ));
            continue;
        }
        match crate::validate::parse_conditions(&text) {
            Ok(c) => conditions = c.or(conditions),
            Err(e) => errors.push(src.span(value, format!("link.{key}: {}", e.message))),
        }
    }
    conditions
}

/// Reads and checks a test-bed file.
pub fn parse_bed(text: &str) -> Result<Bed, BedErrors> {
    let src = Source { text };
    let raw: RawBed = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        BedErrors(vec![src.at(offset, e.message().trim().to_string())])
    })?;
    let mut errors = Vec::new();

    if let Err(e) = validate_name(raw.name.get_ref()) {
        errors.push(src.span(&raw.name, format!("name {}", e.message)));
    }

    let mut networks = Vec::new();
    let mut subnets: BTreeMap<String, (Ipv4Subnet, Ipv4Addr)> = BTreeMap::new();
    for net in &raw.networks {
        let n = net.get_ref();
        if let Err(e) = validate_name(n.name.get_ref()) {
            errors.push(src.span(&n.name, format!("network name {}", e.message)));
        }
        if subnets.contains_key(n.name.get_ref()) {
            errors.push(src.span(
                &n.name,
                format!("network {:?} is declared twice", n.name.get_ref()),
            ));
        }
        let emulated = n.emulated.as_ref().is_some_and(|e| *e.get_ref());
        let link = match &n.link {
            None => LinkConditions::default(),
            Some(l) if !emulated => {
                errors.push(src.span(
                    l,
                    "link: default link conditions need an emulated network; add \
                     emulated = true to this [[networks]]",
                ));
                LinkConditions::default()
            }
            Some(l) => parse_link(&src, l, &mut errors),
        };
        match Ipv4Subnet::parse(n.subnet.get_ref()) {
            Err(e) => errors.push(src.span(&n.subnet, format!("subnet {e}"))),
            Ok(subnet) => {
                let gateway = match &n.gateway {
                    None => Some(subnet.hosts().next().unwrap_or(subnet.network())),
                    Some(g) => match g.get_ref().parse::<Ipv4Addr>() {
                        Ok(a) if subnet.is_host(a) => Some(a),
                        _ => {
                            errors.push(src.span(
                                g,
                                format!("gateway must be a host address of {}", n.subnet.get_ref()),
                            ));
                            None
                        }
                    },
                };
                if let Some(gateway) = gateway {
                    subnets.insert(n.name.get_ref().clone(), (subnet, gateway));
                }
            }
        }
        networks.push(BedNetwork {
            name: n.name.get_ref().clone(),
            subnet: n.subnet.get_ref().clone(),
            gateway: n.gateway.as_ref().map(|g| g.get_ref().clone()),
            emulated,
            link,
        });
    }

    let group_names: BTreeMap<&str, usize> = raw
        .groups
        .get_ref()
        .iter()
        .enumerate()
        .map(|(i, g)| (g.get_ref().name.get_ref().as_str(), i))
        .collect();
    if raw.groups.get_ref().is_empty() {
        errors.push(src.span(&raw.groups, "a test bed needs at least one [[groups]]"));
    }

    let mut groups = Vec::new();
    let mut seen = BTreeSet::new();
    let mut total: i64 = 0;
    // Hosts left per network, as groups take them in file order.
    let mut free: BTreeMap<&str, i64> = subnets
        .iter()
        .map(|(name, (s, _))| (name.as_str(), i64::from(s.host_count()) - 1))
        .collect();
    for spanned in raw.groups.get_ref() {
        let g = spanned.get_ref();
        let gname = g.name.get_ref();
        if let Err(e) = validate_name(gname) {
            errors.push(src.span(&g.name, format!("group name {}", e.message)));
        }
        if !seen.insert(gname.clone()) {
            errors.push(src.span(&g.name, format!("group {gname:?} is declared twice")));
        }
        let count = *g.count.get_ref();
        if !(0..=i64::from(MAX_BED_INSTANCES)).contains(&count) {
            errors.push(src.span(
                &g.count,
                format!("count is {count}; give 0 to {MAX_BED_INSTANCES}"),
            ));
        }
        total += count.max(0);
        let instance_name = format!("{}-{}-{}", raw.name.get_ref(), gname, count.max(1) - 1);
        if instance_name.len() > 63 {
            errors.push(src.span(
                &g.name,
                format!(
                    "instance names are BED-GROUP-INDEX, and {instance_name:?} is longer than \
                     63 characters; shorten the bed or group name"
                ),
            ));
        }

        let boots: Vec<(&Spanned<String>, Boot)> = [
            g.kernel
                .as_ref()
                .map(|k| (k, Boot::Kernel(k.get_ref().clone()))),
            g.image
                .as_ref()
                .map(|k| (k, Boot::Image(k.get_ref().clone()))),
            g.kernel_file
                .as_ref()
                .map(|k| (k, Boot::KernelFile(k.get_ref().clone()))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let boot = match boots.as_slice() {
            [(_, boot)] => Some(boot.clone()),
            [] => {
                errors.push(src.span(
                    spanned,
                    format!("group {gname:?} has no kernel: give kernel, image or kernel_file"),
                ));
                None
            }
            [_, (second, _), ..] => {
                errors.push(src.span(
                    second,
                    "give only one of kernel, image and kernel_file".to_string(),
                ));
                None
            }
        };

        let mut use_network = |name: &Spanned<String>, errors: &mut Vec<BedError>| match free
            .get_mut(name.get_ref().as_str())
        {
            None => errors.push(src.span(
                name,
                format!(
                    "no network {:?} among the bed's [[networks]]",
                    name.get_ref()
                ),
            )),
            Some(left) => {
                *left -= count.max(0);
                if *left < 0 {
                    errors.push(src.span(
                        &g.count,
                        format!(
                            "group {gname:?} does not fit in network {:?}: {} addresses \
                                 short (the gateway and earlier groups take the rest)",
                            name.get_ref(),
                            -*left
                        ),
                    ));
                    *left = 0;
                }
            }
        };
        let attachments = [g.network.is_some(), g.bridge.is_some(), g.nets.is_some()];
        let attachment = if attachments.iter().filter(|a| **a).count() > 1 {
            errors.push(src.span(spanned, "give only one of network, bridge and nets"));
            Attachment::Default
        } else if let Some(n) = &g.network {
            use_network(n, &mut errors);
            Attachment::Network(n.get_ref().clone())
        } else if let Some(b) = &g.bridge {
            if let Err(e) = crate::validate::validate_bridge(b.get_ref()) {
                errors.push(src.span(b, format!("bridge {}", e.message)));
            }
            Attachment::Bridge(b.get_ref().clone())
        } else if let Some(nets) = &g.nets {
            for n in nets.get_ref().values() {
                use_network(n, &mut errors);
            }
            Attachment::Nets(
                nets.get_ref()
                    .iter()
                    .map(|(d, n)| (d.clone(), n.get_ref().clone()))
                    .collect(),
            )
        } else {
            Attachment::Default
        };

        let restart = match &g.restart {
            None => RestartPolicy::default(),
            Some(r) => match parse_restart(r.get_ref()) {
                Ok(p) => p,
                Err(m) => {
                    errors.push(src.span(r, m));
                    RestartPolicy::default()
                }
            },
        };
        let ready = match &g.ready {
            None => Readiness::Running,
            Some(r) => {
                let RawReady { console, udp, ping } = r.get_ref();
                match (console, udp, ping) {
                    (Some(c), None, None) if !c.is_empty() => Readiness::Console(c.clone()),
                    (None, Some(_), None) | (None, None, Some(true))
                        if matches!(attachment, Attachment::Default | Attachment::Bridge(_)) =>
                    {
                        errors.push(src.span(
                            r,
                            format!(
                                "ready: a udp or ping probe goes to the instance's address on a \
                                 bed network, and group {gname:?} has none (give network or nets)"
                            ),
                        ));
                        Readiness::Running
                    }
                    (None, Some(u), None)
                        if u.port == 0 || u.send.is_empty() || u.send.len() > 1024 =>
                    {
                        errors.push(src.span(
                            r,
                            "ready.udp: give a port from 1 and a request (send) of 1 to 1024 bytes",
                        ));
                        Readiness::Running
                    }
                    (None, Some(u), None) => Readiness::Udp(u.clone()),
                    (None, None, Some(true)) => Readiness::Ping,
                    _ => {
                        errors.push(src.span(
                            r,
                            "ready takes exactly one of console = \"TEXT\", udp = { port, \
                             send, expect } and ping = true",
                        ));
                        Readiness::Running
                    }
                }
            }
        };
        for a in &g.after {
            if !group_names.contains_key(a.get_ref().as_str()) {
                errors.push(src.span(a, format!("after names no group {:?}", a.get_ref())));
            }
        }
        let link = match &g.link {
            None => LinkConditions::default(),
            Some(l) => {
                let link = parse_link(&src, l, &mut errors);
                let on_emulated = |n: &String| {
                    networks
                        .iter()
                        .any(|b: &BedNetwork| &b.name == n && b.emulated)
                };
                let emulated = match &attachment {
                    Attachment::Network(n) => on_emulated(n),
                    Attachment::Nets(m) => m.values().all(on_emulated),
                    Attachment::Default | Attachment::Bridge(_) => false,
                };
                if link.needs_emulation() && !emulated {
                    errors.push(src.span(
                        l,
                        format!(
                            "link: group {gname:?} is not on an emulated bed network (emulated = \
                             true), where only rate can be honoured; latency, jitter, loss and \
                             down need one"
                        ),
                    ));
                }
                link
            }
        };
        if let Some(m) = &g.memory_mib {
            if let Err(e) = crate::validate::validate_memory_mib(*m.get_ref()) {
                errors.push(src.span(m, format!("memory_mib {}", e.message)));
            }
        }
        if let Some(v) = &g.vcpus {
            if let Err(e) = crate::validate::validate_vcpus(*v.get_ref()) {
                errors.push(src.span(v, format!("vcpus {}", e.message)));
            }
        }
        let placement = g.placement.as_ref().and_then(|p| {
            let parsed = crate::hosts::PlacementPolicy::parse(p.get_ref());
            if parsed.is_none() {
                errors.push(src.span(
                    p,
                    format!(
                        "placement {:?} is neither \"spread\" nor \"binpack\"",
                        p.get_ref()
                    ),
                ));
            }
            parsed
        });
        if let Some(selector) = &g.host_selector {
            for (k, v) in selector.get_ref() {
                if let Err(e) = crate::validate::validate_label_key(k)
                    .and_then(|_| crate::validate::validate_label_value(k, v))
                {
                    errors.push(src.span(selector, format!("host_selector {}", e.message)));
                }
            }
        }
        groups.push(Group {
            name: gname.clone(),
            count: count.clamp(0, i64::from(MAX_BED_INSTANCES)) as u32,
            boot: boot.unwrap_or(Boot::Kernel(String::new())),
            attachment,
            kernel_parameters: g
                .kernel_parameters
                .as_ref()
                .map(|k| k.get_ref().clone())
                .unwrap_or_default(),
            memory_mib: g.memory_mib.as_ref().map(|m| *m.get_ref()),
            vcpus: g.vcpus.as_ref().map(|v| *v.get_ref()),
            restart,
            ready,
            after: g.after.iter().map(|a| a.get_ref().clone()).collect(),
            link,
            placement,
            host_selector: g.host_selector.as_ref().map(|h| h.get_ref().clone()),
            failover: g.failover.unwrap_or(false),
        });
    }
    if total > i64::from(MAX_BED_INSTANCES) {
        errors.push(src.span(
            &raw.groups,
            format!(
                "the groups declare {total} instances; a bed holds at most {MAX_BED_INSTANCES}"
            ),
        ));
    }

    // Placeholders, once every group's count and attachment is known.
    for (spanned, group) in raw.groups.get_ref().iter().zip(&groups) {
        let Some(params) = &spanned.get_ref().kernel_parameters else {
            continue;
        };
        let tokens = match tokenize(params.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                errors.push(src.span(params, format!("kernel_parameters {e}")));
                continue;
            }
        };
        for (token, offset) in tokens.iter().zip(token_offsets(&tokens)) {
            let Token::Placeholder(inner) = token else {
                continue;
            };
            let problem = match parse_bed_placeholder(inner) {
                Err(m) => Some(m),
                Ok(None) | Ok(Some(BedPlaceholder::Index)) => None,
                Ok(Some(BedPlaceholder::GroupIps(target)))
                | Ok(Some(BedPlaceholder::Peers { group: target, .. })) => {
                    match groups.iter().find(|g| g.name == target) {
                        None => Some(format!("{{{inner}}} names no group {target:?}")),
                        Some(t) if !matches!(t.attachment, Attachment::Network(_)) => {
                            Some(format!(
                                "{{{inner}}}: group {target:?} has no single bed network \
                             (`network = ...`), so the bed does not know its addresses"
                            ))
                        }
                        Some(t) => match parse_bed_placeholder(inner) {
                            Ok(Some(BedPlaceholder::Peers { count, .. })) => {
                                let others = if t.name == group.name {
                                    t.count.saturating_sub(1)
                                } else {
                                    t.count
                                };
                                (count > others).then(|| {
                                    format!(
                                        "{{{inner}}} asks for {count} peers, but group \
                                         {target:?} offers only {others}"
                                    )
                                })
                            }
                            _ => None,
                        },
                    }
                }
            };
            if let Some(m) = problem {
                errors.push(src.inside(params, offset, m));
            }
        }
    }

    // `after` must not loop.
    if let Some((group, entry)) = after_cycle(&groups) {
        let a = &raw.groups.get_ref()[group].get_ref().after[entry];
        errors.push(src.span(
            a,
            format!(
                "after makes a cycle: group {:?} waits for {:?}, which waits (directly or not) \
                 for it",
                groups[group].name,
                a.get_ref()
            ),
        ));
    }

    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(BedErrors(errors));
    }
    Ok(Bed {
        name: raw.name.into_inner(),
        seed: raw.seed.map_or(0, |s| s.into_inner()),
        networks,
        groups,
    })
}

/// `on-failure[:N]`, `always[:N]` or `never`.
fn parse_restart(text: &str) -> Result<RestartPolicy, String> {
    let (mode, max) =
        match text.split_once(':') {
            Some((m, n)) => (
                m,
                Some(n.parse::<u32>().map_err(|_| {
                    format!("restart {text:?}: the count after ':' must be a number")
                })?),
            ),
            None => (text, None),
        };
    let policy = match mode {
        "never" => RestartMode::Never,
        "on-failure" | "on_failure" => RestartMode::OnFailure,
        "always" => RestartMode::Always,
        _ => {
            return Err(format!(
                "restart {text:?}: write never, on-failure[:N] or always[:N]"
            ))
        }
    };
    let policy = RestartPolicy {
        policy,
        max_retries: max,
        exit_codes: None,
    };
    validate_restart_policy(&policy).map_err(|e| format!("restart {text:?}: {}", e.message))?;
    Ok(policy)
}

/// The first `after` entry (group index, entry index) that closes a cycle, if any.
fn after_cycle(groups: &[Group]) -> Option<(usize, usize)> {
    let index: BTreeMap<&str, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.as_str(), i))
        .collect();
    // 0 unvisited, 1 on the current path, 2 done.
    fn visit(
        g: usize,
        groups: &[Group],
        index: &BTreeMap<&str, usize>,
        mark: &mut [u8],
    ) -> Option<(usize, usize)> {
        mark[g] = 1;
        for (e, a) in groups[g].after.iter().enumerate() {
            let Some(&next) = index.get(a.as_str()) else {
                continue;
            };
            match mark[next] {
                1 => return Some((g, e)),
                0 => {
                    if let Some(found) = visit(next, groups, index, mark) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        mark[g] = 2;
        None
    }
    let mut mark = vec![0u8; groups.len()];
    (0..groups.len()).find_map(|g| {
        if mark[g] == 0 {
            visit(g, groups, &index, &mut mark)
        } else {
            None
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Planning.

impl Bed {
    /// Turns every `kernel_file` into the image pushed for it (`kernel_files`: the path as
    /// written to `sha256:<hex>`); the message of the first one missing or not a digest.
    pub fn resolve_kernel_files(
        &mut self,
        kernel_files: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        for g in &mut self.groups {
            let Boot::KernelFile(path) = &g.boot else {
                continue;
            };
            let Some(reference) = kernel_files.get(path) else {
                return Err(format!(
                    "group {:?}: kernel_file {path:?} is a file on the client; push it and name \
                     its image here (rhyzomectl testbed apply does both)",
                    g.name
                ));
            };
            let digest = crate::images::parse_digest("kernel_files", reference)
                .map_err(|e| format!("kernel_files[{path:?}]: {}", e.message))?;
            g.boot = Boot::Image(format!("sha256:{digest}"));
        }
        Ok(())
    }

    /// The name of instance `index` of `group`.
    pub fn instance_name(&self, group: &str, index: u32) -> String {
        format!("{}-{}-{}", self.name, group, index)
    }

    /// Groups in an order that respects `after`, file order among groups free to go.
    pub fn start_order(&self) -> Vec<String> {
        let mut done: Vec<String> = Vec::new();
        while done.len() < self.groups.len() {
            let next = self
                .groups
                .iter()
                .find(|g| !done.contains(&g.name) && g.after.iter().all(|a| done.contains(a)))
                .expect("parse_bed refuses cycles");
            done.push(next.name.clone());
        }
        done
    }

    /// The address of each instance of each group on a single bed network.
    fn addresses(&self) -> BTreeMap<String, Vec<Ipv4Addr>> {
        let mut hosts: BTreeMap<&str, Box<dyn Iterator<Item = Ipv4Addr>>> = BTreeMap::new();
        for n in &self.networks {
            let subnet = Ipv4Subnet::parse(&n.subnet).expect("checked by parse_bed");
            let gateway = n
                .gateway
                .as_ref()
                .map(|g| g.parse().expect("checked by parse_bed"))
                .unwrap_or_else(|| subnet.hosts().next().expect("checked by parse_bed"));
            hosts.insert(
                n.name.as_str(),
                Box::new(subnet.hosts().filter(move |h| *h != gateway)),
            );
        }
        let mut out = BTreeMap::new();
        for g in &self.groups {
            let nets: Vec<&String> = match &g.attachment {
                Attachment::Network(n) => vec![n],
                Attachment::Nets(m) => m.values().collect(),
                _ => vec![],
            };
            for n in nets {
                let it = hosts.get_mut(n.as_str()).expect("checked by parse_bed");
                let addrs: Vec<Ipv4Addr> = it.by_ref().take(g.count as usize).collect();
                out.entry(format!("{}/{}", g.name, n)).or_insert(addrs);
            }
        }
        out
    }

    /// The networks and instance requests the bed stands for, bed placeholders filled in.
    pub fn plan(&self) -> BedPlan {
        self.plan_scaled(&BTreeMap::new())
            .expect("a checked file fits its networks as written")
    }

    /// [`Self::plan`] with some groups' counts overridden (`testbed scale`); see
    /// [`scale::Layout`] for where the instances beyond the file's count sit and what their
    /// placeholders see. An error names the field `counts.GROUP`.
    pub fn plan_scaled(
        &self,
        counts: &BTreeMap<String, u32>,
    ) -> Result<BedPlan, crate::validate::FieldError> {
        let layout = scale::Layout::new(self, counts)?;
        let by_name: BTreeMap<&str, &Group> =
            self.groups.iter().map(|g| (g.name.as_str(), g)).collect();
        let mut instances = BTreeMap::new();
        for g in &self.groups {
            let tokens = tokenize(&g.kernel_parameters).expect("checked by parse_bed");
            let mut list = Vec::new();
            for index in 0..layout.count(g) {
                let view = layout.view(g, index);
                let mut params = String::new();
                for token in &tokens {
                    match token {
                        Token::Text(t) => params.push_str(t),
                        // Kept doubled: the server reads the text again.
                        Token::Brace(b) => {
                            params.push(*b);
                            params.push(*b);
                        }
                        Token::Placeholder(inner) => {
                            match parse_bed_placeholder(inner).expect("checked by parse_bed") {
                                None => {
                                    params.push('{');
                                    params.push_str(inner);
                                    params.push('}');
                                }
                                Some(BedPlaceholder::Index) => params.push_str(&index.to_string()),
                                Some(BedPlaceholder::GroupIps(t)) => {
                                    params.push_str(&join(view.group_ips(by_name[t.as_str()])))
                                }
                                Some(BedPlaceholder::Peers { group: t, count }) => {
                                    let target = by_name[t.as_str()];
                                    let ips = view.group_ips(target);
                                    let chosen = peers(
                                        self.seed,
                                        &g.name,
                                        index,
                                        &t,
                                        ips.len() as u32,
                                        count,
                                    )
                                    .ok_or_else(|| scale::too_few_peers(g, index, target, count))?;
                                    let picked: Vec<Ipv4Addr> =
                                        chosen.iter().map(|&j| ips[j as usize]).collect();
                                    params.push_str(&join(&picked));
                                }
                            }
                        }
                    }
                }
                let (kernel, image) = match &g.boot {
                    Boot::Kernel(k) => (k.clone(), None),
                    Boot::Image(i) | Boot::KernelFile(i) => (String::new(), Some(i.clone())),
                };
                let (network, nets) = match &g.attachment {
                    Attachment::Default => (None, None),
                    Attachment::Bridge(b) => (
                        Some(NetworkSpec {
                            bridge: Some(b.clone()),
                            ..Default::default()
                        }),
                        None,
                    ),
                    Attachment::Network(n) => (
                        Some(NetworkSpec {
                            name: Some(n.clone()),
                            ipv4: Some(layout.address(g, n, index).to_string()),
                            ..Default::default()
                        }),
                        None,
                    ),
                    Attachment::Nets(m) => (None, Some(m.clone())),
                };
                list.push(PlannedInstance {
                    group: g.name.clone(),
                    index,
                    spec: InstanceSpec {
                        name: self.instance_name(&g.name, index),
                        kernel,
                        image,
                        nets,
                        kernel_parameters: params,
                        memory_mib: g.memory_mib,
                        vcpus: g.vcpus,
                        network,
                        restart: Some(g.restart.clone()),
                        link: (!g.link.is_empty()).then_some(g.link),
                        placement: g.placement,
                        host_selector: g.host_selector.clone(),
                        failover: g.failover.then_some(true),
                        labels: [
                            ("testbed".to_string(), self.name.clone()),
                            ("group".to_string(), g.name.clone()),
                        ]
                        .into(),
                        ..Default::default()
                    },
                });
            }
            instances.insert(g.name.clone(), list);
        }
        Ok(BedPlan {
            networks: self
                .networks
                .iter()
                .map(|n| NetworkCreate {
                    name: n.name.clone(),
                    subnet: n.subnet.clone(),
                    gateway: n.gateway.clone(),
                    mode: None,
                    dhcp: None,
                    emulated: n.emulated.then_some(true),
                    seed: None,
                    link: (!n.link.is_empty()).then_some(n.link),
                })
                .collect(),
            start_order: self.start_order(),
            instances,
        })
    }
}

fn join(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------------
// Wire types of `/v1/testbeds`.

/// `POST /v1/testbeds`: a test-bed file to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestbedApply {
    /// The TOML text of the file, at most 64 KiB (see `docs/testbeds.md`).
    #[schema(
        example = "name = \"demo\"\n[[groups]]\nname = \"a\"\ncount = 2\nkernel = \"/var/lib/rhyzome/kernels/node.virtio\"\n"
    )]
    pub file: String,
    /// Only compute and return the plan; change nothing.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// For each `kernel_file` of the file, as written there, the image the client pushed
    /// for it: `sha256:<hex>` (`rhyzomectl testbed apply` pushes the files and fills this in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!({"./node.virtio": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}))]
    pub kernel_files: Option<BTreeMap<String, String>>,
}

/// What applying a file does to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Create,
    Replace,
    Delete,
    /// Changed in place, without a restart: the instance's link conditions.
    Update,
}

/// One change of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestbedChange {
    pub group: String,
    pub instance: String,
    pub action: ChangeKind,
    /// Why, in words.
    pub reason: String,
}

/// The answer to an apply: what it will do (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestbedPlan {
    pub name: String,
    /// Whether the file changes anything; `false` means "no changes".
    pub changed: bool,
    pub dry_run: bool,
    /// Managed networks the bed will create.
    pub networks_created: Vec<String>,
    /// Bed networks made again, with the bed's instances on them, because their subnet,
    /// gateway or emulation changed.
    #[serde(default)]
    pub networks_replaced: Vec<String>,
    /// Bed networks whose default link conditions change in place.
    #[serde(default)]
    pub networks_updated: Vec<String>,
    /// Instance changes, in start order.
    pub changes: Vec<TestbedChange>,
    /// What else to know: counts of `testbed scale` that this apply resets to the file's, or
    /// that a scale's counts last until the next apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One group of a bed, as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestbedGroupStatus {
    pub name: String,
    /// Instances the bed asks for: the file's count, or the one `testbed scale` set.
    pub desired: u32,
    /// The file's count.
    #[serde(default)]
    pub file_count: u32,
    /// Instances that exist.
    pub created: u32,
    pub running: u32,
    /// Running instances that passed the group's readiness check.
    pub ready: u32,
    pub exited: u32,
    /// Crashed or failed.
    pub failed: u32,
    /// Restarts so far by restart policy, summed over the group's instances.
    #[serde(default)]
    pub restarts: u32,
    /// Milliseconds from the bed's last apply until the last instance became ready, once all
    /// are.
    pub ms_to_ready: Option<u64>,
    /// The groups this one waits for (its `after`).
    #[serde(default)]
    pub after: Vec<String>,
    /// The group's running instances that passed its readiness check, by name.
    #[serde(default)]
    pub ready_members: Vec<String>,
    /// The group's instances per host (`{"local": 10, "b": 10}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, u32>,
}

/// A test bed and its groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Testbed {
    pub name: String,
    pub seed: u64,
    /// The token that applied it.
    pub owner: String,
    /// `present`, or `deleting` while a destroy is carried out.
    pub desired: String,
    /// RFC 3339 time of the last apply that changed something.
    pub applied_at: String,
    /// Whether every group has all its instances ready.
    pub ready: bool,
    /// Networks the bed owns.
    pub networks: Vec<String>,
    /// In start order.
    pub groups: Vec<TestbedGroupStatus>,
    /// The last error the daemon met while converging, if any.
    pub last_error: Option<String>,
}

/// `GET /v1/testbeds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestbedList {
    pub testbeds: Vec<Testbed>,
}

pub mod ops;
mod scale;

#[cfg(test)]
mod tests;
