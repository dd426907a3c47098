//! The reconciler: makes libvirt match the store, and the store's observed state match libvirt.
//!
//! It runs once before the API opens ([`Service::recover`]: adopt running guests, finish
//! interrupted creates and deletes, remove half-made domains, then start what must run in
//! start-up priority order), then again whenever libvirt reports a lifecycle event or a
//! restart falls due, and at least every `ReconcileIntervalSeconds` as a safety net. It acts
//! on one instance at a time under that instance's name lock, and re-checks the domain after
//! taking the lock, because a request may have changed it since the listing.
//!
//! A domain no instance claims is destroyed only when it carries this daemon's identity; any
//! other is left alone and reported once (see [`super::ownership`]).

use super::ownership::{self, Claim, LeftAlone};
use super::restart::{self, Decision};
use super::{blocking, elapsed_since, now_ms, Service, ServiceError};
use crate::backend::{DomainStatus, DOMAIN_PREFIX};
use crate::console::{self, Outcome};
use crate::store::{Desired, InstanceRecord};
use rhyzome_api::InstanceState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub adopted: usize,
    pub started: usize,
    pub restarted: usize,
    pub finished_deletes: usize,
    pub ended: usize,
    pub stopped: usize,
    pub orphans_destroyed: usize,
    /// Unclaimed domains seen for the first time and left alone: other daemons', older
    /// releases', other tools'.
    pub left_alone: usize,
    /// Running guests that someone else destroyed.
    pub destroyed_outside: usize,
    pub errors: usize,
}

/// Why a pass runs: at start-up, guests that vanished without an exit line are brought back
/// when they have `autostart`; later, such a loss is the guest's own end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    Startup,
    Steady,
}

impl Service {
    /// One reconciliation pass over every instance and every rhyzome domain.
    pub async fn reconcile_once(&self) -> Result<ReconcileReport, ServiceError> {
        self.reconcile_networks_logged(false).await;
        self.reconcile(Pass::Steady).await
    }

    async fn reconcile(&self, pass: Pass) -> Result<ReconcileReport, ServiceError> {
        // Domains are listed before records are read: a create inserts its record before it
        // makes the domain, so every listed domain of a live instance has its record by now.
        let (mut by_uuid, unreachable) = self.list_domains_of_hosts().await?;
        let records = self.store.all()?;
        self.sample_consoles(&records);
        self.destroys
            .retain(|uuid| records.iter().any(|r| r.id == uuid));
        self.left_alone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|uuid| by_uuid.keys().any(|(_, u)| u == uuid));
        let mut report = ReconcileReport::default();
        let mut to_start: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        let now = now_ms();
        for r in &records {
            let host = self.host_name(&r.host).to_string();
            if unreachable.contains(&host) {
                // The guest may well run on: not `exited`, and nothing to restart.
                if matches!(r.state, InstanceState::Running | InstanceState::Starting)
                    && r.desired != Desired::Deleted
                {
                    self.observe(
                        r,
                        InstanceState::Unknown,
                        None,
                        Some(format!("host {host:?} is unreachable")),
                    )?;
                }
                continue;
            }
            let listed = by_uuid.remove(&(host, r.id.clone()));
            if !needs_attention(r, listed.as_ref(), now) {
                continue;
            }
            match self.reconcile_instance(&r.name, pass, &mut report).await {
                Ok(true) => to_start
                    .entry(r.startup_priority)
                    .or_default()
                    .push(r.name.clone()),
                Ok(false) => {}
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(instance = %r.name, error = %e, "reconcile failed");
                }
            }
        }
        let mut left_alone = LeftAlone::default();
        for ((host, _), orphan) in by_uuid {
            if let Err(e) = self
                .unclaimed_domain(&host, &orphan, &mut report, &mut left_alone)
                .await
            {
                report.errors += 1;
                tracing::warn!(domain = %orphan.name, error = %e, "cannot remove orphan domain");
            }
        }
        left_alone.log();
        // Lower priorities first; a group starts together, and the next waits until it runs
        // (start_domain returns once libvirt reports the guest running).
        for (priority, names) in to_start {
            tracing::debug!(priority, ?names, "starting a start-up group");
            let starts = names.iter().map(|name| self.start_if_still_wanted(name));
            for (name, result) in names
                .iter()
                .zip(futures_util::future::join_all(starts).await)
            {
                match result {
                    Ok(true) => report.started += 1,
                    Ok(false) => {}
                    Err(e) => {
                        report.errors += 1;
                        tracing::warn!(instance = %name, error = %e, "start failed");
                    }
                }
            }
        }
        if report != ReconcileReport::default() {
            tracing::info!(?report, "reconciled");
        }
        Ok(report)
    }

    /// Every reachable host's rhyzome domains, by (host, UUID), and the hosts that cannot be
    /// listed. The primary's failure fails the pass (as before hosts); another host's makes
    /// it unreachable, and its instances `unknown`.
    async fn list_domains_of_hosts(
        &self,
    ) -> Result<(HashMap<(String, String), DomainStatus>, HashSet<String>), ServiceError> {
        let mut by_uuid = HashMap::new();
        let mut unreachable = HashSet::new();
        for (i, host) in self.hosts.all().iter().enumerate() {
            let name = host.name().to_string();
            let listed = match host.backend() {
                Ok(backend) => blocking(move || backend.list()).await?,
                Err(e) => Err(e),
            };
            match listed {
                Ok(domains) => {
                    for d in domains {
                        by_uuid.insert((name.clone(), d.uuid.clone()), d);
                    }
                }
                Err(e) if i == 0 => {
                    self.host_failed(&name, &e);
                    return Err(ServiceError::Backend(e));
                }
                Err(e) => {
                    self.host_failed(&name, &e);
                    unreachable.insert(name);
                }
            }
        }
        Ok((by_uuid, unreachable))
    }

    /// Brings one instance in line; returns whether it should now be started.
    async fn reconcile_instance(
        &self,
        name: &str,
        pass: Pass,
        report: &mut ReconcileReport,
    ) -> Result<bool, ServiceError> {
        let _guard = self.locks.lock(name).await;
        let Some(r) = self.store.by_name(name)? else {
            return Ok(false);
        };
        let active = self.is_active(&r).await?;
        match (r.desired, active) {
            (Desired::Deleted, _) => {
                self.forget(&r).await?;
                report.finished_deletes += 1;
                tracing::info!(instance = %name, "finished an interrupted delete");
            }
            (Desired::Running, true) => {
                if r.state != InstanceState::Running {
                    self.observe(&r, InstanceState::Running, None, None)?;
                    report.adopted += 1;
                    tracing::info!(instance = %name, "adopted running domain");
                }
            }
            (Desired::Running, false) => match r.state {
                // Accepted (or being started) when the daemon died: finish the job.
                InstanceState::Pending | InstanceState::Starting => return Ok(true),
                InstanceState::Running if self.destroys.take_outside(&r.id) => {
                    // Not an end of the guest's own, and not a loss to recover from: someone
                    // stopped it. Restarting it would fight them.
                    tracing::warn!(instance = %name, "{}", ownership::DESTROYED_OUTSIDE);
                    self.observe(
                        &r,
                        InstanceState::Stopped,
                        None,
                        Some(ownership::DESTROYED_OUTSIDE.into()),
                    )?;
                    report.destroyed_outside += 1;
                }
                InstanceState::Running | InstanceState::Unknown => {
                    let outcome = self.outcome_of_run(&r).await;
                    // A guest gone while its host was unreachable was lost with the host,
                    // as one gone while the daemon was down.
                    let lost = pass == Pass::Startup || r.state == InstanceState::Unknown;
                    if lost && outcome == Outcome::Unknown {
                        // Lost with the host (or stopped with the daemon), not ended by itself:
                        // `autostart` decides, not the restart policy.
                        if r.autostart {
                            tracing::info!(instance = %name, "guest vanished while the daemon or its host was down; autostart");
                            return Ok(true);
                        }
                        self.observe(
                            &r,
                            InstanceState::Exited,
                            None,
                            Some(if pass == Pass::Startup {
                                "the guest vanished while the daemon was down".into()
                            } else {
                                "the guest vanished while its host was unreachable".into()
                            }),
                        )?;
                        report.ended += 1;
                        return Ok(false);
                    }
                    self.record_end(&r, outcome)?;
                    report.ended += 1;
                }
                InstanceState::Exited | InstanceState::Crashed
                    if r.next_restart_at_ms.is_some_and(|at| at <= now_ms()) =>
                {
                    report.restarted += 1;
                    return Ok(true);
                }
                _ => {}
            },
            (Desired::Stopped, true) => {
                self.destroy_domain(&r).await?;
                self.observe(&r, InstanceState::Stopped, None, None)?;
                report.stopped += 1;
            }
            (Desired::Stopped, false) => {
                if r.state != InstanceState::Stopped {
                    self.observe(&r, InstanceState::Stopped, None, None)?;
                    report.stopped += 1;
                }
            }
        }
        Ok(false)
    }

    async fn is_active(&self, r: &InstanceRecord) -> Result<bool, ServiceError> {
        let backend = self.backend_on(&r.host)?;
        let id = r.id.clone();
        Ok(blocking(move || backend.status(&id))
            .await?
            .map_err(ServiceError::Backend)?
            .is_some_and(|d| d.active))
    }

    /// Starts an instance picked by a pass, unless a request changed it meanwhile.
    async fn start_if_still_wanted(&self, name: &str) -> Result<bool, ServiceError> {
        let _guard = self.locks.lock(name).await;
        let Some(r) = self.store.by_name(name)? else {
            return Ok(false);
        };
        if r.desired != Desired::Running || self.is_active(&r).await? {
            return Ok(false);
        }
        self.start_domain(&r).await?;
        Ok(true)
    }

    /// How the current run of `r` ended, from its console (on its host, for a remote one).
    async fn outcome_of_run(&self, r: &InstanceRecord) -> Outcome {
        let source = match self.console_source(r) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(instance = %r.name, error = %e, "cannot reach its console; its exit code is unknown");
                return Outcome::Unknown;
            }
        };
        let (offset, inode) = (r.console_offset, r.console_inode);
        let tail = blocking(move || {
            let start = source.run_start(offset, inode);
            source.read_span(start, 64 << 10).map(|(bytes, _)| bytes)
        })
        .await;
        match tail {
            Ok(Ok(tail)) => console::parse_outcome(&tail),
            Ok(Err(e)) => {
                tracing::warn!(instance = %r.name, "{e}; its exit code is unknown");
                Outcome::Unknown
            }
            Err(e) => {
                tracing::warn!(instance = %r.name, error = %e, "its exit code is unknown");
                Outcome::Unknown
            }
        }
    }

    /// A running instance's domain is gone: record how it ended and apply its restart policy.
    pub(super) fn record_end(
        &self,
        r: &InstanceRecord,
        outcome: Outcome,
    ) -> Result<(), ServiceError> {
        let (state, code) = match outcome {
            Outcome::Exited(code) => (InstanceState::Exited, Some(code)),
            Outcome::Aborted => (InstanceState::Crashed, None),
            Outcome::Unknown => (InstanceState::Exited, None),
        };
        let ran_for = elapsed_since(r.started_at.as_deref());
        let decision = restart::decide(
            &r.restart,
            outcome,
            r.restart_count,
            ran_for,
            &self.backoff(),
        );
        tracing::info!(instance = %r.name, %state, ?code, ?decision, "instance ended");
        match decision {
            Decision::Stay => self.observe(r, state, code, None),
            Decision::Restart { after, attempt } => {
                let at = now_ms() + after.as_millis() as i64;
                self.store.set_restart(&r.id, attempt, Some(at))?;
                let mut r = r.clone();
                r.restart_count = attempt;
                self.store.set_observed(
                    &r.id,
                    &crate::store::Observed {
                        state,
                        exit_code: code,
                        last_error: None,
                    },
                    &super::now_rfc3339(),
                )?;
                self.publish(
                    &r,
                    state.as_str(),
                    code,
                    Some(format!("restart {attempt} in {} ms", after.as_millis())),
                );
                self.wake_after(after);
                Ok(())
            }
            Decision::GiveUp(reason) => {
                self.store.set_restart(&r.id, r.restart_count, None)?;
                self.observe(r, rhyzome_api::InstanceState::Failed, code, Some(reason))
            }
        }
    }

    /// Wakes the reconciler after `delay`, for a restart that falls due then.
    fn wake_after(&self, delay: Duration) {
        let wake = self.wake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = wake.send(());
        });
    }

    /// Deals with a rhyzome-named domain that no record claims: destroys it, after checking
    /// under the name lock that no request has just created it, only when it carries this
    /// daemon's identity; leaves any other alone, noting it once.
    async fn unclaimed_domain(
        &self,
        host: &str,
        d: &DomainStatus,
        report: &mut ReconcileReport,
        left_alone: &mut LeftAlone,
    ) -> Result<(), ServiceError> {
        if self.known_left_alone(&d.uuid) {
            return Ok(());
        }
        let name = d.name.strip_prefix(DOMAIN_PREFIX).unwrap_or(&d.name);
        let _guard = self.locks.lock(name).await;
        // An instance claims its domain only on its own host: a copy elsewhere is a stale one
        // (left behind by a failover while that host was unreachable); the record wins.
        let owner_elsewhere = match self.store.all()?.into_iter().find(|r| r.id == d.uuid) {
            Some(r) if self.host_name(&r.host) == host => return Ok(()),
            Some(r) => Some(r),
            None => None,
        };
        let backend = self.backend_on(host)?;
        let uuid = d.uuid.clone();
        let marker = backend.clone();
        let mark = blocking(move || marker.mark(&uuid))
            .await?
            .map_err(ServiceError::Backend)?;
        let owner = match ownership::claim(mark, &self.daemon_id) {
            Claim::Mine => {
                let uuid = d.uuid.clone();
                blocking(move || backend.destroy(&uuid))
                    .await?
                    .map_err(ServiceError::Backend)?;
                report.orphans_destroyed += 1;
                if let Some(r) = owner_elsewhere {
                    let now_on = self.host_name(&r.host).to_string();
                    self.remove_console_on(host, &r).await;
                    tracing::warn!(domain = %d.name, %host, %now_on, "destroyed a stale copy of an instance that runs on another host now");
                    self.publish(
                        &r,
                        "stale_destroyed",
                        None,
                        Some(format!(
                            "a stale domain on host {host:?} was destroyed: the instance runs on {now_on:?} now, and the daemon's record of its host wins"
                        )),
                    );
                    return Ok(());
                }
                tracing::warn!(domain = %d.name, "destroyed a domain of this daemon that no instance claims");
                return Ok(());
            }
            Claim::Foreign(mark) => mark.to_string(),
            Claim::Legacy(mark) => {
                tracing::warn!(
                    domain = %d.name,
                    host = %mark.host,
                    "a domain marked by a release without daemon identities, and not in this \
                     daemon's database: left alone (destroy it yourself if it is an orphan)"
                );
                mark.to_string()
            }
            Claim::Unmarked => "another tool (no rhyzome mark)".to_string(),
        };
        self.left_alone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.uuid.clone());
        report.left_alone += 1;
        left_alone.add(owner, &d.name);
        Ok(())
    }

    fn known_left_alone(&self, uuid: &str) -> bool {
        self.left_alone
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uuid)
    }

    /// Reconciles whenever woken (a lifecycle event, a due restart) and at least every
    /// `ReconcileIntervalSeconds`. Bursts of wake-ups coalesce into one pass.
    pub async fn run_reconciler(self: Arc<Self>) {
        let Some(mut wake_rx) = self
            .wake_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            tracing::error!("the reconciler is already running");
            return;
        };
        let mut tick = tokio::time::interval(self.config.reconcile_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(()) = wake_rx.recv() => {
                    // Let a burst of events (a batch of guests ending) arrive first.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    while wake_rx.try_recv().is_ok() {}
                }
            }
            let started = std::time::Instant::now();
            let result = self.reconcile_once().await;
            self.metrics
                .observe_reconcile(started.elapsed().as_secs_f64(), result.is_err());
            if let Err(e) = result {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
            // After the instances: a bed whose member vanished gets it back, and a bed
            // applied before a restart resumes.
            self.drive_testbeds();
        }
    }

    /// The start-up pass: reconcile (bringing back `autostart` guests that vanished while the
    /// daemon was down, in start-up priority order), then drop unused kernel blobs.
    pub async fn recover(&self) -> Result<ReconcileReport, ServiceError> {
        // Networks first: a guest on a managed network cannot start without it.
        self.reconcile_networks_logged(true).await;
        // Before the guests: those with volumes need the pool active.
        if let Err(e) = self.recover_volumes().await {
            tracing::warn!(error = %e, "cannot check the volume pool; volume requests will retry");
        }
        let report = self.reconcile(Pass::Startup).await?;
        self.collect_garbage().await;
        Ok(report)
    }

    /// With `StopGuestsOnShutdown`: destroys every guest, recording them stopped while keeping
    /// their desired state, so that the next start brings back those with `autostart`.
    pub async fn shutdown(&self) {
        if !self.config.stop_guests_on_shutdown {
            return;
        }
        let records = match self.store.visible() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list instances to stop");
                return;
            }
        };
        for r in records {
            let _guard = self.locks.lock(&r.name).await;
            match self.destroy_domain(&r).await {
                Ok(()) if r.state == InstanceState::Running => {
                    // Recorded as running with no domain: the next start treats it like a
                    // guest lost with the host.
                    tracing::info!(instance = %r.name, "stopped on shutdown");
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(instance = %r.name, error = %e, "cannot stop on shutdown"),
            }
        }
    }
}

/// Cheap pre-check without locks, so that a pass over a thousand settled instances costs one
/// listing and no per-instance libvirt calls.
fn needs_attention(r: &InstanceRecord, listed: Option<&DomainStatus>, now_ms: i64) -> bool {
    let active = listed.is_some_and(|d| d.active);
    match r.desired {
        Desired::Deleted => true,
        Desired::Running => match r.state {
            InstanceState::Running => !active,
            // Its host answers again: adopt the guest, or learn how it ended.
            InstanceState::Unknown => true,
            InstanceState::Pending | InstanceState::Starting => true,
            InstanceState::Exited | InstanceState::Crashed => {
                active || r.next_restart_at_ms.is_some_and(|at| at <= now_ms)
            }
            _ => active,
        },
        Desired::Stopped => active || r.state != InstanceState::Stopped,
    }
}
