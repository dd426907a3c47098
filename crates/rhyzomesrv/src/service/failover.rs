//! Failover: an instance created with `failover` whose host has stayed unreachable for
//! `FailoverAfterSeconds` is recreated on another host, with the same identity (UUID).
//!
//! The store's record of the instance's host is the truth from then on. If the old host comes
//! back with the old guest still running, the reconciler finds a domain of this daemon whose
//! instance lives elsewhere and destroys it (`stale_destroyed` event). Only the primary keeps
//! managed networks and volumes, and it never fails over, so an instance with a read-write
//! volume never moves.
//!
//! Concurrency: runs from the host watch; each move holds the instance's name lock and re-reads
//! the record under it, and the choice is made under the scheduler's lock.

use super::scheduler::{choose, ties, Need};
use super::{now_rfc3339, Service, ServiceError};
use crate::store::{Desired, InstanceRecord, PlacementRecord};
use rhyzome_api::PlacementPolicy;
use std::time::SystemTime;

impl Service {
    /// Moves the `failover` instances of every host unreachable for longer than
    /// `FailoverAfterSeconds` at `now`; returns how many moved.
    pub async fn fail_over_due(&self, now: SystemTime) -> usize {
        let due: Vec<String> = self
            .hosts
            .all()
            .iter()
            .skip(1)
            .filter(|h| {
                h.unreachable_since()
                    .and_then(|since| now.duration_since(since).ok())
                    .is_some_and(|down| down >= self.config.failover_after)
            })
            .map(|h| h.name().to_string())
            .collect();
        if due.is_empty() {
            return 0;
        }
        let records = match self.store.all() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "failover: cannot read the instances");
                return 0;
            }
        };
        let mut moved = 0;
        for r in records {
            if !r.failover || r.desired != Desired::Running || !due.contains(&r.host) {
                continue;
            }
            match self.fail_over(&r.name, &r.host).await {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(instance = %r.name, error = %e, "failover failed; retrying at the next check")
                }
            }
        }
        moved
    }

    /// Moves one instance off `from`, unless a request changed it meanwhile.
    async fn fail_over(&self, name: &str, from: &str) -> Result<bool, ServiceError> {
        let _guard = self.locks.lock(name).await;
        let Some(r) = self.store.by_name(name)? else {
            return Ok(false);
        };
        if r.host != from || r.desired != Desired::Running || !r.failover {
            return Ok(false);
        }
        let placement = self.failover_target(&r, from)?;
        let to = placement.0.clone();
        self.store.set_host(&r.id, &to, &placement.1)?;
        tracing::warn!(instance = %name, %from, %to, "host unreachable too long: failing the instance over");
        self.publish(
            &r,
            "failover",
            None,
            Some(format!(
                "host {from:?} unreachable for more than {} s: recreated on {to:?}",
                self.config.failover_after.as_secs()
            )),
        );
        let Some(moved) = self.store.by_name(name)? else {
            return Ok(false);
        };
        self.start_domain(&moved).await?;
        Ok(true)
    }

    /// The host a failover of `r` goes to, by `spread`, and the decision to record.
    fn failover_target(
        &self,
        r: &InstanceRecord,
        from: &str,
    ) -> Result<(String, PlacementRecord), ServiceError> {
        let _one_at_a_time = self.placing.lock().unwrap_or_else(|p| p.into_inner());
        // Volumes live on the primary, which never fails over: only emulated NICs can tie it
        // to some hosts.
        let emulated = self.emulator_ports(&r.attachments)?;
        let need = Need {
            memory_mib: r.memory_mib,
            selector: None,
            policy: PlacementPolicy::Spread,
            ties: ties(&r.attachments, &emulated, false),
        };
        let candidates: Vec<_> = self
            .candidates()?
            .into_iter()
            .filter(|c| c.name != from)
            .collect();
        let choice = choose(&candidates, &need).map_err(|message| ServiceError::Conflict {
            field: None,
            message,
        })?;
        Ok((
            choice.host,
            PlacementRecord {
                how: "failover".into(),
                reason: format!("host {from:?} stayed unreachable; {}", choice.reason),
                decided_at: now_rfc3339(),
            },
        ))
    }
}
