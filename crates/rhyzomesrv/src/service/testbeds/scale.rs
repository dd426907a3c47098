//! `testbed scale` (`POST /v1/testbeds/{name}/scale`): new counts for some of a bed's groups,
//! stored with the bed's desired state so that the driver (and, after a restart, the
//! reconciler's driver) keeps them.
//!
//! The counts are planned by `Bed::plan_scaled` (see `rhyzome_api::testbed::scale`): the
//! instances the file plans never change, so a scale creates or deletes only the highest
//! indices. They last until the next apply of a file, which resets them (and says so).
//!
//! Concurrency: under the bed's lock, like an apply, so a driver never converges half a scale.

use super::{diff, lock_name, Service, PRESENT};
use crate::auth::Caller;
use crate::service::authz::{authorize, Action};
use crate::service::ServiceError;
use crate::store::testbeds::Overrides;
use rhyzome_api::testbed::MAX_BED_INSTANCES;
use rhyzome_api::validate::FieldError;
use rhyzome_api::{TestbedPlan, TestbedScale};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The note every scale answers with.
pub const SCALE_LASTS: &str =
    "scaled counts last until the next `testbed apply` of a file, which resets them to the file's";

/// The requested counts as numbers a bed can have, or the field at fault.
fn checked_counts(req: &TestbedScale) -> Result<BTreeMap<String, u32>, FieldError> {
    if req.counts.is_empty() {
        return Err(FieldError::new(
            "counts",
            "give at least one group and its count (GROUP=COUNT)",
        ));
    }
    req.counts
        .iter()
        .map(|(group, &count)| {
            if !(0..=i64::from(MAX_BED_INSTANCES)).contains(&count) {
                return Err(FieldError::new(
                    format!("counts.{group}"),
                    format!("count is {count}; give 0 to {MAX_BED_INSTANCES}"),
                ));
            }
            Ok((group.clone(), count as u32))
        })
        .collect()
}

impl Service {
    /// Sets new counts for some groups of bed `name` and starts converging to them.
    pub async fn scale_testbed(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        req: TestbedScale,
    ) -> Result<TestbedPlan, ServiceError> {
        authorize(caller, Action::ChangeTestbed(name, "scale test beds"))?;
        let counts = checked_counts(&req)?;
        let dry_run = req.dry_run.unwrap_or(false);
        let guard = self.locks.lock(&lock_name(name)).await;
        let (r, bed) = self.live_testbed(name, "counts")?;
        let mut scale = r.overrides.scale.clone();
        for (group, count) in counts {
            // Back at the file's count: no override left to keep.
            if bed
                .groups
                .iter()
                .any(|g| g.name == group && g.count == count)
            {
                scale.remove(&group);
            } else {
                scale.insert(group, count);
            }
        }
        let plan = bed.plan_scaled(&scale)?;
        for g in &bed.groups {
            for p in plan.instances[&g.name].iter().skip(g.count as usize) {
                self.validate_spec(&p.spec)?;
            }
        }
        let changes = diff(&plan, &self.store.testbed_members(name)?)?;
        let changed = !changes.is_empty() || scale != r.overrides.scale;
        if !dry_run && changed {
            self.store.set_testbed_overrides(
                name,
                PRESENT,
                &Overrides {
                    scale: scale.clone(),
                    faults: r.overrides.faults,
                },
            )?;
            tracing::info!(testbed = %name, ?scale, changes = changes.len(), "test bed scaled");
        }
        drop(guard);
        if !dry_run {
            self.drive_testbed(name.to_string());
        }
        Ok(TestbedPlan {
            name: name.to_string(),
            changed,
            dry_run,
            networks_created: Vec::new(),
            networks_replaced: Vec::new(),
            networks_updated: Vec::new(),
            changes,
            notes: vec![SCALE_LASTS.to_string()],
        })
    }
}
