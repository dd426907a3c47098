//! What a metrics scrape reads: the counters of this daemon's own running domains (one bulk
//! hypervisor call), its instances by state and their restarts, and the process's figures.
//!
//! Concurrency: the bulk call, the `/proc` reads and the writing of the exposition run on
//! the blocking pool; the store is read with two short statements; no instance lock is
//! taken, so a scrape never waits for (or holds up) a create, a stop or the reconciler.

use super::authz::{authorize, Action};
use super::{blocking, Service, ServiceError};
use crate::auth::Caller;
use crate::metrics::{DomainSample, Metrics, Scrape};
use rhyzome_api::InstanceState;
use std::collections::HashMap;
use std::sync::Arc;

/// Every state an instance can be in, for `rhyzome_instances{state}`.
const STATES: [InstanceState; 7] = [
    InstanceState::Pending,
    InstanceState::Starting,
    InstanceState::Running,
    InstanceState::Stopped,
    InstanceState::Exited,
    InstanceState::Crashed,
    InstanceState::Failed,
];

impl Service {
    /// The metrics counted as things happen, for the HTTP layer to record requests in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The Prometheus exposition of this daemon and of its own domains. Domains of other
    /// daemons or tools on the same libvirt are left out: only a domain whose UUID is one of
    /// this daemon's instances is reported.
    pub async fn scrape(&self, caller: &Caller) -> Result<String, ServiceError> {
        authorize(caller, Action::ReadMetrics)?;
        let backend = self.backend.clone();
        let (counters, process) =
            blocking(move || (backend.all_counters(), crate::metrics::process::read())).await?;
        let libvirt_up = match &counters {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: no domain statistics from the hypervisor");
                false
            }
        };
        let records = self.store.all()?;
        let mut by_state: HashMap<&'static str, u64> = HashMap::new();
        for r in &records {
            *by_state.entry(r.state.as_str()).or_default() += 1;
        }
        let instances_by_state = STATES
            .iter()
            .map(|s| (s.as_str(), by_state.get(s.as_str()).copied().unwrap_or(0)))
            .collect();
        let restarts = records
            .iter()
            .map(|r| (r.name.clone(), u64::from(r.restart_count)))
            .collect();
        let mut domains = Vec::new();
        if let Ok(counters) = counters {
            let by_id: HashMap<&str, &crate::store::InstanceRecord> =
                records.iter().map(|r| (r.id.as_str(), r)).collect();
            let owned: Vec<_> = counters
                .into_iter()
                .filter_map(|c| by_id.get(c.uuid.as_str()).map(|r| (*r, c)))
                .collect();
            if !owned.is_empty() {
                let images = self.store.all_instance_images()?;
                domains = owned
                    .into_iter()
                    .map(|(r, mut counters)| {
                        // libvirt is not asked for vCPUs (see backend/libvirt/bulk.rs): the
                        // domain runs with the instance's.
                        if counters.vcpus == 0 {
                            counters.vcpus = u64::from(r.vcpus);
                        }
                        DomainSample {
                            instance: r.name.clone(),
                            image: images.get(&r.id).cloned(),
                            bridges: r.attachments.iter().map(|a| a.bridge.clone()).collect(),
                            counters,
                        }
                    })
                    .collect();
            }
        }
        // Writing the text takes milliseconds at hundreds of domains (docs/benchmarks.md):
        // off the async runtime too, so that API requests never wait behind it.
        let metrics = self.metrics.clone();
        let scrape = Scrape {
            libvirt_up,
            instances_by_state,
            restarts,
            domains,
            process,
        };
        blocking(move || metrics.render(scrape)).await
    }
}
