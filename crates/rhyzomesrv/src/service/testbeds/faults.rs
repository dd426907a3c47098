//! `testbed fault` (`POST /v1/testbeds/{name}/faults`): kill or restart picked instances of a
//! group, or partition and heal the emulated networks two groups share.
//!
//! Picks are deterministic ([`pick_members`]): `pick` (a partial Fisher-Yates shuffle driven
//! by SplitMix64, the same as `{peers}`) over the group's members in index order, seeded with
//! the request's `seed` folded with `"fault"` and the group's name, or, without one, with the
//! bed's `seed` folded with `"fault"`, the group's name and the bed's fault sequence number.
//! The sequence number (faults injected so far, kept with the desired state across applies
//! and restarts) makes successive faults pick differently and two beds built alike pick
//! alike.
//!
//! A kill destroys the domain as a crash would: the instance is recorded `crashed` and its
//! restart policy decides (the reconciler brings it back when one applies). Each fault is
//! published as an event of `testbed:NAME` with state `fault`.
//!
//! Concurrency: the sequence number is taken under the bed's lock; the instances are then
//! acted on one at a time under their own name locks, as `instance restart` does.

use super::{lock_name, owner_caller, Service};
use crate::auth::Caller;
use crate::console::Outcome;
use crate::service::authz::{authorize, Action};
use crate::service::{now_rfc3339, ServiceError};
use crate::store::testbeds::MemberRecord;
use rhyzome_api::testbed::{pick, seeded_rng, Bed};
use rhyzome_api::validate::FieldError;
use rhyzome_api::{InstanceState, PartitionRequest, TestbedFault, TestbedFaultResult};
use std::sync::Arc;

/// The members of a group that a kill or restart picks: `count` of `members` (in index order),
/// returned in index order. `explicit` is the request's seed; without it the bed's seed and
/// the fault's sequence number decide.
pub fn pick_members<'m>(
    bed_seed: u64,
    explicit: Option<u64>,
    sequence: u64,
    group: &str,
    members: &'m [MemberRecord],
    count: usize,
) -> Vec<&'m MemberRecord> {
    let sequence = sequence.to_string();
    let mut rng = match explicit {
        Some(seed) => seeded_rng(seed, &["fault", group]),
        None => seeded_rng(bed_seed, &["fault", group, &sequence]),
    };
    let mut picked: Vec<&MemberRecord> = pick(members.len(), count, &mut rng)
        .into_iter()
        .map(|i| &members[i])
        .collect();
    picked.sort_by_key(|m| m.index);
    picked
}

/// A side of a partition: `group=G` (or just `G`), one of the bed's groups.
fn side<'b>(bed: &'b Bed, text: &str) -> Result<&'b rhyzome_api::testbed::Group, FieldError> {
    let name = text.strip_prefix("group=").unwrap_or(text);
    bed.groups.iter().find(|g| g.name == name).ok_or_else(|| {
        FieldError::new(
            "between",
            format!(
                "{text:?} names no group of test bed {:?}; write group=NAME",
                bed.name
            ),
        )
    })
}

/// The label selectors that stand for two groups of bed `bed` on a network.
fn selectors(bed: &str, a: &str, b: &str) -> [String; 2] {
    [
        format!("testbed={bed},group={a}"),
        format!("testbed={bed},group={b}"),
    ]
}

/// A fault, checked whole before it is counted.
enum Plan {
    /// Kill (or restart) these instances.
    Instances { kill: bool, picked: Vec<String> },
    /// Cut these emulated networks between two selectors.
    Partition {
        networks: Vec<String>,
        between: [String; 2],
    },
    /// Remove one partition, or all, from these emulated networks.
    Heal {
        networks: Vec<String>,
        between: Option<[String; 2]>,
    },
}

impl Service {
    /// Injects one fault into bed `name`.
    pub async fn testbed_fault(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        req: TestbedFault,
    ) -> Result<TestbedFaultResult, ServiceError> {
        authorize(
            caller,
            Action::ChangeTestbed(name, "inject faults into test beds"),
        )?;
        let guard = self.locks.lock(&lock_name(name)).await;
        let (r, bed) = self.live_testbed(name, "action")?;
        let sequence = r.overrides.faults;
        let (action, seed) = match &req {
            TestbedFault::Kill { seed, .. } => ("kill", Some(seed.unwrap_or(bed.seed))),
            TestbedFault::Restart { seed, .. } => ("restart", Some(seed.unwrap_or(bed.seed))),
            TestbedFault::Partition { .. } => ("partition", None),
            TestbedFault::Heal { .. } => ("heal", None),
        };
        let plan = self.plan_fault(&bed, sequence, req)?;
        // Counted first: a crash halfway does not hand the next fault the same picks.
        let mut overrides = r.overrides.clone();
        overrides.faults += 1;
        self.store
            .set_testbed_overrides(name, &r.desired, &overrides)?;
        drop(guard);

        let mut result = TestbedFaultResult {
            action: action.into(),
            sequence,
            seed,
            instances: Vec::new(),
            networks: Vec::new(),
            warnings: Vec::new(),
        };
        self.carry_out(&owner_caller(&r), plan, &mut result).await?;
        let what = if result.instances.is_empty() {
            result.networks.join(", ")
        } else {
            result.instances.join(", ")
        };
        tracing::info!(testbed = %name, action, sequence, %what, "test bed fault");
        self.events.publish(rhyzome_api::Event {
            time: now_rfc3339(),
            instance: format!("testbed:{name}"),
            state: "fault".into(),
            exit_code: None,
            reason: Some(format!(
                "fault {sequence}: {action}{} {what}",
                seed.map_or(String::new(), |s| format!(" (seed {s})"))
            )),
            restart_count: 0,
        });
        Ok(result)
    }

    /// What `req` does to `bed`, or why it cannot. Changes nothing.
    fn plan_fault(
        &self,
        bed: &Bed,
        sequence: u64,
        req: TestbedFault,
    ) -> Result<Plan, ServiceError> {
        let name = &bed.name;
        let kill = matches!(req, TestbedFault::Kill { .. });
        Ok(match req {
            TestbedFault::Kill { group, count, seed }
            | TestbedFault::Restart { group, count, seed } => {
                if !bed.groups.iter().any(|g| g.name == group) {
                    return Err(FieldError::new(
                        "group",
                        format!("test bed {name:?} has no group {group:?}"),
                    )
                    .into());
                }
                let members: Vec<MemberRecord> = self
                    .store
                    .testbed_members(name)?
                    .into_iter()
                    .filter(|m| m.group == group)
                    .collect();
                if count < 1 || count > members.len() as i64 {
                    return Err(FieldError::new(
                        "count",
                        format!(
                            "count is {count}; group {group:?} has {} instances now, give 1 to that",
                            members.len()
                        ),
                    )
                    .into());
                }
                let picked =
                    pick_members(bed.seed, seed, sequence, &group, &members, count as usize)
                        .into_iter()
                        .map(|m| m.instance.clone())
                        .collect();
                Plan::Instances { kill, picked }
            }
            TestbedFault::Partition { between } => {
                let (a, b) = (side(bed, &between[0])?, side(bed, &between[1])?);
                if a.name == b.name {
                    return Err(FieldError::new("between", "give two different groups").into());
                }
                let shared: Vec<&String> = a
                    .bed_networks()
                    .into_iter()
                    .filter(|n| b.bed_networks().contains(n))
                    .collect();
                if shared.is_empty() {
                    return Err(FieldError::new(
                        "between",
                        format!(
                            "groups {:?} and {:?} share no network of the bed; a partition cuts \
                             the emulated networks two groups share",
                            a.name, b.name
                        ),
                    )
                    .into());
                }
                let networks = self.emulated(shared.into_iter().cloned())?;
                if networks.is_empty() {
                    return Err(ServiceError::Conflict {
                        field: Some("between"),
                        message: format!(
                            "groups {:?} and {:?} share no emulated network: only an emulated \
                             network can be partitioned",
                            a.name, b.name
                        ),
                    });
                }
                Plan::Partition {
                    networks,
                    between: selectors(name, &a.name, &b.name),
                }
            }
            TestbedFault::Heal { between } => {
                let between = match between {
                    Some(pair) => {
                        let (a, b) = (side(bed, &pair[0])?, side(bed, &pair[1])?);
                        Some(selectors(name, &a.name, &b.name))
                    }
                    None => None,
                };
                let networks = self.emulated(self.store.testbed_networks(name)?.into_iter())?;
                if networks.is_empty() {
                    return Err(ServiceError::Conflict {
                        field: Some("action"),
                        message: format!(
                            "test bed {name:?} has no emulated network, so nothing to heal"
                        ),
                    });
                }
                Plan::Heal { networks, between }
            }
        })
    }

    /// Those of `networks` that are emulated.
    fn emulated(
        &self,
        networks: impl Iterator<Item = String>,
    ) -> Result<Vec<String>, ServiceError> {
        let mut out = Vec::new();
        for n in networks {
            if self
                .store
                .network_by_name(&n)?
                .is_some_and(|r| r.emulator.is_some())
            {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Does what `plan` says, as `owner` (the bed's) for instances and as the daemon for the
    /// bed's networks, filling in `result`.
    async fn carry_out(
        &self,
        owner: &Caller,
        plan: Plan,
        result: &mut TestbedFaultResult,
    ) -> Result<(), ServiceError> {
        let internal = Caller::internal();
        match plan {
            Plan::Instances { kill, picked } => {
                for instance in &picked {
                    let outcome = if kill {
                        self.crash_instance(instance).await
                    } else {
                        self.restart(owner, instance).await.map(|_| None)
                    };
                    match outcome {
                        Ok(None) => {}
                        Ok(Some(warning)) => result.warnings.push(warning),
                        Err(ServiceError::NotFound(_)) => result
                            .warnings
                            .push(format!("instance {instance:?} does not exist now")),
                        Err(e) => return Err(e),
                    }
                }
                result.instances = picked;
            }
            Plan::Partition { networks, between } => {
                for network in &networks {
                    let conditions = self
                        .partition_network(
                            &internal,
                            network,
                            PartitionRequest {
                                between: between.clone(),
                            },
                        )
                        .await?;
                    result.warnings.extend(conditions.warnings);
                }
                result.networks = networks;
            }
            Plan::Heal { networks, between } => {
                for network in &networks {
                    match &between {
                        None => self.heal_network(&internal, network).await?,
                        Some(pair) => self.remove_partition(network, pair).await?,
                    };
                }
                result.networks = networks;
            }
        }
        Ok(())
    }

    /// Ends a running instance as a crash: its domain destroyed, recorded `crashed`, and its
    /// restart policy applied. `Some(warning)` when it was not running.
    async fn crash_instance(&self, name: &str) -> Result<Option<String>, ServiceError> {
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        if r.state != InstanceState::Running {
            return Ok(Some(format!(
                "instance {name:?} is {}, not running; left as it is",
                r.state.as_str()
            )));
        }
        self.destroy_domain(&r).await?;
        self.record_end(&r, Outcome::Aborted)?;
        tracing::info!(instance = %name, "instance killed by a test-bed fault");
        Ok(None)
    }
}
