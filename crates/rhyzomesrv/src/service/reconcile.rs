//! The reconciler: makes libvirt match the store, and the store's observed state match libvirt.
//!
//! It runs once before the API opens (so a restarted daemon adopts running guests, finishes
//! interrupted creates and deletes, and removes half-made domains), then every
//! `ReconcileIntervalSeconds`. It acts on one instance at a time under that instance's name
//! lock, and re-checks the domain after taking the lock, because a request may have changed
//! it since the listing.

use super::{blocking, Service, ServiceError};
use crate::backend::{DomainStatus, DOMAIN_PREFIX};
use crate::console::{self, Outcome};
use crate::store::{Desired, InstanceRecord, Observed};
use rhyzome_api::InstanceState;
use std::collections::HashMap;
use std::sync::Arc;

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub adopted: usize,
    pub started: usize,
    pub finished_deletes: usize,
    pub ended: usize,
    pub stopped: usize,
    pub orphans_destroyed: usize,
    pub errors: usize,
}

impl Service {
    /// One reconciliation pass over every instance and every rhyzome domain.
    pub async fn reconcile_once(&self) -> Result<ReconcileReport, ServiceError> {
        let backend = self.backend.clone();
        // Domains are listed before records are read: a create inserts its record before it
        // makes the domain, so every listed domain of a live instance has its record by now.
        let domains = blocking(move || backend.list())
            .await?
            .map_err(ServiceError::Backend)?;
        let records = self.store.all()?;
        let mut by_uuid: HashMap<String, DomainStatus> =
            domains.into_iter().map(|d| (d.uuid.clone(), d)).collect();
        let mut report = ReconcileReport::default();
        for r in &records {
            let listed = by_uuid.remove(&r.id);
            if needs_attention(r, listed.as_ref()) {
                if let Err(e) = self.reconcile_instance(&r.name, &mut report).await {
                    report.errors += 1;
                    tracing::warn!(instance = %r.name, error = %e, "reconcile failed");
                }
            }
        }
        for orphan in by_uuid.into_values() {
            if let Err(e) = self.destroy_orphan(&orphan, &mut report).await {
                report.errors += 1;
                tracing::warn!(domain = %orphan.name, error = %e, "cannot remove orphan domain");
            }
        }
        if report != ReconcileReport::default() {
            tracing::info!(?report, "reconciled");
        }
        Ok(report)
    }

    async fn reconcile_instance(
        &self,
        name: &str,
        report: &mut ReconcileReport,
    ) -> Result<(), ServiceError> {
        let _guard = self.locks.lock(name).await;
        let Some(r) = self.store.by_name(name)? else {
            return Ok(());
        };
        let backend = self.backend.clone();
        let id = r.id.clone();
        let active = blocking(move || backend.status(&id))
            .await?
            .map_err(ServiceError::Backend)?
            .is_some_and(|d| d.active);
        match (r.desired, active) {
            (Desired::Deleted, _) => {
                self.forget(&r).await?;
                report.finished_deletes += 1;
                tracing::info!(instance = %name, "finished an interrupted delete");
            }
            (Desired::Running, true) => {
                if r.state != InstanceState::Running {
                    self.set_state(&r, InstanceState::Running, None)?;
                    report.adopted += 1;
                    tracing::info!(instance = %name, "adopted running domain");
                }
            }
            (Desired::Running, false) => match r.state {
                // Accepted (or being started) when the daemon died: finish the job.
                InstanceState::Pending | InstanceState::Starting => {
                    self.start_domain(&r).await?;
                    report.started += 1;
                }
                InstanceState::Running => {
                    self.record_end(&r)?;
                    report.ended += 1;
                }
                _ => {}
            },
            (Desired::Stopped, true) => {
                self.destroy_domain(&r).await?;
                self.set_state(&r, InstanceState::Stopped, None)?;
                report.stopped += 1;
            }
            (Desired::Stopped, false) => {
                if r.state != InstanceState::Stopped {
                    self.set_state(&r, InstanceState::Stopped, None)?;
                    report.stopped += 1;
                }
            }
        }
        Ok(())
    }

    fn set_state(
        &self,
        r: &InstanceRecord,
        state: InstanceState,
        exit_code: Option<i32>,
    ) -> Result<(), ServiceError> {
        self.store.set_observed(
            &r.id,
            &Observed {
                state,
                exit_code,
                last_error: None,
            },
        )?;
        Ok(())
    }

    /// A running instance's domain is gone: the unikernel exited or crashed. Its console says
    /// which, and with what code.
    fn record_end(&self, r: &InstanceRecord) -> Result<(), ServiceError> {
        let path = console::log_path(&self.config.state_dir, &r.id);
        let tail = console::read_from(&path, r.console_offset, 64 << 10).unwrap_or_default();
        let (state, code) = match console::parse_outcome(&tail) {
            Outcome::Exited(code) => (InstanceState::Exited, Some(code)),
            Outcome::Aborted => (InstanceState::Crashed, None),
            Outcome::Unknown => (InstanceState::Exited, None),
        };
        tracing::info!(instance = %r.name, %state, ?code, "instance ended");
        self.set_state(r, state, code)
    }

    /// Destroys a rhyzome-named domain that no record claims, after checking under the name
    /// lock that no request has just created it, and that it carries rhyzome's mark.
    async fn destroy_orphan(
        &self,
        d: &DomainStatus,
        report: &mut ReconcileReport,
    ) -> Result<(), ServiceError> {
        let name = d.name.strip_prefix(DOMAIN_PREFIX).unwrap_or(&d.name);
        let _guard = self.locks.lock(name).await;
        if self.store.all()?.iter().any(|r| r.id == d.uuid) {
            return Ok(());
        }
        let backend = self.backend.clone();
        let uuid = d.uuid.clone();
        let owner = blocking(move || backend.owner(&uuid))
            .await?
            .map_err(ServiceError::Backend)?;
        if owner.as_deref() != Some(self.config.hostname.as_str()) {
            tracing::debug!(domain = %d.name, ?owner, "ignoring a domain this daemon did not create");
            return Ok(());
        }
        let backend = self.backend.clone();
        let uuid = d.uuid.clone();
        blocking(move || backend.destroy(&uuid))
            .await?
            .map_err(ServiceError::Backend)?;
        report.orphans_destroyed += 1;
        tracing::warn!(domain = %d.name, "destroyed a domain no instance claims");
        Ok(())
    }

    /// Reconciles forever, every `ReconcileIntervalSeconds`.
    pub async fn run_reconciler(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.reconcile_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.reconcile_once().await {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
        }
    }

    /// The startup pass: reconcile, then drop kernel blobs nothing references.
    pub async fn recover(&self) -> Result<ReconcileReport, ServiceError> {
        let report = self.reconcile_once().await?;
        self.collect_garbage().await;
        Ok(report)
    }
}

/// Cheap pre-check without locks, so that a pass over a thousand settled instances costs one
/// listing and no per-instance libvirt calls.
fn needs_attention(r: &InstanceRecord, listed: Option<&DomainStatus>) -> bool {
    let active = listed.is_some_and(|d| d.active);
    match r.desired {
        Desired::Deleted => true,
        Desired::Running => match r.state {
            InstanceState::Running => !active,
            InstanceState::Pending | InstanceState::Starting => true,
            _ => active,
        },
        Desired::Stopped => active || r.state != InstanceState::Stopped,
    }
}
