//! Link conditions of instances' NICs (issue 14): latency, jitter, loss, rate, down.
//!
//! Today every NIC is on a plain network (a host bridge, or a managed network without emulation), where only `rate` can be honoured,
//! by libvirt's `<bandwidth>` when the domain starts; the other conditions need an emulated
//! network (`rhyzome-linkemu`, see docs/architecture.md), which comes with managed networks,
//! and are refused with a 422 that says so. Conditions are stored on the attachments, so a
//! restart or a daemon restart keeps them. A change holds the instance's name lock.
//!
//! Emulators: each one has a directory under `StateDir/emulators` (see
//! `rhyzome_linkemu::supervise`) and runs detached from the daemon. [`Service::run_link_supervision`]
//! looks at every one each second: one that answers is left alone (after a daemon restart,
//! that is its adoption), one that does not is started again from its own state file, and
//! that restart is published as an event of `network:NAME`. Checks run on the blocking pool,
//! one network after another.

use super::authz::{authorize, Action};
use super::{blocking, now_rfc3339, Service, ServiceError};
use std::sync::Arc;
use std::time::Duration;

/// How often emulators are checked: the longest a dead one goes unnoticed.
pub const SUPERVISION_INTERVAL: Duration = Duration::from_secs(1);
use crate::auth::Caller;
use rhyzome_api::validate::{self, FieldError};
use rhyzome_api::{Instance, InstanceLink, LinkConditions};

/// Checks conditions asked for NICs on plain networks, naming `{prefix}{field}`.
pub(super) fn check_plain_link(c: &LinkConditions, prefix: &str) -> Result<(), FieldError> {
    validate::validate_conditions(c, prefix)?;
    let refused = [
        ("latency_ms", c.latency_ms.is_some()),
        ("jitter_ms", c.jitter_ms.is_some()),
        ("loss_percent", c.loss_percent.is_some()),
        (
            "loss_correlation_percent",
            c.loss_correlation_percent.is_some(),
        ),
        ("down", c.down.is_some()),
    ];
    if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
        return Err(FieldError::new(
            format!("{prefix}{field}"),
            "a plain network (a host bridge, or a managed network without emulation) can only shape rate: latency, jitter, loss \
             and down need an emulated network (rhyzomectl network create --emulated)",
        ));
    }
    Ok(())
}

impl Service {
    /// Replaces the link conditions of every NIC of instance `name`. On a plain network a
    /// rate applies from the guest's next start.
    pub async fn set_link(
        &self,
        caller: &Caller,
        name: &str,
        link: InstanceLink,
    ) -> Result<Instance, ServiceError> {
        authorize(
            caller,
            Action::ChangeInstance(name, "change link conditions"),
        )?;
        check_plain_link(&link.conditions, "conditions.")?;
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        if r.attachments.is_empty() {
            return Err(FieldError::new(
                "conditions",
                format!("instance {name:?} has no network device"),
            )
            .into());
        }
        self.store.set_link_conditions(&r.id, &link.conditions)?;
        tracing::info!(instance = %name, conditions = %link.conditions, "link conditions set");
        self.instance(name)
    }
}

impl Service {
    /// Checks every emulator once: adopts the live ones, restarts the dead ones (an event
    /// each). Returns the networks whose emulator was restarted.
    pub async fn supervise_emulators(&self) -> Vec<String> {
        let supervisor = self.emulators.clone();
        let Ok(networks) = blocking(move || supervisor.known()).await else {
            return Vec::new();
        };
        let mut restarted = Vec::new();
        for network in networks {
            let supervisor = self.emulators.clone();
            let name = network.clone();
            match blocking(move || supervisor.revive(&name)).await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(pid))) => {
                    tracing::warn!(network = %network, pid, "link emulator was not answering; restarted it from its state file");
                    self.events.publish(rhyzome_api::Event {
                        time: now_rfc3339(),
                        instance: format!("network:{network}"),
                        state: "emulator_restarted".into(),
                        exit_code: None,
                        reason: Some(format!(
                            "the link emulator of network {network} was not answering; restarted (pid {pid}) with its saved conditions"
                        )),
                        restart_count: 0,
                    });
                    restarted.push(network);
                }
                Ok(Err(e)) => {
                    tracing::error!(network = %network, error = %e, "link emulator could not be restarted")
                }
                Err(e) => {
                    tracing::error!(network = %network, error = %e, "link emulator check failed")
                }
            }
        }
        restarted
    }

    /// Supervises the emulators every [`SUPERVISION_INTERVAL`], for the daemon's life.
    pub async fn run_link_supervision(self: Arc<Self>) {
        loop {
            self.supervise_emulators().await;
            tokio::time::sleep(SUPERVISION_INTERVAL).await;
        }
    }
}
