//! Managed networks: libvirt networks (bridge, DHCP, forwarding) that the daemon creates,
//! keeps in its store, brings back when libvirt lost them, and removes only when they carry
//! its own mark.
//!
//! A create checks the request (422 naming the field), then that the subnet overlaps nothing:
//! this daemon's networks (the store), every network libvirt knows whoever made it, and the
//! routes of the libvirt host (the network namespace libvirtd runs in; see
//! `backend/libvirt/host.rs`). It then writes the record, defines and starts the libvirt
//! network, and undoes both if libvirt refuses, so a refused create leaves nothing.
//!
//! Concurrency: every create, delete and network reconcile holds one lock (`NETWORKS_LOCK`,
//! a key no instance name can take), so an overlap check and the insert it allows cannot
//! interleave with another's. Network operations are rare; instances never wait on it.

use super::authz::{authorize, Action};
use super::{blocking, now_rfc3339, Service, ServiceError};
use crate::auth::Caller;
use crate::backend::network::{
    libvirt_network_name, DhcpHost, NetworkDefinition, NetworkMark, NetworkStatus,
};
use crate::backend::{BackendError, NetworkRemoval};
use crate::store::networks::{Emulator, NetworkRecord};
use rhyzome_api::networks::{validate_network, ValidNetwork};
use rhyzome_api::validate::FieldError;
use rhyzome_api::{Network, NetworkAddress, NetworkCreate};
use sha2::{Digest, Sha256};

/// The lock of every network change (names cannot contain ':').
pub(super) const NETWORKS_LOCK: &str = "networks:";

/// The bridge of the managed network `name` of daemon `daemon_id`: `rzn-` and ten hex digits,
/// 14 bytes (the kernel allows 15), distinct between daemons sharing one libvirt host.
pub fn bridge_name(daemon_id: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("rhyzome-bridge:{daemon_id}:{name}").as_bytes());
    format!("rzn-{}", &hex::encode(digest)[..10])
}

impl Service {
    /// Creates a managed network for `caller` and starts it in libvirt.
    pub async fn create_network(
        &self,
        req: NetworkCreate,
        caller: &Caller,
    ) -> Result<Network, ServiceError> {
        authorize(caller, Action::CreateNetworks)?;
        let valid = validate_network(&req)?;
        caller.may_name(&valid.name)?;
        let _guard = self.locks.lock(NETWORKS_LOCK).await;
        if self.store.network_by_name(&valid.name)?.is_some() {
            return Err(ServiceError::Conflict {
                field: Some("name"),
                message: format!("a network named {:?} already exists", valid.name),
            });
        }
        self.check_network_is_free(&valid, caller).await?;
        let record = NetworkRecord {
            id: uuid::Uuid::new_v4().to_string(),
            bridge: bridge_name(&self.daemon_id, &valid.name),
            name: valid.name,
            subnet: valid.subnet,
            gateway: valid.gateway,
            mode: valid.mode,
            dhcp: valid.dhcp,
            owner: caller.name.clone(),
            created_at: now_rfc3339(),
            emulator: valid.emulated.then(|| Emulator {
                port: 0, // given by the store
                seed: valid.seed.unwrap_or_else(random_seed),
            }),
        };
        let record = self.store.insert_network(&record).map_err(|e| match e {
            crate::store::StoreError::NameTaken(name) => ServiceError::Conflict {
                field: Some("name"),
                message: format!("a network named {name:?} already exists"),
            },
            crate::store::StoreError::Address(refusal) => ServiceError::Conflict {
                field: Some("emulated"),
                message: refusal.to_string(),
            },
            e => e.into(),
        })?;
        if !valid.link.is_empty() {
            // Stored before the emulator starts, which reads its conditions from the store.
            let mut shaping = self.store.network_shaping(&record.id)?;
            shaping.defaults = valid.link;
            self.store.set_network_shaping(&record.id, &shaping)?;
        }
        if let Err(e) = self.bring_up(&record).await {
            tracing::warn!(network = %record.name, error = %e, "network create failed; rolling back");
            self.take_down(&record).await;
            self.store.remove_network(&record.id)?;
            return Err(explain_network_error(e));
        }
        tracing::info!(network = %record.name, subnet = %record.subnet, bridge = %record.bridge, "network created");
        let active = self.network_is_active(&record).await?;
        self.network_to_api(&record, active)
    }

    /// The managed networks `caller` sees, by name.
    pub async fn list_networks(&self, caller: &Caller) -> Result<Vec<Network>, ServiceError> {
        let records: Vec<NetworkRecord> = self
            .store
            .networks()?
            .into_iter()
            .filter(|n| caller.sees(&n.name))
            .collect();
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.backend.clone();
        let listed = blocking(move || backend.networks())
            .await?
            .map_err(ServiceError::Backend)?;
        let mut out = Vec::with_capacity(records.len());
        for r in &records {
            let active = if r.emulator.is_some() {
                self.emulator_answers(r).await?
            } else {
                listed
                    .iter()
                    .find(|s| s.libvirt_name == libvirt_network_name(&r.name))
                    .is_some_and(|s| s.active && self.is_ours(s))
            };
            out.push(self.network_to_api(r, active)?);
        }
        Ok(out)
    }

    /// Whether what carries `record`'s frames runs now: its emulator answers, or libvirt runs
    /// its network (this daemon's).
    async fn network_is_active(&self, record: &NetworkRecord) -> Result<bool, ServiceError> {
        if record.emulator.is_some() {
            return self.emulator_answers(record).await;
        }
        let status = self.libvirt_network(record).await?;
        Ok(status.is_some_and(|s| s.active && self.is_ours(&s)))
    }

    async fn emulator_answers(&self, record: &NetworkRecord) -> Result<bool, ServiceError> {
        let supervisor = self.emulators.clone();
        let network = record.name.clone();
        blocking(move || supervisor.stats(&network).is_ok()).await
    }

    /// One managed network, with the addresses given out on it.
    pub async fn get_network(&self, caller: &Caller, name: &str) -> Result<Network, ServiceError> {
        authorize(caller, Action::ReadNetwork(name))?;
        let record = self.network_record(name)?;
        let active = self.network_is_active(&record).await?;
        self.network_to_api(&record, active)
    }

    /// Removes a managed network: refused (409) while an instance is attached to it. The
    /// libvirt network goes only if it carries this daemon's mark.
    pub async fn delete_network(&self, caller: &Caller, name: &str) -> Result<(), ServiceError> {
        authorize(caller, Action::ChangeNetwork(name, "delete networks"))?;
        let _guard = self.locks.lock(NETWORKS_LOCK).await;
        let record = self.network_record(name)?;
        let mut users: Vec<String> = self
            .store
            .network_addresses(name)?
            .into_iter()
            .map(|a| a.instance)
            .collect();
        // Attached by its bridge's name rather than by the network's.
        users.extend(
            self.store
                .all()?
                .into_iter()
                .filter(|r| r.attachments.iter().any(|a| a.bridge == record.bridge))
                .map(|r| r.name),
        );
        users.sort();
        users.dedup();
        if !users.is_empty() {
            return Err(ServiceError::Conflict {
                field: None,
                message: format!(
                    "network {name:?} is in use by {} instance(s): {}; delete them first",
                    users.len(),
                    users.join(", ")
                ),
            });
        }
        if record.emulator.is_some() {
            let supervisor = self.emulators.clone();
            let network = name.to_string();
            blocking(move || supervisor.stop(&network))
                .await?
                .map_err(|e| ServiceError::Internal(format!("link emulator: {e}")))?;
        } else {
            let libvirt_name = libvirt_network_name(name);
            let backend = self.backend.clone();
            let daemon = self.daemon_id.clone();
            let removal = blocking(move || backend.remove_network(&libvirt_name, &daemon))
                .await?
                .map_err(ServiceError::Backend)?;
            if let NetworkRemoval::NotOurs(mark) = removal {
                tracing::warn!(network = %name, ?mark, "the libvirt network of this name is not this daemon's; left alone");
            }
            self.remove_network_from_hosts(&libvirt_network_name(name))
                .await;
        }
        self.store.remove_network(&record.id)?;
        tracing::info!(network = %name, "network deleted");
        Ok(())
    }

    /// Brings libvirt in line with the store's networks: a network libvirt lost (a libvirtd
    /// restart, a host reboot) is defined and started again, with its DHCP entries; a network
    /// marked as this daemon's that no record claims (a create or delete cut short) is
    /// removed. Networks of other daemons and tools are left alone. Runs at start-up before
    /// any guest is started, and in every reconcile pass while managed networks exist.
    pub async fn reconcile_networks(&self) -> Result<(), ServiceError> {
        let _guard = self.locks.lock(NETWORKS_LOCK).await;
        let backend = self.backend.clone();
        // Listed before records are read: a create records before it defines.
        let listed = blocking(move || backend.networks())
            .await?
            .map_err(ServiceError::Backend)?;
        let records = self.store.networks()?;
        for record in &records {
            if record.emulator.is_some() {
                // No libvirt network: its emulator, which supervision keeps alive, is
                // given the store's state (after a daemon restart, the adoption).
                if let Err(e) = self.ensure_emulator(record).await {
                    tracing::warn!(network = %record.name, error = %e, "cannot ensure its link emulator");
                }
                continue;
            }
            let status = listed
                .iter()
                .find(|s| s.libvirt_name == libvirt_network_name(&record.name));
            match status {
                Some(s) if !self.is_ours(s) => {
                    tracing::warn!(network = %record.name, mark = ?s.mark, "a libvirt network of this name is not this daemon's; not touching it");
                }
                Some(s) if s.active => self.sync_dhcp_hosts("", record, s).await,
                _ => {
                    tracing::info!(network = %record.name, "network missing, stopped or stale in libvirt; bringing it up");
                    if let Err(e) = self.bring_up_network(record).await {
                        tracing::warn!(network = %record.name, error = %e, "cannot bring the network up");
                    }
                }
            }
        }
        for s in &listed {
            let claimed = records
                .iter()
                .any(|r| libvirt_network_name(&r.name) == s.libvirt_name);
            if !claimed && self.is_ours(s) {
                tracing::info!(network = %s.libvirt_name, "removing a network of this daemon that no record claims");
                let backend = self.backend.clone();
                let (name, daemon) = (s.libvirt_name.clone(), self.daemon_id.clone());
                if let Err(e) = blocking(move || backend.remove_network(&name, &daemon)).await? {
                    tracing::warn!(network = %s.libvirt_name, error = %e, "cannot remove it");
                }
            }
        }
        if self.hosts.all().len() > 1 {
            self.reconcile_networks_on_hosts(&records).await;
        }
        Ok(())
    }

    /// [`Self::reconcile_networks`] at start-up (`all`), or in a steady pass when managed
    /// networks exist; a failure is logged, and the next pass tries again.
    pub(super) async fn reconcile_networks_logged(&self, all: bool) {
        let any = match self.store.networks() {
            Ok(records) => !records.is_empty(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read networks");
                return;
            }
        };
        // With several hosts the pass also takes copies off hosts that no longer need them,
        // even once the store holds no network at all.
        if all || any || self.hosts.all().len() > 1 {
            if let Err(e) = self.reconcile_networks().await {
                tracing::warn!(error = %e, "cannot reconcile networks");
            }
        }
    }

    pub(super) fn is_ours(&self, status: &NetworkStatus) -> bool {
        status
            .mark
            .as_ref()
            .is_some_and(|m| m.daemon == self.daemon_id)
    }

    pub(super) fn network_record(&self, name: &str) -> Result<NetworkRecord, ServiceError> {
        self.store
            .network_by_name(name)?
            .ok_or_else(|| ServiceError::NetworkNotFound(name.to_string()))
    }

    async fn libvirt_network(
        &self,
        record: &NetworkRecord,
    ) -> Result<Option<NetworkStatus>, ServiceError> {
        let backend = self.backend.clone();
        let libvirt_name = libvirt_network_name(&record.name);
        blocking(move || backend.network(&libvirt_name))
            .await?
            .map_err(ServiceError::Backend)
    }

    /// Refuses a subnet that overlaps this daemon's networks, any libvirt network, or a route
    /// of the libvirt host, and a name whose libvirt network someone else holds.
    async fn check_network_is_free(
        &self,
        valid: &ValidNetwork,
        caller: &Caller,
    ) -> Result<(), ServiceError> {
        let overlap = |what: String| {
            ServiceError::Invalid(FieldError::new(
                "subnet",
                format!("{} overlaps {what}", valid.subnet),
            ))
        };
        for other in self.store.networks()? {
            if other.subnet.overlaps(&valid.subnet) {
                return Err(overlap(if caller.sees(&other.name) {
                    format!("managed network {:?} ({})", other.name, other.subnet)
                } else {
                    format!("another tenant's managed network ({})", other.subnet)
                }));
            }
        }
        let backend = self.backend.clone();
        let (listed, routes) =
            blocking(move || Ok::<_, BackendError>((backend.networks()?, backend.host_routes()?)))
                .await?
                .map_err(ServiceError::Backend)?;
        let libvirt_name = libvirt_network_name(&valid.name);
        for status in &listed {
            if status.libvirt_name == libvirt_name {
                if self.is_ours(status) {
                    // Left by a create cut short before its record was removed: ours to replace.
                    continue;
                }
                return Err(ServiceError::Conflict {
                    field: Some("name"),
                    message: format!(
                        "libvirt already has a network named {libvirt_name:?} that this daemon \
                         did not make; choose another name"
                    ),
                });
            }
            if let Some(subnet) = status.subnets.iter().find(|s| s.overlaps(&valid.subnet)) {
                return Err(overlap(format!(
                    "libvirt network {:?} ({subnet})",
                    status.libvirt_name
                )));
            }
        }
        for route in routes.unwrap_or_default() {
            if route.subnet.overlaps(&valid.subnet) {
                return Err(overlap(format!(
                    "{} on interface {:?} of the libvirt host",
                    route.subnet, route.interface
                )));
            }
        }
        Ok(())
    }

    /// Makes the live DHCP entries of a running network those of the store.
    /// `host` is a record's `host` (empty: the primary).
    pub(super) async fn sync_dhcp_hosts(
        &self,
        host: &str,
        record: &NetworkRecord,
        status: &NetworkStatus,
    ) {
        let wanted = match self.dhcp_hosts(record) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(network = %record.name, error = %e, "cannot read its addresses");
                return;
            }
        };
        for (entry, present) in super::network_hosts::dhcp_changes(&wanted, status) {
            self.set_dhcp_entry(host, &record.name, entry, present)
                .await;
        }
    }

    /// Adds or removes one DHCP entry of the managed network `network` on `host` (a record's
    /// `host`: empty is the primary); a failure is logged, as the next reconcile pass
    /// corrects the entries from the store.
    pub(super) async fn set_dhcp_entry(
        &self,
        host: &str,
        network: &str,
        entry: DhcpHost,
        present: bool,
    ) {
        let backend = match self.backend_on(host) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(network = %network, error = %e, "cannot update a DHCP entry");
                return;
            }
        };
        let libvirt_name = libvirt_network_name(network);
        let done = blocking(move || {
            backend
                .set_dhcp_host(&libvirt_name, &entry, present)
                .map_err(ServiceError::Backend)
        })
        .await
        .and_then(|r| r);
        if let Err(e) = done {
            tracing::warn!(network = %network, error = %e, "cannot update a DHCP entry");
        }
    }

    /// The static DHCP entries of a network: one per address given out, when it runs DHCP.
    fn dhcp_hosts(&self, record: &NetworkRecord) -> Result<Vec<DhcpHost>, ServiceError> {
        if !record.dhcp {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .network_addresses(&record.name)?
            .into_iter()
            .map(|a| DhcpHost {
                mac: a.mac,
                ip: a.ip,
            })
            .collect())
    }

    pub(super) fn network_definition(
        &self,
        record: &NetworkRecord,
    ) -> Result<NetworkDefinition, ServiceError> {
        Ok(NetworkDefinition {
            libvirt_name: libvirt_network_name(&record.name),
            bridge: record.bridge.clone(),
            subnet: record.subnet,
            gateway: record.gateway,
            mode: record.mode,
            dhcp: record.dhcp,
            hosts: self.dhcp_hosts(record)?,
            mark: NetworkMark {
                daemon: self.daemon_id.clone(),
                name: record.name.clone(),
            },
        })
    }

    /// Defines the network as the store says (a definition replaces the old one) and starts
    /// it; a running network keeps running (its DHCP entries are changed live, by
    /// [`Self::sync_dhcp_hosts`]).
    async fn bring_up_network(&self, record: &NetworkRecord) -> Result<(), ServiceError> {
        let def = self.network_definition(record)?;
        let backend = self.backend.clone();
        blocking(move || {
            backend.define_network(&def)?;
            backend.start_network(&def.libvirt_name)
        })
        .await?
        .map_err(ServiceError::Backend)
    }

    /// Brings up what carries `record`'s frames: its emulator, or its libvirt network.
    async fn bring_up(&self, record: &NetworkRecord) -> Result<(), ServiceError> {
        if record.emulator.is_some() {
            self.ensure_emulator(record).await
        } else {
            self.bring_up_network(record).await
        }
    }

    /// Undoes [`Self::bring_up`] after a failed create; logs, never fails (the caller is
    /// already answering with another error).
    async fn take_down(&self, record: &NetworkRecord) {
        if record.emulator.is_none() {
            // The caller is already answering with another error: this logs, never fails.
            return self
                .remove_network_on("", &libvirt_network_name(&record.name))
                .await;
        }
        let supervisor = self.emulators.clone();
        let network = record.name.clone();
        match blocking(move || supervisor.stop(&network)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(network = %record.name, error = %e, "cannot stop the link emulator")
            }
            Err(e) => {
                tracing::warn!(network = %record.name, error = %e, "cannot stop the link emulator")
            }
        }
    }

    pub(super) fn network_to_api(
        &self,
        record: &NetworkRecord,
        active: bool,
    ) -> Result<Network, ServiceError> {
        let addresses = self.store.network_addresses(&record.name)?;
        let in_use = addresses.len() as u32;
        Ok(Network {
            name: record.name.clone(),
            libvirt_name: libvirt_network_name(&record.name),
            bridge: record.bridge.clone(),
            subnet: record.subnet.to_string(),
            gateway: record.gateway.to_string(),
            prefix: record.subnet.prefix(),
            mode: record.mode,
            dhcp: record.dhcp,
            emulated: record.emulator.is_some(),
            seed: record.emulator.map(|e| e.seed),
            link: if record.emulator.is_some() {
                self.store.network_shaping(&record.id)?.defaults
            } else {
                Default::default()
            },
            addresses_in_use: in_use,
            // Every host address but the gateway's can be given out.
            addresses_free: record.subnet.host_count() - 1 - in_use,
            attachments: addresses
                .into_iter()
                .map(|a| NetworkAddress {
                    instance: a.instance,
                    device: a.device,
                    ip: a.ip.to_string(),
                    mac: a.mac,
                })
                .collect(),
            active,
            created_at: record.created_at.clone(),
            owner: record.owner.clone(),
        })
    }
}

/// libvirt's refusal to start a network because a host interface already has a route to its
/// subnet ("Network is already in use by interface rzbr0") is the request's fault: the
/// subnet. This is libvirt's own check, which catches an exact match the route table did not
/// (a remote libvirt host, whose routes the daemon cannot read).
fn explain_network_error(e: ServiceError) -> ServiceError {
    match &e {
        ServiceError::Backend(BackendError::Rejected { message })
            if message.contains("already in use by interface") =>
        {
            ServiceError::Invalid(FieldError::new(
                "subnet",
                format!("libvirt refused the subnet: {message}"),
            ))
        }
        _ => e,
    }
}

/// A seed for an emulated network created without one: fresh randomness (a v4 UUID's bits).
fn random_seed() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}
