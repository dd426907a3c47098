//! The scheduler: which host a new instance runs on, and why.
//!
//! [`choose`] is pure: it filters the candidate hosts (reachable, matching the selector, under
//! `MaxInstances`, with the free memory the guest needs, able to serve what the instance
//! needs) and ranks the rest by the policy: `spread` takes the host with the fewest of this
//! daemon's instances (ties: most free memory), `binpack` the one with the most (ties: least
//! free memory); further ties go to the earlier host in `Hosts`. The reason names the winner's
//! figures and every host passed over with why, so `instance show` can explain the choice.
//! [`Service::place`] gathers the figures and keeps a reservation per decision until the
//! record is written, so concurrent creates see each other's choices.

use super::{now_rfc3339, Service, ServiceError};
use crate::store::PlacementRecord;
use rhyzome_api::validate::FieldError;
use rhyzome_api::{InstanceSpec, PlacementPolicy};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// What the scheduler knows of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// `None` when reachable; else why not.
    pub unreachable: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub max_instances: Option<u32>,
    /// This daemon's instances there, including decisions not yet written.
    pub instances: u32,
    /// `None`: not known (the host's facts were never read).
    pub free_memory_mib: Option<u64>,
    pub primary: bool,
    /// Its guests can reach the controller's link emulators: the primary, or a remote host
    /// with a `FrameAddress` while `LinkEmulatorAddress` is set.
    pub frames: bool,
}

/// What the instance needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need<'a> {
    pub memory_mib: u32,
    pub selector: Option<&'a BTreeMap<String, String>>,
    pub policy: PlacementPolicy,
    /// What ties it to some hosts.
    pub ties: Ties,
}

/// What ties an instance to some hosts, from its NICs and volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ties {
    /// Why only the primary host can serve it (a volume lives there).
    pub primary_only: Option<String>,
    /// A NIC is on an emulated network: a host serves it only when its guests can reach the
    /// emulators ([`Candidate::frames`]).
    pub emulated: bool,
}

/// The host chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub host: String,
    pub reason: String,
}

/// What ties an instance with these NICs and volumes to some hosts: volumes live on the
/// primary; an emulated network's NICs reach its emulator from any host with a path for
/// frames; a plain managed network is brought up on whichever host the instance runs on.
/// `emulated` holds the ids of the emulated networks among the NICs'.
pub fn ties(
    attachments: &[crate::store::attachments::Attachment],
    emulated: &HashMap<String, u16>,
    has_volumes: bool,
) -> Ties {
    let networks = || attachments.iter().filter_map(|a| a.network.as_ref());
    let primary_only =
        has_volumes.then(|| "its volumes live in the primary host's pool".to_string());
    Ties {
        primary_only,
        emulated: networks().any(|n| emulated.contains_key(n)),
    }
}

/// Why a host cannot serve a NIC on an emulated network.
pub const NO_FRAME_PATH: &str = "its guests cannot reach the link emulators: an emulated \
     network needs the host's FrameAddress and the controller's LinkEmulatorAddress";

/// Chooses a host for `need` among `candidates`, or says why none fits.
///
/// Free memory filters only when there is a choice: libvirt's figure is the kernel's
/// `MemFree`, which page cache keeps low on a busy host that could still start the guest, and
/// with one host the create itself is the better test (as it was before hosts).
pub fn choose(candidates: &[Candidate], need: &Need<'_>) -> Result<Choice, String> {
    let mut passed_over = Vec::new();
    let mut fit: Vec<&Candidate> = Vec::new();
    for c in candidates {
        let why_not = if let Some(e) = &c.unreachable {
            Some(format!("unreachable ({e})"))
        } else if let (Some(why), false) = (&need.ties.primary_only, c.primary) {
            Some(why.clone())
        } else if need.ties.emulated && !c.frames {
            Some(NO_FRAME_PATH.into())
        } else if let Some((k, v)) = need
            .selector
            .and_then(|s| s.iter().find(|(k, v)| c.labels.get(*k) != Some(*v)))
        {
            Some(format!("no label {k}={v}"))
        } else if c.max_instances.is_some_and(|max| c.instances >= max) {
            Some(format!(
                "full ({} of MaxInstances {})",
                c.instances,
                c.max_instances.unwrap_or_default()
            ))
        } else if candidates.len() > 1
            && c.free_memory_mib
                .is_some_and(|free| free < u64::from(need.memory_mib))
        {
            Some(format!(
                "{} MiB free, {} MiB needed",
                c.free_memory_mib.unwrap_or_default(),
                need.memory_mib
            ))
        } else {
            None
        };
        match why_not {
            Some(why) => passed_over.push(format!("{} ({why})", c.name)),
            None => fit.push(c),
        }
    }
    let free = |c: &Candidate| c.free_memory_mib.unwrap_or(0);
    // `min_by_key` keeps the first of equal keys: the earlier host in `Hosts` wins ties.
    let best = match need.policy {
        PlacementPolicy::Spread => fit
            .iter()
            .min_by_key(|c| (c.instances, std::cmp::Reverse(free(c)))),
        PlacementPolicy::Binpack => fit
            .iter()
            .min_by_key(|c| (std::cmp::Reverse(c.instances), free(c))),
    };
    let passed = if passed_over.is_empty() {
        String::new()
    } else {
        format!("; passed over: {}", passed_over.join(", "))
    };
    let Some(best) = best else {
        return Err(format!("no host can take it: {}", passed_over.join(", ")));
    };
    let figure = match need.policy {
        PlacementPolicy::Spread => "fewest instances",
        PlacementPolicy::Binpack => "most instances with room",
    };
    let memory = best
        .free_memory_mib
        .map(|m| format!(", {m} MiB free"))
        .unwrap_or_default();
    Ok(Choice {
        host: best.name.clone(),
        reason: format!(
            "{figure} ({} of {} hosts fit; {} there{memory}){passed}",
            fit.len(),
            candidates.len(),
            best.instances
        ),
    })
}

/// Decisions made but not yet dropped, by instance name: the host each went to. A decision
/// counts until its record is in the store (then the store counts it) or the create fails.
#[derive(Default)]
pub struct Reservations(Arc<Mutex<HashMap<String, String>>>);

/// Holds one reservation until dropped (once the record is written, or the create failed).
pub struct Reservation {
    table: Arc<Mutex<HashMap<String, String>>>,
    name: String,
}

impl Reservations {
    /// Instance name -> host of every decision not yet dropped.
    fn pending(&self) -> HashMap<String, String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reserve(&self, name: &str, host: &str) -> Reservation {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), host.to_string());
        Reservation {
            table: self.0.clone(),
            name: name.to_string(),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

/// Where a create goes, as decided before its record is written.
pub struct Placed {
    pub host: String,
    pub record: PlacementRecord,
    pub failover: bool,
    pub _reservation: Reservation,
}

impl Service {
    /// The figures of every host, for the scheduler (this daemon's instances per host include
    /// reservations).
    pub(crate) fn candidates(&self) -> Result<Vec<Candidate>, ServiceError> {
        let stored = self.store.instances_per_host()?;
        // A decision whose record is written already is in `stored`: count it once.
        let mut reserved: HashMap<String, u32> = HashMap::new();
        for (name, host) in self.reservations.pending() {
            if self.store.by_name(&name)?.is_none() {
                *reserved.entry(host).or_default() += 1;
            }
        }
        let primary = self.hosts.primary().name().to_string();
        Ok(self
            .hosts
            .all()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let name = h.name().to_string();
                let mut instances = reserved.get(&name).copied().unwrap_or(0);
                instances += stored.get(&name).copied().unwrap_or(0);
                if name == primary {
                    // Records from before hosts name none: they are the primary's.
                    instances += stored.get("").copied().unwrap_or(0);
                }
                Candidate {
                    unreachable: (!h.reachable())
                        .then(|| h.error().unwrap_or_else(|| "not connected".into())),
                    labels: h.config.labels.clone(),
                    max_instances: h.config.max_instances,
                    instances,
                    free_memory_mib: h.facts().map(|f| f.free_memory_kib / 1024),
                    primary: i == 0,
                    frames: self.frame_route(&name).is_ok(),
                    name,
                }
            })
            .collect())
    }

    /// Chooses the host of a new instance: the one `spec.host` names (checked: it exists, is
    /// reachable and can serve the instance), else the scheduler's choice. `ties` says what
    /// ties the instance to some hosts.
    pub(crate) fn place(
        &self,
        spec: &InstanceSpec,
        memory_mib: u32,
        ties: Ties,
    ) -> Result<Placed, ServiceError> {
        let failover = spec.failover.unwrap_or(false);
        if let Some(selector) = &spec.host_selector {
            for (k, v) in selector {
                rhyzome_api::validate::validate_label_key(k)
                    .and_then(|_| rhyzome_api::validate::validate_label_value(k, v))
                    .map_err(|e| FieldError::new("host_selector", e.message))?;
            }
        }
        if let Some(name) = &spec.host {
            if spec.host_selector.is_some() || spec.placement.is_some() {
                return Err(FieldError::new(
                    "host",
                    "names the host, so host_selector and placement must not be set",
                )
                .into());
            }
            if failover {
                return Err(FieldError::new(
                    "failover",
                    "cannot be set with host: a pinned instance stays on its host",
                )
                .into());
            }
            let Some(host) = self.hosts.get(name) else {
                let known: Vec<&str> = self.hosts.all().iter().map(|h| h.name()).collect();
                return Err(FieldError::new(
                    "host",
                    format!("no host named {name:?} (hosts: {})", known.join(", ")),
                )
                .into());
            };
            let why_not = match (&ties.primary_only, self.frame_route(name)) {
                (Some(why), _) if host.name() != self.hosts.primary().name() => Some(why.clone()),
                (_, Err(why)) if ties.emulated => Some(why),
                _ => None,
            };
            if let Some(why) = why_not {
                return Err(
                    FieldError::new("host", format!("{name:?} cannot serve it: {why}")).into(),
                );
            }
            // An unreachable host is the server's trouble, not the request's: 503.
            host.backend().map_err(ServiceError::Backend)?;
            return Ok(Placed {
                host: name.clone(),
                record: PlacementRecord {
                    how: "pinned".into(),
                    reason: "the request named the host".into(),
                    decided_at: now_rfc3339(),
                },
                failover,
                _reservation: self.reservations.reserve(&spec.name, name),
            });
        }
        let policy = spec.placement.unwrap_or_default();
        let need = Need {
            memory_mib,
            selector: spec.host_selector.as_ref(),
            policy,
            ties,
        };
        // Reading the figures and reserving the choice must not interleave with another
        // create's, or concurrent creates of a test bed would all see the same counts.
        let _one_at_a_time = self.placing.lock().unwrap_or_else(|p| p.into_inner());
        // No host fits: a state of the hosts (full, down, or none with the labels asked
        // for), not a malformed request.
        let choice =
            choose(&self.candidates()?, &need).map_err(|message| ServiceError::Conflict {
                field: Some(if need.selector.is_some() {
                    "host_selector"
                } else {
                    "host"
                }),
                message,
            })?;
        Ok(Placed {
            _reservation: self.reservations.reserve(&spec.name, &choice.host),
            host: choice.host,
            record: PlacementRecord {
                how: policy.as_str().into(),
                reason: choice.reason,
                decided_at: now_rfc3339(),
            },
            failover,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, instances: u32, free: u64) -> Candidate {
        Candidate {
            name: name.into(),
            unreachable: None,
            labels: BTreeMap::new(),
            max_instances: None,
            instances,
            free_memory_mib: Some(free),
            primary: name == "a",
            frames: name == "a",
        }
    }

    fn need(policy: PlacementPolicy) -> Need<'static> {
        Need {
            memory_mib: 32,
            selector: None,
            policy,
            ties: Ties::default(),
        }
    }

    #[test]
    fn spread_takes_the_emptiest_and_binpack_the_fullest() {
        let hosts = [host("a", 5, 1000), host("b", 2, 1000), host("c", 9, 1000)];
        assert_eq!(
            choose(&hosts, &need(PlacementPolicy::Spread)).unwrap().host,
            "b"
        );
        assert_eq!(
            choose(&hosts, &need(PlacementPolicy::Binpack))
                .unwrap()
                .host,
            "c"
        );
    }

    #[test]
    fn ties_go_to_free_memory_then_to_the_earlier_host() {
        let hosts = [host("a", 1, 500), host("b", 1, 900), host("c", 1, 900)];
        assert_eq!(
            choose(&hosts, &need(PlacementPolicy::Spread)).unwrap().host,
            "b"
        );
        assert_eq!(
            choose(&hosts, &need(PlacementPolicy::Binpack))
                .unwrap()
                .host,
            "a"
        );
    }

    #[test]
    fn filters_say_why_each_host_was_passed_over() {
        let mut down = host("b", 0, 1000);
        down.unreachable = Some("connection refused".into());
        let mut full = host("c", 4, 1000);
        full.max_instances = Some(4);
        let small = host("d", 0, 16);
        let mut labelled = host("e", 3, 1000);
        labelled.labels.insert("rack".into(), "2".into());
        let hosts = [host("a", 0, 1000), down, full, small, labelled];
        let selector: BTreeMap<String, String> = [("rack".to_string(), "2".to_string())].into();
        let mut n = need(PlacementPolicy::Spread);
        n.selector = Some(&selector);
        let c = choose(&hosts, &n).unwrap();
        assert_eq!(c.host, "e");
        for expected in [
            "a (no label rack=2)",
            "b (unreachable (connection refused))",
            "c (no label rack=2)",
            "d (no label rack=2)",
        ] {
            assert!(c.reason.contains(expected), "{expected} in {}", c.reason);
        }
        let c = choose(&hosts[..4], &need(PlacementPolicy::Spread)).unwrap();
        assert_eq!(c.host, "a");
        assert!(
            c.reason.contains("c (full (4 of MaxInstances 4))"),
            "{}",
            c.reason
        );
        assert!(
            c.reason.contains("d (16 MiB free, 32 MiB needed)"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn primary_only_needs_and_no_fit_are_explained() {
        let hosts = [host("a", 9, 1000), host("b", 0, 1000)];
        let mut n = need(PlacementPolicy::Spread);
        n.ties.primary_only = Some("network lab lives on the primary host".into());
        assert_eq!(choose(&hosts, &n).unwrap().host, "a");
        // An emulated network goes wherever frames reach the emulator.
        let mut n = need(PlacementPolicy::Spread);
        n.ties.emulated = true;
        let choice = choose(&hosts, &n).unwrap();
        assert_eq!(choice.host, "a");
        assert!(choice.reason.contains(NO_FRAME_PATH), "{}", choice.reason);
        let mut b = host("b", 0, 1000);
        b.frames = true;
        assert_eq!(choose(&[host("a", 9, 1000), b], &n).unwrap().host, "b");
        let mut a = host("a", 0, 1000);
        a.unreachable = Some("down".into());
        let e = choose(&[a], &n).unwrap_err();
        assert!(e.contains("a (unreachable (down))"), "{e}");
    }

    #[test]
    fn free_memory_filters_only_when_there_is_a_choice() {
        let small = host("a", 0, 3);
        assert_eq!(
            choose(std::slice::from_ref(&small), &need(PlacementPolicy::Spread))
                .unwrap()
                .host,
            "a"
        );
        let e = choose(&[small, host("b", 9, 16)], &need(PlacementPolicy::Spread)).unwrap_err();
        assert!(e.contains("a (3 MiB free, 32 MiB needed)"), "{e}");
    }

    #[test]
    fn unknown_free_memory_does_not_exclude_a_host() {
        let mut b = host("b", 0, 0);
        b.free_memory_mib = None;
        assert_eq!(
            choose(&[host("a", 1, 1000), b], &need(PlacementPolicy::Spread))
                .unwrap()
                .host,
            "b"
        );
    }

    #[test]
    fn reservations_count_until_dropped() {
        let r = Reservations::default();
        let one = r.reserve("x", "b");
        let two = r.reserve("y", "b");
        assert_eq!(r.pending().len(), 2);
        drop(one);
        assert_eq!(r.pending().get("y").map(String::as_str), Some("b"));
        drop(two);
        assert!(r.pending().is_empty());
    }
}
