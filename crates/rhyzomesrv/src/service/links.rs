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
use crate::store::attachments::Attachment;
use crate::store::networks::{Emulator, NetworkRecord};
use rhyzome_api::validate::{self, FieldError};
use rhyzome_api::{Instance, InstanceLink, LinkConditions};
use rhyzome_linkemu::state::{NetworkState, PortSpec, TapSpec};
use rhyzome_linkemu::supervise::Ensured;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};

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
    /// Replaces the link conditions of every NIC of instance `name`. On an emulated network
    /// they reach its emulator before this returns (and apply to its next frame); on a plain
    /// network a rate applies from the guest's next start.
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
        validate::validate_conditions(&link.conditions, "conditions.")?;
        let _guard = self.locks.lock(name).await;
        let r = self.get_record(name)?;
        if r.attachments.is_empty() {
            return Err(FieldError::new(
                "conditions",
                format!("instance {name:?} has no network device"),
            )
            .into());
        }
        let emulated = self.emulator_ports(&r.attachments)?;
        if r.attachments
            .iter()
            .any(|a| a.network.as_ref().is_none_or(|n| !emulated.contains_key(n)))
        {
            check_plain_link(&link.conditions, "conditions.")?;
        }
        self.store.set_link_conditions(&r.id, &link.conditions)?;
        // Stored first, so a daemon restart keeps it; the emulator writes it to its own state
        // file before it answers, so its own restart keeps it too.
        self.ensure_emulators_of(&r.attachments).await?;
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

/// The emulator port name of a NIC: its instance's name, and `/device` for a NIC of a
/// multi-NIC image (names cannot contain '/', so two NICs never share one).
pub(super) fn port_name(instance: &str, device: Option<&str>) -> String {
    match device {
        Some(device) => format!("{instance}/{device}"),
        None => instance.to_string(),
    }
}

impl Service {
    /// What the emulator of the emulated network `record` must run with, from the store: its
    /// port, the tap with the gateway address (named as a plain network's bridge would be),
    /// its seed, and one port per NIC on it with that NIC's conditions.
    pub(super) fn emulator_state(
        &self,
        record: &NetworkRecord,
        emulator: Emulator,
    ) -> Result<NetworkState, ServiceError> {
        let mut ports = BTreeMap::new();
        for instance in self.store.all()? {
            for a in &instance.attachments {
                let (Some(network), Some(peer_port)) = (&a.network, a.emulator_port) else {
                    continue;
                };
                if *network == record.id {
                    ports.insert(
                        port_name(&instance.name, a.device.as_deref()),
                        PortSpec {
                            peer_port,
                            conditions: a.conditions,
                        },
                    );
                }
            }
        }
        Ok(NetworkState {
            listen: SocketAddrV4::new(Ipv4Addr::LOCALHOST, emulator.port),
            tap: Some(TapSpec {
                name: record.bridge.clone(),
                address: record.gateway,
                prefix_len: record.subnet.prefix(),
                conditions: LinkConditions::default(),
            }),
            seed: emulator.seed,
            ports,
            partitions: Vec::new(),
        })
    }

    /// Makes the emulator of `record` (an emulated network) run with the store's state:
    /// started if none answers, told the new state if one does. Before any guest on it
    /// starts, and after every change of its NICs or conditions.
    pub(super) async fn ensure_emulator(&self, record: &NetworkRecord) -> Result<(), ServiceError> {
        let Some(emulator) = record.emulator else {
            return Ok(());
        };
        let state = self.emulator_state(record, emulator)?;
        let supervisor = self.emulators.clone();
        let name = record.name.clone();
        let ensured = blocking(move || supervisor.ensure(&name, &state))
            .await?
            .map_err(|e| ServiceError::Internal(format!("link emulator: {e}")))?;
        if let Ensured::Started { pid } = ensured {
            tracing::info!(network = %record.name, pid, "link emulator started");
        }
        Ok(())
    }

    /// [`Self::ensure_emulator`] for every emulated network one of `attachments` is on.
    pub(super) async fn ensure_emulators_of(
        &self,
        attachments: &[Attachment],
    ) -> Result<(), ServiceError> {
        let mut done: Vec<&str> = Vec::new();
        for network in attachments.iter().filter_map(|a| a.network.as_deref()) {
            if done.contains(&network) {
                continue;
            }
            done.push(network);
            if let Some(record) = self.store.network_by_id(network)? {
                self.ensure_emulator(&record).await?;
            }
        }
        Ok(())
    }

    /// The emulator port of each emulated network that one of `attachments` is on, by
    /// network id.
    pub(super) fn emulator_ports(
        &self,
        attachments: &[Attachment],
    ) -> Result<HashMap<String, u16>, ServiceError> {
        let mut ports = HashMap::new();
        for network in attachments.iter().filter_map(|a| a.network.as_deref()) {
            if ports.contains_key(network) {
                continue;
            }
            if let Some(Emulator { port, .. }) =
                self.store.network_by_id(network)?.and_then(|n| n.emulator)
            {
                ports.insert(network.to_string(), port);
            }
        }
        Ok(ports)
    }
}
