//! Managed (libvirt) networks on the hosts other than the primary (issue 20).
//!
//! A managed network is one address space held by the controller: its addresses are given out
//! from the store, so they never collide whichever host an instance runs on. The primary
//! carries every managed network (`networks.rs`); another host gets the same libvirt network
//! (same name, bridge, subnet, gateway, DHCP entries, this daemon's mark) when the first of
//! this daemon's instances on it starts there, and loses it once no instance of this daemon
//! there is on it. Each host's network is its own L2 segment: guests on different hosts reach
//! each other only where the operator joins the segments, or through an emulated network.
//!
//! Concurrency: bringing a network up on a host, and the reconcile pass over the hosts, hold
//! `NETWORKS_LOCK`, as every other network change does; a delete takes the network off every
//! reachable host, and the reconcile pass takes it off the others once they answer.

use super::networks::NETWORKS_LOCK;
use super::{blocking, Service, ServiceError};
use crate::backend::network::{libvirt_network_name, NetworkDefinition, NetworkStatus};
use crate::backend::NetworkRemoval;
use crate::store::attachments::Attachment;
use crate::store::networks::NetworkRecord;
use std::collections::HashSet;

impl Service {
    /// Makes sure `host` (a record's `host`) carries the managed networks among
    /// `attachments` that need a libvirt network (not the emulated ones), before a guest
    /// with them starts there. Nothing to do on the primary, which carries them all.
    pub(super) async fn ensure_networks_on(
        &self,
        host: &str,
        attachments: &[Attachment],
    ) -> Result<(), ServiceError> {
        if self.host_name(host) == self.hosts.primary().name() {
            return Ok(());
        }
        let mut records = Vec::new();
        for id in attachments.iter().filter_map(|a| a.network.as_deref()) {
            match self.store.network_by_id(id)? {
                Some(r)
                    if r.emulator.is_none()
                        && !records.iter().any(|o: &NetworkRecord| o.id == r.id) =>
                {
                    records.push(r)
                }
                _ => {}
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let _guard = self.locks.lock(NETWORKS_LOCK).await;
        let backend = self.backend_on(host)?;
        let host_name = self.host_name(host).to_string();
        for record in records {
            let def = self.network_definition(&record)?;
            let status = {
                let (backend, name) = (backend.clone(), def.libvirt_name.clone());
                blocking(move || backend.network(&name)).await?
            }
            .map_err(|e| {
                self.host_failed(host, &e);
                ServiceError::Backend(e)
            })?;
            let verdict = judge(status.as_ref(), &def, |s| self.is_ours(s));
            if verdict == CopyVerdict::Foreign {
                return Err(ServiceError::Conflict {
                    field: Some("network"),
                    message: format!(
                        "host {host_name:?} has a libvirt network named {:?} that is not this \
                         daemon's; the managed network {:?} cannot be brought up there",
                        def.libvirt_name, record.name
                    ),
                });
            }
            self.apply_verdict(host, verdict, def).await?;
        }
        Ok(())
    }

    /// Brings `def` up on `host` as `verdict` says (nothing, start, or replace a stale copy
    /// of this daemon's).
    async fn apply_verdict(
        &self,
        host: &str,
        verdict: CopyVerdict,
        def: NetworkDefinition,
    ) -> Result<(), ServiceError> {
        if matches!(verdict, CopyVerdict::Fine | CopyVerdict::Foreign) {
            return Ok(());
        }
        let backend = self.backend_on(host)?;
        let (name, daemon) = (def.libvirt_name.clone(), self.daemon_id.clone());
        blocking(move || {
            if verdict == CopyVerdict::Replace {
                // Ours (checked by its mark again inside), from an earlier network of this
                // name with another subnet or bridge.
                backend.remove_network(&def.libvirt_name, &daemon)?;
            }
            backend.define_network(&def)?;
            backend.start_network(&def.libvirt_name)
        })
        .await?
        .map_err(|e| {
            self.host_failed(host, &e);
            ServiceError::Backend(e)
        })?;
        tracing::info!(network = %name, host = %self.host_name(host), ?verdict, "managed network brought up on the host");
        Ok(())
    }

    /// The reconcile pass over the hosts other than the primary: on each reachable one, the
    /// managed networks its instances need are brought back when libvirt lost them, with the
    /// store's DHCP entries, and this daemon's networks no instance there needs (deleted, or
    /// their last instance there gone) are removed. The caller holds `NETWORKS_LOCK`.
    pub(super) async fn reconcile_networks_on_hosts(&self, records: &[NetworkRecord]) {
        let Ok(instances) = self.store.all() else {
            return;
        };
        for host in self.hosts.all().iter().skip(1) {
            let Ok(backend) = host.backend() else {
                continue; // Unreachable: its turn comes when it answers again.
            };
            let name = host.name().to_string();
            let needed: HashSet<&str> = instances
                .iter()
                .filter(|r| self.host_name(&r.host) == name)
                .flat_map(|r| r.attachments.iter().filter_map(|a| a.network.as_deref()))
                .collect();
            let listed = {
                let backend = backend.clone();
                match blocking(move || backend.networks()).await {
                    Ok(Ok(listed)) => listed,
                    Ok(Err(e)) => {
                        self.host_failed(&name, &e);
                        continue;
                    }
                    Err(_) => continue,
                }
            };
            for record in records
                .iter()
                .filter(|r| r.emulator.is_none() && needed.contains(r.id.as_str()))
            {
                let def = match self.network_definition(record) {
                    Ok(def) => def,
                    Err(e) => {
                        tracing::warn!(network = %record.name, error = %e, "cannot read the network");
                        continue;
                    }
                };
                let status = listed.iter().find(|s| s.libvirt_name == def.libvirt_name);
                match (judge(status, &def, |s| self.is_ours(s)), status) {
                    (CopyVerdict::Foreign, _) => {
                        tracing::warn!(network = %record.name, host = %name, "a libvirt network of this name is not this daemon's; not touching it");
                    }
                    (CopyVerdict::Fine, Some(s)) => self.sync_dhcp_hosts(&name, record, s).await,
                    (verdict, _) => {
                        if let Err(e) = self.apply_verdict(&name, verdict, def).await {
                            tracing::warn!(network = %record.name, host = %name, error = %e, "cannot bring the network in line on the host");
                        }
                    }
                }
            }
            for s in listed.iter().filter(|s| self.is_ours(s)) {
                let still_needed = records.iter().any(|r| {
                    r.emulator.is_none()
                        && needed.contains(r.id.as_str())
                        && libvirt_network_name(&r.name) == s.libvirt_name
                });
                if !still_needed {
                    self.remove_network_on(&name, &s.libvirt_name).await;
                }
            }
        }
    }

    /// Removes this daemon's libvirt network `libvirt_name` from every reachable host other
    /// than the primary (a delete); an unreachable host loses it in a later reconcile pass.
    pub(super) async fn remove_network_from_hosts(&self, libvirt_name: &str) {
        for host in self.hosts.all().iter().skip(1) {
            if host.reachable() {
                self.remove_network_on(host.name(), libvirt_name).await;
            }
        }
    }

    /// Removes `libvirt_name` from `host` (a record's `host`: empty is the primary) if it is
    /// this daemon's; logs, never fails.
    pub(super) async fn remove_network_on(&self, host: &str, libvirt_name: &str) {
        let Ok(backend) = self.backend_on(host) else {
            return;
        };
        let (name, daemon) = (libvirt_name.to_string(), self.daemon_id.clone());
        match blocking(move || backend.remove_network(&name, &daemon)).await {
            Ok(Ok(NetworkRemoval::NotOurs(mark))) => {
                tracing::warn!(network = %libvirt_name, %host, ?mark, "the libvirt network of this name is not this daemon's; left alone");
            }
            Ok(Ok(_)) => {
                tracing::info!(network = %libvirt_name, host = %self.host_name(host), "managed network removed from the host");
            }
            Ok(Err(e)) => {
                tracing::warn!(network = %libvirt_name, %host, error = %e, "cannot remove the network from the host")
            }
            Err(e) => {
                tracing::warn!(network = %libvirt_name, %host, error = %e, "cannot remove the network from the host")
            }
        }
    }
}

/// What a host's libvirt network of a managed network's name is, against its definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyVerdict {
    /// Ours, as defined, running.
    Fine,
    /// Missing, or ours and stopped: define and start it.
    BringUp,
    /// Ours but from an earlier network of this name (another subnet or bridge).
    Replace,
    /// Another daemon's or tool's: never touched.
    Foreign,
}

fn judge(
    status: Option<&NetworkStatus>,
    def: &NetworkDefinition,
    is_ours: impl Fn(&NetworkStatus) -> bool,
) -> CopyVerdict {
    let Some(s) = status else {
        return CopyVerdict::BringUp;
    };
    if !is_ours(s) {
        CopyVerdict::Foreign
    } else if s.subnets != [def.subnet] || s.bridge.as_deref() != Some(def.bridge.as_str()) {
        CopyVerdict::Replace
    } else if !s.active {
        CopyVerdict::BringUp
    } else {
        CopyVerdict::Fine
    }
}

/// The DHCP entries to add (`true`) and remove (`false`) so that `status` has `wanted`.
pub(super) fn dhcp_changes(
    wanted: &[crate::backend::network::DhcpHost],
    status: &NetworkStatus,
) -> Vec<(crate::backend::network::DhcpHost, bool)> {
    wanted
        .iter()
        .filter(|h| !status.hosts.contains(h))
        .map(|h| (h.clone(), true))
        .chain(
            status
                .hosts
                .iter()
                .filter(|h| !wanted.contains(h))
                .map(|h| (h.clone(), false)),
        )
        .collect()
}
