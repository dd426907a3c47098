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
use super::{now_ms, now_rfc3339, Service, ServiceError};
use crate::auth::{Caller, Role};
use crate::store::testbeds::{MemberRecord, Overrides, TestbedRecord};
use rhyzome_api::testbed::{parse_bed, Boot, Readiness};
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

fn lock_name(bed: &str) -> String {
    format!("testbed:{bed}")
}

/// Reads a file as the daemon accepts it: every error of `parse_bed` with its position, and
/// what this daemon cannot do yet.
fn checked_bed(file: &str) -> Result<rhyzome_api::testbed::Bed, ServiceError> {
    let bed = parse_bed(file, false).map_err(|e| FieldError::new("file", e.to_string()))?;
    for g in &bed.groups {
        if matches!(g.boot, Boot::KernelFile(_)) {
            return Err(FieldError::new(
                "file",
                format!(
                    "group {:?}: kernel_file is a local file the CLI uploads; send the file \
                     through `rhyzomectl testbed apply`, or use kernel or image",
                    g.name
                ),
            )
            .into());
        }
        if matches!(g.ready, Readiness::Udp(_) | Readiness::Ping) {
            return Err(FieldError::new(
                "file",
                format!(
                    "group {:?}: this daemon checks readiness by console text only \
                     (ready = {{ console = \"...\" }}); udp and ping probes are not implemented",
                    g.name
                ),
            )
            .into());
        }
    }
    Ok(bed)
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
        let bed = checked_bed(&req.file)?;
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
        for n in &plan.networks {
            if owned.contains(&n.name) {
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
        let changes = diff(&plan, &members)?;
        let scaled = existing
            .as_ref()
            .map(|r| r.overrides.scale.clone())
            .unwrap_or_default();
        let changed = existing.is_none()
            || !changes.is_empty()
            || !networks_created.is_empty()
            || !scaled.is_empty();
        let mut notes = Vec::new();
        if !scaled.is_empty() {
            let counts: Vec<String> = scaled.iter().map(|(g, c)| format!("{g}={c}")).collect();
            notes.push(format!(
                "the counts set by `testbed scale` ({}) are reset to the file's",
                counts.join(", ")
            ));
        }
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
            changes,
            notes,
        })
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
        let bed = parse_bed(&r.file, false).ok();
        let scaled = &r.overrides.scale;
        let members = self.store.testbed_members(&r.name)?;
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
            };
            let mut last_ready = 0;
            for m in members.iter().filter(|m| &m.group == name) {
                let seen = match known {
                    Some(k) => k.get(m.instance.as_str()).copied(),
                    None => self
                        .store
                        .by_name(&m.instance)?
                        .map(|rec| (rec.state, rec.restart_count)),
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
                if let (Some(t), InstanceState::Running) = (m.ready_ms, state) {
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
            ready: r.desired == PRESENT && groups.iter().all(|g| g.ready == g.desired),
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
        let bed = parse_bed(&r.file, false).map_err(|e| {
            ServiceError::Internal(format!("stored test bed {name:?} no longer parses: {e}"))
        })?;
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
            for m in self.store.testbed_members(name)? {
                self.remove_member(&r.owner, &m).await?;
            }
            for n in self.store.testbed_networks(name)? {
                self.remove_bed_network(&n).await?;
            }
            self.store.remove_testbed(name)?;
            tracing::info!(testbed = %name, "test bed destroyed");
            return Ok(true);
        }
        let bed = parse_bed(&r.file, false).map_err(|e| {
            ServiceError::Internal(format!("stored test bed {name:?} no longer parses: {e}"))
        })?;
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
        for m in self
            .store
            .testbed_members(bed)?
            .into_iter()
            .filter(|m| m.group == group)
        {
            let running = self
                .store
                .by_name(&m.instance)?
                .is_some_and(|r| r.state == InstanceState::Running);
            if m.ready_ms.is_some() {
                all &= running;
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
