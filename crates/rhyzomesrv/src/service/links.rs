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
use super::networks::NETWORKS_LOCK;
use crate::auth::Caller;
use crate::store::attachments::Attachment;
use crate::store::networks::{Emulator, NetworkRecord, Shaping};
use rhyzome_api::validate::{self, FieldError};
use rhyzome_api::{
    Instance, InstanceLink, LinkConditions, NetworkConditions, NetworkLink, NicConditions,
    PartitionRequest, PartitionState,
};
use rhyzome_linkemu::state::{NetworkState, Partition, PortSpec, TapSpec};
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

/// One NIC on an emulated network, as the store has it.
struct EmulatedNic {
    instance: String,
    device: Option<String>,
    labels: BTreeMap<String, String>,
    peer_port: u16,
    /// Its host's `FrameAddress` when that is a remote host.
    peer_address: Option<Ipv4Addr>,
    own: LinkConditions,
}

/// How the emulated NICs of a remote host's guests reach the link emulators: to the
/// controller's `LinkEmulatorAddress`, from the host's `FrameAddress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameRoute {
    pub emulator: Ipv4Addr,
    pub host: Ipv4Addr,
}

impl EmulatedNic {
    fn port(&self) -> String {
        port_name(&self.instance, self.device.as_deref())
    }
}

/// The NICs among `nics` whose instance's labels match `selector`.
fn side<'a>(nics: &'a [EmulatedNic], selector: &BTreeMap<String, String>) -> Vec<&'a EmulatedNic> {
    nics.iter()
        .filter(|n| validate::selector_matches(selector, &n.labels))
        .collect()
}

/// Parses a stored or asked-for selector pair (`field` names it in an error).
fn selectors(
    pair: &[String; 2],
    field: &'static str,
) -> Result<[BTreeMap<String, String>; 2], FieldError> {
    Ok([
        validate::parse_selector(&pair[0], field)?,
        validate::parse_selector(&pair[1], field)?,
    ])
}

impl Service {
    /// The NICs on the emulated network `record`, in instance name order.
    fn emulated_nics(&self, record: &NetworkRecord) -> Result<Vec<EmulatedNic>, ServiceError> {
        let mut nics = Vec::new();
        let mut instances = self.store.all()?;
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        for instance in instances {
            for a in &instance.attachments {
                let (Some(network), Some(peer_port)) = (&a.network, a.emulator_port) else {
                    continue;
                };
                if *network == record.id {
                    // A host that lost its route (the configuration changed) gets none: its
                    // guest's frames are refused until it moves or the route is back.
                    let peer_address = self
                        .frame_route(&instance.host)
                        .ok()
                        .flatten()
                        .map(|r| r.host);
                    nics.push(EmulatedNic {
                        instance: instance.name.clone(),
                        device: a.device.clone(),
                        labels: instance.labels.clone(),
                        peer_port,
                        peer_address,
                        own: a.conditions,
                    });
                }
            }
        }
        Ok(nics)
    }

    /// What the emulator of the emulated network `record` must run with, from the store: its
    /// port, the tap with the gateway address (named as a plain network's bridge would be),
    /// its seed, one port per NIC on it with that NIC's conditions over the network's, and
    /// its partitions resolved from labels to ports.
    pub(super) fn emulator_state(
        &self,
        record: &NetworkRecord,
        emulator: Emulator,
    ) -> Result<NetworkState, ServiceError> {
        let nics = self.emulated_nics(record)?;
        let shaping = self.store.network_shaping(&record.id)?;
        let mut partitions = Vec::new();
        for pair in &shaping.partitions {
            let [a, b] = selectors(pair, "between")?;
            let ports = |s| side(&nics, s).iter().map(|n| n.port()).collect();
            partitions.push(Partition {
                a: ports(&a),
                b: ports(&b),
            });
        }
        // Bound only while some guest is on a remote host: the address may not exist in the
        // emulators' namespace on a controller that drives one host.
        let remote_listen = match self.config.link_emulator_address {
            Some(a) if nics.iter().any(|n| n.peer_address.is_some()) => {
                Some(SocketAddrV4::new(a, emulator.port))
            }
            _ => None,
        };
        Ok(NetworkState {
            listen: SocketAddrV4::new(Ipv4Addr::LOCALHOST, emulator.port),
            remote_listen,
            tap: Some(TapSpec {
                name: record.bridge.clone(),
                address: record.gateway,
                prefix_len: record.subnet.prefix(),
                conditions: LinkConditions::default(),
            }),
            seed: emulator.seed,
            ports: nics
                .iter()
                .map(|n| {
                    let spec = PortSpec {
                        peer_port: n.peer_port,
                        peer_address: n.peer_address,
                        conditions: n.own.or(shaping.defaults),
                    };
                    (n.port(), spec)
                })
                .collect(),
            partitions,
        })
    }

    /// The emulated network `name`. A plain one is a 422 naming `field` when the request
    /// asks for conditions it cannot honour (`field` is in the body), and a 409 otherwise:
    /// the request is sound, the network is of the wrong kind.
    fn emulated_network(
        &self,
        name: &str,
        field: &'static str,
    ) -> Result<(NetworkRecord, Emulator), ServiceError> {
        let record = self.network_record(name)?;
        let Some(emulator) = record.emulator else {
            let message = format!(
                "network {name:?} is not emulated: only an emulated network (network create \
                 --emulated) has network-wide conditions and partitions"
            );
            return Err(match field {
                "conditions" => FieldError::new(field, message).into(),
                _ => ServiceError::Conflict {
                    field: Some(field),
                    message,
                },
            });
        };
        Ok((record, emulator))
    }

    /// What applies now on the emulated network `record`, with `warnings`.
    fn network_conditions_of(
        &self,
        record: &NetworkRecord,
        emulator: Emulator,
        warnings: Vec<String>,
    ) -> Result<NetworkConditions, ServiceError> {
        let nics = self.emulated_nics(record)?;
        let shaping = self.store.network_shaping(&record.id)?;
        let mut partitions = Vec::new();
        for pair in shaping.partitions {
            let [a, b] = selectors(&pair, "between")?;
            let instances = |s| {
                let mut names: Vec<String> =
                    side(&nics, s).iter().map(|n| n.instance.clone()).collect();
                names.dedup();
                names
            };
            partitions.push(PartitionState {
                sides: [instances(&a), instances(&b)],
                between: pair,
            });
        }
        Ok(NetworkConditions {
            network: record.name.clone(),
            seed: emulator.seed,
            defaults: shaping.defaults,
            nics: nics
                .iter()
                .map(|n| NicConditions {
                    instance: n.instance.clone(),
                    device: n.device.clone(),
                    conditions: n.own.or(shaping.defaults),
                })
                .collect(),
            partitions,
            warnings,
        })
    }

    /// Changes the shaping of the emulated network `name` with `change` (which may warn),
    /// stores it, and gives the emulator the result before answering.
    async fn change_shaping(
        &self,
        name: &str,
        field: &'static str,
        change: impl FnOnce(&mut Shaping, &[EmulatedNic]) -> Result<Vec<String>, ServiceError>,
    ) -> Result<NetworkConditions, ServiceError> {
        let _guard = self.locks.lock(NETWORKS_LOCK).await;
        let (record, emulator) = self.emulated_network(name, field)?;
        let mut shaping = self.store.network_shaping(&record.id)?;
        let warnings = change(&mut shaping, &self.emulated_nics(&record)?)?;
        self.store.set_network_shaping(&record.id, &shaping)?;
        self.ensure_emulator(&record).await?;
        self.network_conditions_of(&record, emulator, warnings)
    }

    /// Sets the default conditions of every NIC on the emulated network `name`.
    pub async fn set_network_link(
        &self,
        caller: &Caller,
        name: &str,
        link: NetworkLink,
    ) -> Result<NetworkConditions, ServiceError> {
        authorize(
            caller,
            Action::ChangeNetwork(name, "change link conditions"),
        )?;
        validate::validate_conditions(&link.conditions, "conditions.")?;
        let conditions = self
            .change_shaping(name, "conditions", |shaping, _| {
                shaping.defaults = link.conditions;
                Ok(Vec::new())
            })
            .await?;
        tracing::info!(network = %name, conditions = %link.conditions, "network link conditions set");
        Ok(conditions)
    }

    /// Cuts the emulated network `name` between two label selectors, both ways. A selector
    /// that matches no instance is a warning: an instance created later may match it.
    pub async fn partition_network(
        &self,
        caller: &Caller,
        name: &str,
        req: PartitionRequest,
    ) -> Result<NetworkConditions, ServiceError> {
        authorize(caller, Action::ChangeNetwork(name, "partition networks"))?;
        let parsed = selectors(&req.between, "between")?;
        let conditions = self
            .change_shaping(name, "between", |shaping, nics| {
                let warnings = parsed
                    .iter()
                    .zip(&req.between)
                    .filter(|(s, _)| side(nics, s).is_empty())
                    .map(|(_, text)| {
                        format!("selector {text:?} matches no instance on network {name:?} now")
                    })
                    .collect();
                if !shaping.partitions.contains(&req.between) {
                    shaping.partitions.push(req.between.clone());
                }
                Ok(warnings)
            })
            .await?;
        tracing::info!(network = %name, between = ?req.between, "network partitioned");
        Ok(conditions)
    }

    /// Removes every partition of the emulated network `name`.
    pub async fn heal_network(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<NetworkConditions, ServiceError> {
        authorize(caller, Action::ChangeNetwork(name, "heal networks"))?;
        let conditions = self
            .change_shaping(name, "name", |shaping, _| {
                shaping.partitions.clear();
                Ok(Vec::new())
            })
            .await?;
        tracing::info!(network = %name, "network healed");
        Ok(conditions)
    }

    /// Removes the partition between `pair` (in either order) from the emulated network
    /// `name`, the others kept: a test bed's `heal --between`, authorized on the bed.
    pub(super) async fn remove_partition(
        &self,
        name: &str,
        pair: &[String; 2],
    ) -> Result<NetworkConditions, ServiceError> {
        let reversed = [pair[1].clone(), pair[0].clone()];
        self.change_shaping(name, "between", |shaping, _| {
            shaping.partitions.retain(|p| p != pair && *p != reversed);
            Ok(Vec::new())
        })
        .await
    }

    /// What applies now on the emulated network `name`, per NIC and per partition.
    pub async fn network_conditions(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<NetworkConditions, ServiceError> {
        authorize(caller, Action::ReadNetwork(name))?;
        let (record, emulator) = self.emulated_network(name, "name")?;
        self.network_conditions_of(&record, emulator, Vec::new())
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
        let ensured = blocking(move || {
            // Every reconcile pass ensures: an emulator that already runs this state is not
            // told again (which would rewrite and fsync its state file each time).
            if supervisor
                .state(&name)
                .is_ok_and(|running| running == state)
            {
                return Ok(None);
            }
            supervisor.ensure(&name, &state).map(Some)
        })
        .await?
        .map_err(|e| ServiceError::Internal(format!("link emulator: {e}")))?;
        if let Some(Ensured::Started { pid }) = ensured {
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

    /// How guests on `host` (a record's `host`) reach the link emulators: `None` on a local
    /// host (loopback); on a remote one the route, or why there is none.
    pub(crate) fn frame_route(&self, host: &str) -> Result<Option<FrameRoute>, String> {
        let Some(h) = self.hosts.of(host) else {
            return Err(format!("host {host:?} is not in the daemon's Hosts"));
        };
        if !h.config.is_remote() {
            return Ok(None);
        }
        match (self.config.link_emulator_address, h.config.frame_address) {
            (Some(emulator), Some(address)) => Ok(Some(FrameRoute {
                emulator,
                host: address,
            })),
            _ => Err(super::scheduler::NO_FRAME_PATH.into()),
        }
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
