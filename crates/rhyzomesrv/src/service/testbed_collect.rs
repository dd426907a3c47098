//! Collecting a test bed's results (`GET /v1/testbeds/{name}/collect`): one tar archive with
//! the file as applied (`testbed.toml`), every member's console (`GROUP/NAME/console.log`)
//! and the run's summary (`summary.json`, `summary.csv`; see `rhyzome_api::collect`).
//!
//! [`Service::collect_testbed`] authorizes (as reading the bed) and takes a snapshot of the
//! records: the bed, its members, their instances and networks. Writing
//! ([`TestbedCollection::write_to`]) is blocking file I/O, run by the caller on the blocking
//! pool into a streaming writer. Consoles are read and written one at a time (at most
//! [`console::MAX_CONSOLE_READ`] each in memory), and their RESULT lines are parsed as they
//! go; the summaries come last, so that they are made from exactly the bytes in the archive
//! even while consoles grow, without reading any log twice or holding them all.
//!
//! **Which console.** What `GET /v1/instances/{name}/console` returns without `current_run`:
//! the instance's current log file, i.e. every run since virtlogd last rotated it, at most its
//! last 1 MiB. Rotated copies (`<id>.log.0`) are not included, as the console API does not
//! serve them either.

use super::authz::{authorize, Action};
use super::{now_rfc3339, Service, ServiceError};
use crate::auth::Caller;
use crate::console;
use rhyzome_api::collect::{
    parse_results, summary_csv, CollectInstance, CollectNetwork, CollectSummary, CONSOLE_FILE,
    SUMMARY_CSV, SUMMARY_JSON, TESTBED_FILE,
};
use rhyzome_api::testbed::parse_bed;
use rhyzome_api::InstanceState;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A bed's records as they were when collection began, and where its consoles are.
pub struct TestbedCollection {
    summary: CollectSummary,
    /// Per instance of `summary.instances`, its console log (`None`: no instance now, or its
    /// host cannot be reached).
    consoles: Vec<Option<super::host_files::ConsoleSource>>,
}

fn rfc3339_of_ms(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

impl Service {
    /// Authorizes reading the bed and snapshots what its archive is made of.
    pub async fn collect_testbed(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<TestbedCollection, ServiceError> {
        authorize(caller, Action::ReadTestbed(name))?;
        let bed = self
            .store
            .testbed(name)?
            .ok_or_else(|| ServiceError::TestbedNotFound(name.to_string()))?;
        let seed = parse_bed(&bed.file).map_or(0, |b| b.seed);
        let owned = self.store.testbed_networks(name)?;
        let mut instances = Vec::new();
        let mut consoles = Vec::new();
        let mut network_ids: Vec<String> = Vec::new();
        let mut member_names = Vec::new();
        for m in self.store.testbed_members(name)? {
            let record = self.store.by_name(&m.instance)?;
            let ended = |r: &crate::store::InstanceRecord| {
                matches!(
                    r.state,
                    InstanceState::Exited
                        | InstanceState::Crashed
                        | InstanceState::Failed
                        | InstanceState::Stopped
                )
                .then(|| r.state_changed_at.clone())
            };
            instances.push(CollectInstance {
                console: format!("{}/{}/{CONSOLE_FILE}", m.group, m.instance),
                group: m.group,
                index: m.index,
                name: m.instance.clone(),
                state: record
                    .as_ref()
                    .map_or("missing", |r| r.state.as_str())
                    .to_string(),
                exit_code: record.as_ref().and_then(|r| r.exit_code),
                restarts: record.as_ref().map_or(0, |r| r.restart_count),
                created_at: record.as_ref().map(|r| r.created_at.clone()),
                ready_at: m.ready_ms.map(rfc3339_of_ms),
                ready_ms: m.ready_ms,
                ended_at: record.as_ref().and_then(ended),
                results: Vec::new(),
            });
            consoles.push(record.as_ref().and_then(|r| self.console_source(r).ok()));
            for a in record.iter().flat_map(|r| &r.attachments) {
                if let Some(id) = &a.network {
                    if !network_ids.contains(id) {
                        network_ids.push(id.clone());
                    }
                }
            }
            member_names.push(m.instance);
        }
        let mut networks = Vec::new();
        for id in &network_ids {
            let Some(n) = self.store.network_by_id(id)? else {
                continue;
            };
            let conditions = match n.emulator {
                Some(_) => {
                    let mut c = self
                        .network_conditions(&Caller::internal(), &n.name)
                        .await?;
                    // Only the bed's own NICs: the network may carry other instances.
                    c.nics.retain(|nic| member_names.contains(&nic.instance));
                    Some(c)
                }
                None => None,
            };
            networks.push(CollectNetwork {
                owned_by_testbed: owned.contains(&n.name),
                name: n.name,
                subnet: n.subnet.to_string(),
                gateway: n.gateway.to_string(),
                emulated: n.emulator.is_some(),
                conditions,
            });
        }
        Ok(TestbedCollection {
            summary: CollectSummary {
                testbed: bed.name,
                seed,
                file: bed.file,
                applied_at: bed.applied_at,
                collected_at: now_rfc3339(),
                networks,
                instances,
            },
            consoles,
        })
    }
}

impl TestbedCollection {
    /// Writes the archive to `out`: `testbed.toml`, each console, then the summaries. Blocks
    /// on file I/O and on `out`. Returns the summary as written.
    pub fn write_to<W: Write>(mut self, out: W) -> std::io::Result<CollectSummary> {
        let mtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut tar = tar::Builder::new(out);
        let append = |tar: &mut tar::Builder<W>, path: &str, data: &[u8]| {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, data)
        };
        append(&mut tar, TESTBED_FILE, self.summary.file.as_bytes())?;
        for (instance, log) in self.summary.instances.iter_mut().zip(&self.consoles) {
            let bytes = match log {
                Some(source) => source
                    .read_span(0, console::MAX_CONSOLE_READ)
                    .map(|(bytes, _)| bytes)
                    .map_err(std::io::Error::other)?,
                None => Vec::new(),
            };
            instance.results = parse_results(&bytes);
            append(&mut tar, &instance.console, &bytes)?;
        }
        let json = serde_json::to_vec_pretty(&self.summary).map_err(std::io::Error::other)?;
        append(&mut tar, SUMMARY_JSON, &json)?;
        append(
            &mut tar,
            SUMMARY_CSV,
            summary_csv(&self.summary.instances).as_bytes(),
        )?;
        tar.into_inner()?.flush()?;
        Ok(self.summary)
    }

    /// The bed's name.
    pub fn testbed(&self) -> &str {
        &self.summary.testbed
    }

    /// How many instances the archive holds a console of.
    pub fn instances(&self) -> usize {
        self.summary.instances.len()
    }
}
