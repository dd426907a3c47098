//! Statistics of a running instance: CPU time, memory and each NIC's counters, read from
//! the hypervisor.

use super::authz::{authorize, Action};
use super::{blocking, Service, ServiceError};
use crate::auth::Caller;
use rhyzome_api::InstanceState;

impl Service {
    /// What a running instance uses now: CPU time, memory, and each NIC's counters.
    pub async fn stats(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<rhyzome_api::InstanceStats, ServiceError> {
        authorize(caller, Action::ReadInstance(name))?;
        let i = self.instance(name)?;
        let not_running = |state: InstanceState| ServiceError::Conflict {
            field: None,
            message: format!("instance {name:?} is {state}; statistics exist only while it runs"),
        };
        if i.state != InstanceState::Running {
            return Err(not_running(i.state));
        }
        let macs: Vec<String> = i.attachments.iter().map(|a| a.mac.clone()).collect();
        let host = i
            .placement
            .as_ref()
            .map(|p| p.host.clone())
            .unwrap_or_default();
        let backend = self.backend_on(&host)?;
        let (id, asked) = (i.id.clone(), macs.clone());
        let Some(s) = blocking(move || backend.stats(&id, &asked))
            .await?
            .map_err(ServiceError::Backend)?
        else {
            // It ended between the read and the call; the reconciler records how.
            return Err(not_running(InstanceState::Exited));
        };
        Ok(rhyzome_api::InstanceStats {
            name: i.name,
            cpu_time_ns: s.cpu_time_ns,
            memory_kib: s.memory_kib,
            rss_kib: s.rss_kib,
            nics: macs
                .into_iter()
                .zip(s.nics)
                .map(|(mac, c)| rhyzome_api::NicStats {
                    mac,
                    rx_bytes: c.rx_bytes,
                    rx_packets: c.rx_packets,
                    tx_bytes: c.tx_bytes,
                    tx_packets: c.tx_packets,
                })
                .collect(),
        })
    }
}
