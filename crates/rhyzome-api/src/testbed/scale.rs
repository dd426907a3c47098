//! Where a scaled bed's instances sit (`testbed scale`, issue 15): the file's counts overridden
//! per group, without moving or changing any instance the file itself plans.
//!
//! Scaling adds or removes the highest indices and must not replace the others, so:
//!
//! - An instance within its group's count in the file (index < file count) is planned exactly
//!   as the file plans it: same address, and its `{group.G.ip}` and `{peers:G:K}` see the
//!   groups at their file counts. A scale therefore never changes it (its peers may name
//!   instances a scale-down removed, or miss the ones a scale-up added).
//! - An instance beyond the file's count (an "extra") sees the bed at its scaled size: its
//!   `{group.G.ip}` lists every instance G has now and its `{peers:G:K}` picks among them,
//!   with the same algorithm and seed as the file's.
//! - Extras get addresses after every address the file hands out on the network, the groups
//!   on that network taking turns: extra `e` (0 for the first instance beyond the file's count)
//!   of the `k`-th of the `G` groups on the network takes the host at position
//!   `file_hosts + e * G + k` (hosts in subnet order, the gateway skipped). So one group's
//!   scale never moves another group's addresses, whatever order scales come in; the price is
//!   that a single scaled group uses only every `G`-th address of the rest of the subnet.

use super::{Attachment, Bed, Group, MAX_BED_INSTANCES};
use crate::networks::Ipv4Subnet;
use crate::validate::FieldError;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

impl Group {
    /// The bed networks an instance of this group has an address on, as [`Bed::addresses`]
    /// walks them.
    pub fn bed_networks(&self) -> Vec<&String> {
        match &self.attachment {
            Attachment::Network(n) => vec![n],
            Attachment::Nets(m) => m.values().collect(),
            _ => vec![],
        }
    }
}

fn key(group: &str, network: &str) -> String {
    format!("{group}/{network}")
}

/// The counts and addresses of a bed at its scaled size.
pub struct Layout<'b> {
    counts: BTreeMap<&'b str, u32>,
    /// By `group/network`: the addresses the file hands out.
    file: BTreeMap<String, Vec<Ipv4Addr>>,
    /// By `group/network`: the addresses at the scaled counts.
    scaled: BTreeMap<String, Vec<Ipv4Addr>>,
}

/// Which bed an instance's placeholders see: the file's, or the scaled one.
pub struct View<'l> {
    layout: &'l Layout<'l>,
    scaled: bool,
}

impl View<'_> {
    /// The addresses of `target`'s instances on its single bed network.
    pub fn group_ips(&self, target: &Group) -> &[Ipv4Addr] {
        let Attachment::Network(n) = &target.attachment else {
            return &[];
        };
        let table = if self.scaled {
            &self.layout.scaled
        } else {
            &self.layout.file
        };
        table
            .get(&key(&target.name, n))
            .map_or(&[], |v| v.as_slice())
    }
}

impl<'b> Layout<'b> {
    /// Checks `counts` (group name to count) against `bed` and lays the instances out.
    pub fn new(bed: &'b Bed, counts: &BTreeMap<String, u32>) -> Result<Self, FieldError> {
        for (name, count) in counts {
            let field = format!("counts.{name}");
            let Some(g) = bed.groups.iter().find(|g| &g.name == name) else {
                let known: Vec<&str> = bed.groups.iter().map(|g| g.name.as_str()).collect();
                return Err(FieldError::new(
                    field,
                    format!(
                        "test bed {:?} has no group {name:?} (its groups: {})",
                        bed.name,
                        known.join(", ")
                    ),
                ));
            };
            if *count > MAX_BED_INSTANCES {
                return Err(FieldError::new(
                    field,
                    format!("count is {count}; give 0 to {MAX_BED_INSTANCES}"),
                ));
            }
            if *count > 0 {
                let last = bed.instance_name(&g.name, count - 1);
                if last.len() > 63 {
                    return Err(FieldError::new(
                        field,
                        format!("instance {last:?} would be longer than 63 characters"),
                    ));
                }
            }
        }
        let effective: BTreeMap<&str, u32> = bed
            .groups
            .iter()
            .map(|g| {
                (
                    g.name.as_str(),
                    counts.get(&g.name).copied().unwrap_or(g.count),
                )
            })
            .collect();
        let total: u64 = effective.values().map(|&c| u64::from(c)).sum();
        if total > u64::from(MAX_BED_INSTANCES) {
            let field = counts
                .keys()
                .next()
                .map_or("counts".into(), |g| format!("counts.{g}"));
            return Err(FieldError::new(
                field,
                format!("the bed would have {total} instances; a bed may have at most {MAX_BED_INSTANCES}"),
            ));
        }

        let file = bed.addresses();
        // Per network: the hosts the file hands out, and the groups on it in file order.
        let mut file_hosts: BTreeMap<&str, u64> = BTreeMap::new();
        let mut groups_on: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for g in &bed.groups {
            for n in g.bed_networks() {
                *file_hosts.entry(n.as_str()).or_default() += u64::from(g.count);
                let on = groups_on.entry(n.as_str()).or_default();
                if !on.contains(&g.name.as_str()) {
                    on.push(g.name.as_str());
                }
            }
        }
        let mut scaled = BTreeMap::new();
        for g in &bed.groups {
            let count = effective[g.name.as_str()];
            for n in g.bed_networks() {
                let k = key(&g.name, n);
                let mut addrs: Vec<Ipv4Addr> =
                    file[&k].iter().copied().take(count as usize).collect();
                if count > g.count {
                    let network = bed
                        .networks
                        .iter()
                        .find(|x| &x.name == n)
                        .expect("checked by parse_bed");
                    let subnet = Ipv4Subnet::parse(&network.subnet).expect("checked by parse_bed");
                    let gateway: Ipv4Addr = network.gateway.as_ref().map_or_else(
                        || subnet.hosts().next().expect("checked by parse_bed"),
                        |gw| gw.parse().expect("checked by parse_bed"),
                    );
                    let on = &groups_on[n.as_str()];
                    let turn = on.iter().position(|x| *x == g.name).expect("listed above") as u64;
                    let stride = on.len() as u64;
                    for extra in 0..u64::from(count - g.count) {
                        let position = file_hosts[n.as_str()] + extra * stride + turn;
                        let host = subnet
                            .hosts()
                            .filter(|h| *h != gateway)
                            .nth(position as usize);
                        let Some(host) = host else {
                            return Err(FieldError::new(
                                format!("counts.{}", g.name),
                                format!(
                                    "{count} instances of group {:?} do not fit network {n:?} \
                                     ({}): the file's instances take {} hosts, and an instance \
                                     beyond the file's count takes every {stride}th host after \
                                     them (one turn per group on the network); at most {} fit",
                                    g.name,
                                    network.subnet,
                                    file_hosts[n.as_str()],
                                    g.count as u64
                                        + extras_that_fit(
                                            u64::from(subnet.host_count()).saturating_sub(1),
                                            file_hosts[n.as_str()],
                                            stride,
                                            turn
                                        ),
                                ),
                            ));
                        };
                        addrs.push(host);
                    }
                }
                scaled.insert(k, addrs);
            }
        }
        Ok(Layout {
            counts: effective,
            file,
            scaled,
        })
    }

    /// How many instances `g` has at the scaled size.
    pub fn count(&self, g: &Group) -> u32 {
        self.counts[g.name.as_str()]
    }

    /// What instance `index` of `g` sees.
    pub fn view(&self, g: &Group, index: u32) -> View<'_> {
        View {
            layout: self,
            scaled: index >= g.count,
        }
    }

    /// The address of instance `index` of `g` on network `n`.
    pub fn address(&self, g: &Group, n: &str, index: u32) -> Ipv4Addr {
        self.scaled[&key(&g.name, n)][index as usize]
    }
}

/// How many extras fit at `turn` in `hosts` usable hosts after the file's `taken`.
fn extras_that_fit(hosts: u64, taken: u64, stride: u64, turn: u64) -> u64 {
    let first = taken + turn;
    if first >= hosts {
        0
    } else {
        (hosts - first).div_ceil(stride)
    }
}

/// Instance `index` of `g` (an extra) cannot pick `k` peers in the scaled `target`.
pub fn too_few_peers(g: &Group, index: u32, target: &Group, k: u32) -> FieldError {
    FieldError::new(
        format!("counts.{}", target.name),
        format!(
            "instance {index} of group {:?} asks for {k} peers of group {:?}, which would be too \
             few at this count",
            g.name, target.name
        ),
    )
}

#[cfg(test)]
#[path = "scale_tests.rs"]
mod tests;
