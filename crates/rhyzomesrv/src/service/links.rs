//! Link conditions of instances' NICs (issue 14): latency, jitter, loss, rate, down.
//!
//! Today every NIC is on a plain network (a host bridge), where only `rate` can be honoured,
//! by libvirt's `<bandwidth>` when the domain starts; the other conditions need an emulated
//! network (`rhyzome-linkemu`, see docs/architecture.md), which comes with managed networks,
//! and are refused with a 422 that says so. Conditions are stored on the attachments, so a
//! restart or a daemon restart keeps them. A change holds the instance's name lock.

use super::authz::{authorize, Action};
use super::{Service, ServiceError};
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
            "a plain network (a host bridge) can only shape rate: latency, jitter, loss \
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
