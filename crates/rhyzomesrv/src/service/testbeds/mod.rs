//! Test beds (`/v1/testbeds`, issue 15): a file of groups applied as one resource.
//!
//! The file is parsed and planned by `rhyzome_api::testbed` (shared with the CLI). An apply
//! checks the whole file, computes what changes against the bed's members, stores the file
//! (the desired state) and returns the plan; a driver task then converges the bed: the bed's
//! networks first, then the groups in `after` order, a group starting only once every
//! instance of the groups it waits for is ready. Within a group, missing instances are
//! created in parallel and changed ones replaced one at a time. Each member row is written
//! before its instance is created, so a crash leaves nothing the bed does not know about.
//!
//! Concurrency: one bed is converged under the name lock `testbed:NAME` (instance names
//! cannot contain ':'), so a request's driver and the reconciler's never interleave on one
//! bed; different beds proceed in parallel. The reconciler starts a driver for every bed on
//! each pass ([`Service::drive_testbeds`]), which is how a bed survives a daemon restart and
//! how an instance that vanished comes back.

use super::authz::{authorize, Action};
use super::{blocking, now_ms, now_rfc3339, probes, Service, ServiceError};
use crate::auth::{Caller, Role};
use crate::store::testbeds::{MemberRecord, Overrides, TestbedRecord};
use rhyzome_api::testbed::{parse_bed, Readiness};
use rhyzome_api::validate::FieldError;
use rhyzome_api::{
    ChangeKind, InstanceState, Testbed, TestbedApply, TestbedChange, TestbedGroupStatus,
    TestbedPlan,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod faults;
mod scale;

const PRESENT: &str = "present";
const DELETING: &str = "deleting";

/// How often a driver looks again while a bed is not yet ready.
const DRIVE_INTERVAL: Duration = Duration::from_millis(250);

/// How long a udp or ping readiness probe waits for its answer; one that gets none is sent
/// again on the driver's next pass.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

fn lock_name(bed: &str) -> String {
    format!("testbed:{bed}")
}

/// Reads a file as the daemon accepts it: every error of `parse_bed` with its position, and
/// each `kernel_file` turned into the image pushed for it (`kernel_files`, see
/// `TestbedApply`).
fn checked_bed(
    file: &str,
    kernel_files: &BTreeMap<String, String>,
) -> Result<rhyzome_api::testbed::Bed, ServiceError> {
    let mut bed = parse_bed(file).map_err(|e| FieldError::new("file", e.to_string()))?;
    bed.resolve_kernel_files(kernel_files)
        .map_err(|m| FieldError::new("kernel_files", m))?;
    Ok(bed)
}

/// The stored bed `r`, parsed again with the images stored for its `kernel_file`s.
fn stored_bed(r: &TestbedRecord) -> Result<rhyzome_api::testbed::Bed, ServiceError> {
    checked_bed(&r.file, &r.kernel_files).map_err(|e| {
        ServiceError::Internal(format!(
            "stored test bed {:?} no longer parses: {e}",
            r.name
        ))
    })
}

/// Whether two specs of one member differ in their link conditions only, which are changed
/// in place (`PUT /v1/instances/{name}/link`) rather than by replacing the instance.
fn link_only_change(stored: &str, planned: &rhyzome_api::InstanceSpec) -> bool {
    let Ok(mut old) = serde_json::from_str::<rhyzome_api::InstanceSpec>(stored) else {
        return false;
    };
    let mut new = planned.clone();
    old.link = None;
    new.link = None;
    old == new
}

/// How a bed network in the file differs from the network that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetworkChange {
    None,
    /// Only its default link conditions: set in place.
    Link,
    /// Its subnet, gateway or emulation: the network and the bed's instances on it are made
    /// again.
    Replace,
}

/// The caller a bed's driver acts as: the token that applied it, with its name prefix. Its
/// role was checked at apply time.
fn owner_caller(r: &TestbedRecord) -> Caller {
    Caller {
        name: r.owner.clone(),
        role: Role::Operator,
        prefix: r.owner_prefix.clone(),
        quota: Default::default(),
    }
}

/// What applying `plan` does to the bed whose members are `members`.
fn diff(
    plan: &rhyzome_api::testbed::BedPlan,
    members: &[MemberRecord],
) -> Result<Vec<TestbedChange>, ServiceError> {
    let by_slot: BTreeMap<(&str, u32), &MemberRecord> = members
        .iter()
        .map(|m| ((m.group.as_str(), m.index), m))
        .collect();
    let mut changes = Vec::new();
    for group in &plan.start_order {
        for p in &plan.instances[group] {
            let spec = spec_json(&p.spec)?;
            match by_slot.get(&(group.as_str(), p.index)) {
                None => changes.push(TestbedChange {
                    group: group.clone(),
                    instance: p.spec.name.clone(),
                    action: ChangeKind::Create,
                    reason: "new in the file".into(),
                }),
                Some(m) if m.spec != spec && link_only_change(&m.spec, &p.spec) => {
                    changes.push(TestbedChange {
                        group: group.clone(),
                        instance: p.spec.name.clone(),
                        action: ChangeKind::Update,
                        reason: "the group's link conditions changed (set in place)".into(),
                    })
                }
                Some(m) if m.spec != spec => changes.push(TestbedChange {
                    group: group.clone(),
                    instance: p.spec.name.clone(),
                    action: ChangeKind::Replace,
                    reason: "the group's parameters changed".into(),
                }),
                Some(_) => {}
            }
        }
    }
    // Removed: highest indices first, as a scale-down takes them.
    let mut gone: Vec<&MemberRecord> = members
        .iter()
        .filter(|m| {
            plan.instances
                .get(&m.group)
                .is_none_or(|list| m.index as usize >= list.len())
        })
        .collect();
    gone.sort_by(|a, b| (&a.group, b.index).cmp(&(&b.group, a.index)));
    for m in gone {
        let reason = if plan.instances.contains_key(&m.group) {
            "the group was scaled down"
        } else {
            "the group is no longer in the file"
        };
        changes.push(TestbedChange {
            group: m.group.clone(),
            instance: m.instance.clone(),
            action: ChangeKind::Delete,
            reason: reason.into(),
        });
    }
    Ok(changes)
}

/// Whether an instance of spec `spec` has a NIC on the network `network`.
fn instance_uses(spec: &rhyzome_api::InstanceSpec, network: &str) -> bool {
    spec.network
        .as_ref()
        .is_some_and(|n| n.name.as_deref() == Some(network))
        || spec
            .nets
            .as_ref()
            .is_some_and(|m| m.values().any(|n| n == network))
}

fn spec_json(spec: &rhyzome_api::InstanceSpec) -> Result<String, ServiceError> {
    serde_json::to_string(spec).map_err(|e| ServiceError::Internal(format!("spec to JSON: {e}")))
}

impl Service {
    /// Checks a test-bed file and, unless `dry_run`, stores it and starts converging the bed.
    pub async fn apply_testbed(
        self: &Arc<Self>,
        caller: &Caller,
        req: TestbedApply,
    ) -> Result<TestbedPlan, ServiceError> {
        authorize(caller, Action::CreateTestbeds)?;
        let kernel_files = req.kernel_files.clone().unwrap_or_default();
        let bed = checked_bed(&req.file, &kernel_files)?;
        caller.may_name(&bed.name)?;
        let plan = bed.plan();
        // Instance and network requests are checked as a create would, so that a bad kernel
        // parameter fails the apply, not a driver later.
        for p in plan.instances.values().flatten() {
            self.validate_spec(&p.spec)?;
        }
        let _guard = self.locks.lock(&lock_name(&bed.name)).await;
        let existing = self.store.testbed(&bed.name)?;
        if let Some(r) = &existing {
            if r.owner != caller.name && caller.role < Role::Admin {
                return Err(ServiceError::Conflict {
                    field: Some("file"),
                    message: format!("test bed {:?} belongs to {:?}", bed.name, r.owner),
                });
            }
            if r.desired == DELETING {
                return Err(ServiceError::Conflict {
                    field: Some("file"),
                    message: format!("test bed {:?} is being destroyed", bed.name),
                });
            }
        }
        let owned = self.store.testbed_networks(&bed.name)?;
        let mut networks_created = Vec::new();
        let mut networks_replaced = Vec::new();
        let mut networks_updated = Vec::new();
        for n in &plan.networks {
            if owned.contains(&n.name) {
                match self.network_change(&bed.name, n)? {
                    NetworkChange::None => {}
                    NetworkChange::Link => networks_updated.push(n.name.clone()),
                    NetworkChange::Replace => networks_replaced.push(n.name.clone()),
                }
                continue;
            }
            if self.store.network_by_name(&n.name)?.is_some() {
                return Err(ServiceError::Conflict {
                    field: Some("file"),
                    message: format!(
                        "network {:?} exists and does not belong to test bed {:?}",
                        n.name, bed.name
                    ),
                });
            }
            networks_created.push(n.name.clone());
        }
        let members = self.store.testbed_members(&bed.name)?;
        let mut changes = diff(&plan, &members)?;
        // The instances on a network made again are made again with it.
        for c in changes
            .iter_mut()
            .filter(|c| c.action != ChangeKind::Delete)
        {
            let on_replaced = plan.instances[&c.group].iter().any(|p| {
                p.spec.name == c.instance
                    && networks_replaced.iter().any(|n| instance_uses(&p.spec, n))
            });
            if on_replaced && c.action != ChangeKind::Create {
                c.action = ChangeKind::Replace;
                c.reason =
                    "its network is made again (subnet, gateway or emulation changed)".into();
            }
        }
        for m in &members {
            let spec = plan
                .instances
                .get(&m.group)
                .and_then(|l| l.iter().find(|p| p.index == m.index));
            if let Some(p) = spec {
                if !changes.iter().any(|c| c.instance == m.instance)
                    && networks_replaced.iter().any(|n| instance_uses(&p.spec, n))
                {
                    changes.push(TestbedChange {
                        group: m.group.clone(),
                        instance: m.instance.clone(),
                        action: ChangeKind::Replace,
                        reason: "its network is made again (subnet, gateway or emulation changed)"
                            .into(),
                    });
                }
            }
        }
        let scaled = existing
            .as_ref()
            .map(|r| r.overrides.scale.clone())
            .unwrap_or_default();
        let mut notes = Vec::new();
        if !scaled.is_empty() {
            let counts: Vec<String> = scaled.iter().map(|(g, c)| format!("{g}={c}")).collect();
            notes.push(format!(
                "the counts set by `testbed scale` ({}) are reset to the file's",
                counts.join(", ")
            ));
        }
        let changed = existing.is_none()
            || !changes.is_empty()
            || !scaled.is_empty()
            || !networks_created.is_empty()
            || !networks_replaced.is_empty()
            || !networks_updated.is_empty()
            || existing
                .as_ref()
                .is_some_and(|r| r.kernel_files != kernel_files);
        let dry_run = req.dry_run.unwrap_or(false);
        if !dry_run && changed {
            self.store.put_testbed(&TestbedRecord {
                name: bed.name.clone(),
                owner: existing
                    .as_ref()
                    .map_or_else(|| caller.name.clone(), |r| r.owner.clone()),
                owner_prefix: existing
                    .as_ref()
                    .map_or_else(|| caller.prefix.clone(), |r| r.owner_prefix.clone()),
                file: req.file.clone(),
                desired: PRESENT.into(),
                // An apply resets the scaled counts to the file's; the fault count goes on,
                // so that a fault after an apply does not repeat an earlier one's picks.
                overrides: Overrides {
                    scale: Default::default(),
                    faults: existing.as_ref().map_or(0, |r| r.overrides.faults),
                },
                applied_at: now_rfc3339(),
                applied_ms: now_ms(),
                last_error: None,
                kernel_files: kernel_files.clone(),
            })?;
            tracing::info!(testbed = %bed.name, changes = changes.len(), "test bed applied");
        }
        drop(_guard);
        if !dry_run {
            self.drive_testbed(bed.name.clone());
        }
        Ok(TestbedPlan {
            name: bed.name,
            changed,
            dry_run,
            networks_created,
            networks_replaced,
            networks_updated,
            changes,
            notes,
        })
    }

    /// How the bed network `n` of the file differs from the network of that name, which the
    /// bed `bed` owns. A replacement is refused while instances that are not the bed's use it.
    fn network_change(
        &self,
        bed: &str,
        n: &rhyzome_api::NetworkCreate,
    ) -> Result<NetworkChange, ServiceError> {
        let Some(record) = self.store.network_by_name(&n.name)? else {
            return Ok(NetworkChange::None);
        };
        let want = rhyzome_api::networks::validate_network(n)?;
        if want.subnet != record.subnet
            || want.gateway != record.gateway
            || want.emulated != record.emulator.is_some()
        {
            let members = self.store.testbed_members(bed)?;
            let strangers: Vec<String> = self
                .store
                .network_addresses(&n.name)?
                .into_iter()
                .map(|a| a.instance)
                .filter(|i| !members.iter().any(|m| &m.instance == i))
                .collect();
            if !strangers.is_empty() {
                return Err(ServiceError::Conflict {
                    field: Some("file"),
                    message: format!(
                        "network {:?} would be made again (its subnet, gateway or emulation \
                         changed), but instances that are not the bed's use it: {}",
                        n.name,
                        strangers.join(", ")
                    ),
                });
            }
            return Ok(NetworkChange::Replace);
        }
        if record.emulator.is_some()
            && self.store.network_shaping(&record.id)?.defaults != want.link
        {
            return Ok(NetworkChange::Link);
        }
        Ok(NetworkChange::None)
    }

    pub fn list_testbeds(&self, caller: &Caller) -> Result<Vec<Testbed>, ServiceError> {
        let mut out = Vec::new();
        for r in self.store.testbeds()? {
            if caller.sees(&r.name) {
                out.push(self.testbed_status(&r)?);
            }
        }
        Ok(out)
    }

    pub fn get_testbed(&self, caller: &Caller, name: &str) -> Result<Testbed, ServiceError> {
        authorize(caller, Action::ReadTestbed(name))?;
        let r = self
            .store
            .testbed(name)?
            .ok_or_else(|| ServiceError::TestbedNotFound(name.to_string()))?;
        self.testbed_status(&r)
    }

    /// Marks the bed for deletion (the desired state first) and removes its instances, its
    /// networks and then the bed itself.
    pub async fn destroy_testbed(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
    ) -> Result<(), ServiceError> {
        authorize(caller, Action::ChangeTestbed(name, "destroy test beds"))?;
        if self.store.testbed(name)?.is_none() {
            return Err(ServiceError::TestbedNotFound(name.to_string()));
        }
        self.store.set_testbed_desired(name, DELETING)?;
        self.converge_testbed(name).await?;
        Ok(())
    }

    pub(super) fn testbed_status(&self, r: &TestbedRecord) -> Result<Testbed, ServiceError> {
        self.testbed_status_with(r, None)
    }

    /// The status of a bed; its members' states and restart counts from `known` (by instance
    /// name) when the caller already read every record (a metrics scrape), else from the store.
    pub(super) fn testbed_status_with(
        &self,
        r: &TestbedRecord,
        known: Option<&std::collections::HashMap<&str, (InstanceState, u32)>>,
    ) -> Result<Testbed, ServiceError> {
        let bed = stored_bed(r).ok();
        let scaled = &r.overrides.scale;
        let members = self.store.testbed_members(&r.name)?;
        // What the stored file asks for: a member created from another spec (a replacement
        // or an in-place update the driver has not carried out yet) does not count as ready,
        // nor does the bed while one of its networks differs from the file.
        let plan = bed.as_ref().and_then(|b| b.plan_scaled(scaled).ok());
        let mut planned = BTreeMap::new();
        for p in plan.iter().flat_map(|p| p.instances.values().flatten()) {
            planned.insert(p.spec.name.clone(), spec_json(&p.spec)?);
        }
        let networks_current = plan
            .iter()
            .flat_map(|p| &p.networks)
            .all(|n| matches!(self.network_change(&r.name, n), Ok(NetworkChange::None)));
        let mut groups = Vec::new();
        let order = bed.as_ref().map(|b| b.start_order()).unwrap_or_default();
        for name in &order {
            let group = bed
                .as_ref()
                .and_then(|b| b.groups.iter().find(|g| &g.name == name));
            let file_count = group.map_or(0, |g| g.count);
            let desired = scaled.get(name).copied().unwrap_or(file_count);
            let mut s = TestbedGroupStatus {
                name: name.clone(),
                desired,
                file_count,
                restarts: 0,
                created: 0,
                running: 0,
                ready: 0,
                exited: 0,
                failed: 0,
                ms_to_ready: None,
                after: group.map(|g| g.after.clone()).unwrap_or_default(),
                ready_members: Vec::new(),
                hosts: BTreeMap::new(),
            };
            let mut last_ready = 0;
            for m in members.iter().filter(|m| &m.group == name) {
                let seen = match known {
                    Some(k) => k.get(m.instance.as_str()).copied(),
                    None => self.store.by_name(&m.instance)?.map(|rec| {
                        // Per host only here: a metrics scrape (`known`) does not show them.
                        *s.hosts
                            .entry(self.host_name(&rec.host).to_string())
                            .or_default() += 1;
                        (rec.state, rec.restart_count)
                    }),
                };
                let Some((state, restarts)) = seen else {
                    continue;
                };
                s.created += 1;
                s.restarts += restarts;
                match state {
                    InstanceState::Running => s.running += 1,
                    InstanceState::Exited => s.exited += 1,
                    InstanceState::Crashed | InstanceState::Failed => s.failed += 1,
                    _ => {}
                }
                let current = planned.get(&m.instance) == Some(&m.spec);
                if let (Some(t), InstanceState::Running, true) = (m.ready_ms, state, current) {
                    s.ready += 1;
                    s.ready_members.push(m.instance.clone());
                    last_ready = last_ready.max(t);
                }
            }
            if s.ready == desired && desired > 0 {
                s.ms_to_ready = Some((last_ready - r.applied_ms).max(0) as u64);
            }
            groups.push(s);
        }
        Ok(Testbed {
            name: r.name.clone(),
            seed: bed.as_ref().map_or(0, |b| b.seed),
            owner: r.owner.clone(),
            desired: r.desired.clone(),
            applied_at: r.applied_at.clone(),
            // Members the plan no longer has (a scale down or a smaller file not yet carried
            // out) are not counted ready, but the bed is not ready while they exist.
            ready: r.desired == PRESENT
                && networks_current
                && groups
                    .iter()
                    .all(|g| g.ready == g.desired && g.created == g.desired),
            networks: self.store.testbed_networks(&r.name)?,
            groups,
            last_error: r.last_error.clone(),
        })
    }

    /// The record and file of bed `name`, for an operation on a bed that is not being
    /// destroyed (`field` names the request field a 409 points at). The caller holds the
    /// bed's lock.
    fn live_testbed(
        &self,
        name: &str,
        field: &'static str,
    ) -> Result<(TestbedRecord, rhyzome_api::testbed::Bed), ServiceError> {
        let r = self
            .store
            .testbed(name)?
            .ok_or_else(|| ServiceError::TestbedNotFound(name.to_string()))?;
        if r.desired == DELETING {
            return Err(ServiceError::Conflict {
                field: Some(field),
                message: format!("test bed {name:?} is being destroyed"),
            });
        }
        let bed = stored_bed(&r)?;
        Ok((r, bed))
    }

    /// Starts a driver for every stored bed (the reconciler calls this on each pass).
    pub fn drive_testbeds(self: &Arc<Self>) {
        match self.store.testbeds() {
            Ok(beds) => beds.into_iter().for_each(|b| self.drive_testbed(b.name)),
            Err(e) => tracing::warn!(error = %e, "cannot list test beds"),
        }
    }

    /// Converges one bed until it is ready (or gone), unless a driver already does.
    fn drive_testbed(self: &Arc<Self>, name: String) {
        {
            let mut driving = self
                .testbed_drivers
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !driving.insert(name.clone()) {
                return;
            }
        }
        let svc = self.clone();
        tokio::spawn(async move {
            let mut passes = 0u32;
            loop {
                passes += 1;
                match svc.converge_testbed(&name).await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(testbed = %name, error = %e, "test bed not converged");
                        let _ = svc.store.set_testbed_error(&name, Some(&e.to_string()));
                    }
                }
                // Quick while a bed comes up; a bed that stays unready is looked at less often.
                let slow = if passes > 120 { 8 } else { 1 };
                tokio::time::sleep(DRIVE_INTERVAL * slow).await;
            }
            svc.testbed_drivers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
        });
    }

    /// One step towards the stored file. `Ok(true)` once the bed is ready or gone.
    pub async fn converge_testbed(&self, name: &str) -> Result<bool, ServiceError> {
        let _guard = self.locks.lock(&lock_name(name)).await;
        let Some(r) = self.store.testbed(name)? else {
            return Ok(true);
        };
        let caller = owner_caller(&r);
        if r.desired == DELETING {
            // All at once, as a batch of deletes through the API would go: one after another,
            // 100 nodes took 27 s (each delete waits for libvirt's destroy of its domain).
            let members = self.store.testbed_members(name)?;
            futures_util::future::join_all(members.iter().map(|m| self.remove_member(&r.owner, m)))
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()?;
            for n in self.store.testbed_networks(name)? {
                self.remove_bed_network(&n).await?;
            }
            self.store.remove_testbed(name)?;
            tracing::info!(testbed = %name, "test bed destroyed");
            return Ok(true);
        }
        let bed = stored_bed(&r)?;
        let plan = bed.plan_scaled(&r.overrides.scale).map_err(|e| {
            ServiceError::Internal(format!(
                "stored test bed {name:?} no longer plans at its scaled counts: {}",
                e.message
            ))
        })?;
        let owned = self.store.testbed_networks(name)?;
        for n in &plan.networks {
            if !owned.contains(&n.name) {
                self.store.put_testbed_network(name, &n.name)?;
            }
            match self.network_change(name, n)? {
                NetworkChange::None => {}
                NetworkChange::Link => {
                    let link = rhyzome_api::NetworkLink {
                        conditions: n.link.unwrap_or_default(),
                    };
                    self.set_network_link(&Caller::internal(), &n.name, link)
                        .await?;
                }
                NetworkChange::Replace => {
                    // Its members go first (the network refuses to go while addresses are
                    // given out), then it; both come back below, as new.
                    for m in self.store.testbed_members(name)? {
                        let on_it = plan
                            .instances
                            .get(&m.group)
                            .and_then(|l| l.iter().find(|p| p.index == m.index))
                            .is_some_and(|p| instance_uses(&p.spec, &n.name));
                        if on_it {
                            self.remove_member(&r.owner, &m).await?;
                        }
                    }
                    match self.delete_network(&Caller::internal(), &n.name).await {
                        Ok(()) | Err(ServiceError::NetworkNotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                    tracing::info!(testbed = %name, network = %n.name, "bed network made again");
                }
            }
            if self.store.network_by_name(&n.name)?.is_none() {
                self.create_network(n.clone(), &caller).await?;
            }
        }
        // Members the file no longer has: highest indices first.
        let members = self.store.testbed_members(name)?;
        for change in diff(&plan, &members)?
            .iter()
            .filter(|c| c.action == ChangeKind::Delete)
        {
            if let Some(m) = members.iter().find(|m| m.instance == change.instance) {
                self.remove_member(&r.owner, m).await?;
            }
        }
        for n in owned
            .iter()
            .filter(|n| !plan.networks.iter().any(|p| &p.name == *n))
        {
            self.remove_bed_network(n).await?;
        }

        let mut all_ready = true;
        for group in &plan.start_order {
            let g = bed
                .groups
                .iter()
                .find(|g| &g.name == group)
                .expect("the start order names the file's groups");
            let members = self.store.testbed_members(name)?;
            let waits = g.after.iter().any(|a| {
                let want = plan.instances.get(a).map_or(0, |list| list.len());
                members
                    .iter()
                    .filter(|m| &m.group == a && m.ready_ms.is_some())
                    .count()
                    < want
            });
            if waits {
                return Ok(false);
            }
            let mut create = Vec::new();
            for p in &plan.instances[group] {
                let spec = spec_json(&p.spec)?;
                let member = members
                    .iter()
                    .find(|m| &m.group == group && m.index == p.index);
                let exists = self.store.by_name(&p.spec.name)?.is_some();
                let record = MemberRecord {
                    group: group.clone(),
                    index: p.index,
                    instance: p.spec.name.clone(),
                    spec: spec.clone(),
                    ready_ms: None,
                };
                match member {
                    Some(m) if m.spec != spec && exists && link_only_change(&m.spec, &p.spec) => {
                        let link = rhyzome_api::InstanceLink {
                            conditions: p.spec.link.unwrap_or_default(),
                        };
                        self.set_link(&Caller::internal(), &m.instance, link)
                            .await?;
                        self.store.put_testbed_member(
                            name,
                            &MemberRecord {
                                ready_ms: m.ready_ms,
                                ..record
                            },
                        )?;
                    }
                    Some(m) if m.spec != spec => {
                        // Replaced node by node: the old one goes, the new one is recorded
                        // and created before the next is touched.
                        self.remove_instance(&r.owner, &m.instance).await?;
                        self.store.put_testbed_member(name, &record)?;
                        if let Err(e) = self.create(p.spec.clone(), &caller).await {
                            self.store.remove_testbed_member(&record.instance)?;
                            return Err(e);
                        }
                    }
                    Some(_) if exists => {}
                    _ => {
                        self.store.put_testbed_member(name, &record)?;
                        create.push(p.spec.clone());
                    }
                }
            }
            let names: Vec<String> = create.iter().map(|s| s.name.clone()).collect();
            let results =
                futures_util::future::join_all(create.into_iter().map(|s| self.create(s, &caller)))
                    .await;
            let mut first_error = None;
            for (instance, result) in names.iter().zip(results) {
                if let Err(e) = result {
                    // Not created: the member goes, so that the bed never claims an instance
                    // of that name that someone else makes. The next pass tries again.
                    self.store.remove_testbed_member(instance)?;
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            if !self.mark_ready(name, group, &g.ready).await? {
                all_ready = false;
            }
        }
        if all_ready {
            self.store.set_testbed_error(name, None)?;
        }
        Ok(all_ready)
    }

    /// Records the members of `group` that have become ready; whether all are.
    async fn mark_ready(
        &self,
        bed: &str,
        group: &str,
        ready: &Readiness,
    ) -> Result<bool, ServiceError> {
        let mut all = true;
        // Network probes of the running members not yet ready, all at once: each waits up to
        // PROBE_TIMEOUT for its answer.
        let mut probes = Vec::new();
        for m in self
            .store
            .testbed_members(bed)?
            .into_iter()
            .filter(|m| m.group == group)
        {
            let record = self.store.by_name(&m.instance)?;
            let running = record
                .as_ref()
                .is_some_and(|r| r.state == InstanceState::Running);
            if m.ready_ms.is_some() {
                all &= running;
                continue;
            }
            if running && matches!(ready, Readiness::Udp(_) | Readiness::Ping) {
                let address = record
                    .as_ref()
                    .and_then(|r| r.attachments.iter().find_map(|a| a.address));
                let Some(address) = address else {
                    all = false;
                    continue;
                };
                let netns = self.config.link_emulator_netns.clone();
                let ready = ready.clone();
                probes.push(async move {
                    let answered = blocking(move || match &ready {
                        Readiness::Udp(p) => {
                            probes::udp(netns.as_deref(), address, p, PROBE_TIMEOUT)
                        }
                        _ => probes::ping(netns.as_deref(), address, PROBE_TIMEOUT),
                    })
                    .await;
                    (m.instance, address, answered)
                });
                continue;
            }
            let is_ready = running
                && match ready {
                    Readiness::Console(text) => {
                        let (bytes, _) = self
                            .console(
                                &Caller::internal(),
                                &m.instance,
                                &rhyzome_api::ConsoleQuery::default(),
                            )
                            .await?;
                        String::from_utf8_lossy(&bytes).contains(text.as_str())
                    }
                    _ => true,
                };
            if is_ready {
                self.store.set_member_ready(&m.instance, now_ms())?;
                // Watchers (the dashboard's test-bed page) learn it from the event stream.
                self.events.publish(rhyzome_api::Event {
                    time: now_rfc3339(),
                    instance: m.instance.clone(),
                    state: "ready".into(),
                    exit_code: None,
                    reason: Some(format!(
                        "test bed {bed}, group {group}: readiness check passed"
                    )),
                    restart_count: 0,
                });
            } else {
                all = false;
            }
        }
        for (instance, address, answered) in futures_util::future::join_all(probes).await {
            match answered? {
                Ok(true) => self.store.set_member_ready(&instance, now_ms())?,
                Ok(false) => all = false,
                Err(e) => {
                    tracing::warn!(instance = %instance, %address, error = %e, "readiness probe failed");
                    all = false;
                }
            }
        }
        Ok(all)
    }

    async fn remove_member(&self, bed_owner: &str, m: &MemberRecord) -> Result<(), ServiceError> {
        self.remove_instance(bed_owner, &m.instance).await?;
        self.store.remove_testbed_member(&m.instance)?;
        Ok(())
    }

    /// Deletes a member's instance if it still exists and belongs to the bed's owner: an
    /// instance of that name made by someone else is not the bed's to remove.
    async fn remove_instance(&self, bed_owner: &str, name: &str) -> Result<(), ServiceError> {
        match self.store.by_name(name)? {
            Some(r) if r.owner == bed_owner => {}
            _ => return Ok(()),
        }
        match self.delete(&Caller::internal(), name).await {
            Ok(()) | Err(ServiceError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_bed_network(&self, network: &str) -> Result<(), ServiceError> {
        match self.delete_network(&Caller::internal(), network).await {
            Ok(()) | Err(ServiceError::NetworkNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.store.remove_testbed_network(network)?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "testbed_tests.rs"]
mod tests;
