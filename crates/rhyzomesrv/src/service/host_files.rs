//! Where a host finds an instance's kernel and writes its console, and reading that console
//! back.
//!
//! A local host (its URI names no server: the primary in a one-host set-up) reads the kernel
//! from the blob store and writes the console into `StateDir/consoles`, as before hosts
//! existed. A remote host shares no filesystem with the daemon: each kernel blob is uploaded
//! once into its `rhyzome-kernels` pool (a volume named after this daemon and the digest,
//! `rz-<daemon>-sha256-<hex>`, skipped when it is there), and the console goes to a volume of
//! its `rhyzome-consoles` pool (`rz-<daemon>-<instance id>.log`), read back with offset and
//! length through libvirt. [`ConsoleSource`] hides the difference from console reads and exit
//! codes. A kernel volume no instance on its host boots any more is removed
//! ([`Service::collect_host_kernels`]).
//!
//! Concurrency: every call here blocks on libvirt or the filesystem; async callers run them
//! on the blocking pool.

use super::{blocking, Service, ServiceError};
use crate::backend::Hypervisor;
use crate::console;
use crate::store::InstanceRecord;
use std::path::PathBuf;
use std::sync::Arc;

/// An instance's console log: a local file, or a volume on a remote host.
#[derive(Clone)]
pub enum ConsoleSource {
    Local(PathBuf),
    Remote {
        backend: Arc<dyn Hypervisor>,
        volume: String,
    },
}

impl ConsoleSource {
    /// Like [`console::read_span`]: the bytes from `start` on, at most the last `limit`, and
    /// the offset of the first; a log shorter than `start` (rotated) is read from 0.
    pub fn read_span(&self, start: u64, limit: u64) -> Result<(Vec<u8>, u64), String> {
        match self {
            ConsoleSource::Local(path) => {
                console::read_span(path, start, limit).map_err(|e| console::read_error(path, &e))
            }
            ConsoleSource::Remote { backend, volume } => {
                let len = self.size()?;
                let from = console::span_start(len, start, limit);
                if from >= len {
                    return Ok((Vec::new(), from));
                }
                match backend.read_console(volume, from, len - from) {
                    Ok(Some(chunk)) => Ok((chunk.bytes, from)),
                    Ok(None) => Ok((Vec::new(), 0)),
                    Err(e) => Err(format!("cannot read console volume {volume}: {e}")),
                }
            }
        }
    }

    /// The log's size now (0 when there is none yet).
    pub fn size(&self) -> Result<u64, String> {
        match self {
            ConsoleSource::Local(path) => Ok(console::log_len(path)),
            ConsoleSource::Remote { backend, volume } => match backend.read_console(volume, 0, 0) {
                Ok(chunk) => Ok(chunk.map_or(0, |c| c.size)),
                Err(e) => Err(format!("cannot read console volume {volume}: {e}")),
            },
        }
    }

    /// Where the current run's output starts, given the log's size and inode when it began.
    pub fn run_start(&self, offset: u64, inode: Option<u64>) -> u64 {
        match self {
            ConsoleSource::Local(path) => console::run_start(path, offset, inode),
            // No inode through libvirt: a log shorter than the offset was rotated, and
            // `read_span` then reads it from its beginning.
            ConsoleSource::Remote { .. } => offset,
        }
    }
}

impl Service {
    /// Whether `host` (a record's `host`) is another machine.
    pub(crate) fn is_remote(&self, host: &str) -> bool {
        self.hosts.of(host).is_some_and(|h| h.config.is_remote())
    }

    fn kernel_volume_prefix(&self) -> String {
        format!("rz-{}-sha256-", self.daemon_id)
    }

    fn console_volume(&self, instance_id: &str) -> String {
        format!("rz-{}-{instance_id}.log", self.daemon_id)
    }

    /// The console of `r`, wherever its host keeps it. Fails only when its remote host is
    /// unreachable.
    pub(crate) fn console_source(&self, r: &InstanceRecord) -> Result<ConsoleSource, ServiceError> {
        if !self.is_remote(&r.host) {
            return Ok(ConsoleSource::Local(console::log_path(
                &self.config.state_dir,
                &r.id,
            )));
        }
        Ok(ConsoleSource::Remote {
            backend: self.backend_on(&r.host)?,
            volume: self.console_volume(&r.id),
        })
    }

    /// The kernel path and console path on `r`'s host, made ready there (the kernel uploaded
    /// unless its volume is there, the console volume created), and the console's size and
    /// identity now (where the new run starts).
    pub(crate) async fn host_paths(
        &self,
        r: &InstanceRecord,
    ) -> Result<(PathBuf, PathBuf, console::LogPosition), ServiceError> {
        if !self.is_remote(&r.host) {
            let log = console::log_path(&self.config.state_dir, &r.id);
            console::prepare_log(&log)
                .map_err(|e| ServiceError::Internal(format!("{}: {e}", log.display())))?;
            let position = console::log_position(&log);
            return Ok((self.blobs.path(&r.kernel_sha256), log, position));
        }
        let backend = self.backend_on(&r.host)?;
        let blob = self.blobs.path(&r.kernel_sha256);
        let kernel_volume = format!("{}{}", self.kernel_volume_prefix(), r.kernel_sha256);
        let console_volume = self.console_volume(&r.id);
        let host = r.host.clone();
        let (kernel, log, len) = blocking(move || {
            let started = std::time::Instant::now();
            let put = backend.put_kernel(&kernel_volume, &blob)?;
            if put.uploaded {
                tracing::info!(%host, volume = %kernel_volume, elapsed_ms = started.elapsed().as_millis() as u64, "kernel uploaded to the host");
            }
            let log = backend.console_volume(&console_volume)?;
            let len = backend
                .read_console(&console_volume, 0, 0)?
                .map_or(0, |c| c.size);
            Ok::<_, crate::backend::BackendError>((put.path, log, len))
        })
        .await?
        .map_err(|e| {
            self.host_failed(&r.host, &e);
            ServiceError::Backend(e)
        })?;
        Ok((
            PathBuf::from(kernel),
            PathBuf::from(log),
            console::LogPosition { len, inode: None },
        ))
    }

    /// Removes `r`'s console from `host` when that is a remote host (a local console goes
    /// with the files of the state directory): its own host's when it is deleted, or the one
    /// it failed over from once that answers again. A failure is logged: the volume is this
    /// daemon's and named after the instance, so nothing else can take its name.
    pub(crate) async fn remove_console_on(&self, host: &str, r: &InstanceRecord) {
        if !self.is_remote(host) {
            return;
        }
        let Ok(backend) = self.backend_on(host) else {
            return;
        };
        let volume = self.console_volume(&r.id);
        if let Ok(Err(e)) = blocking(move || backend.remove_console(&volume)).await {
            tracing::warn!(instance = %r.name, %host, error = %e, "cannot remove a console volume on its host");
        }
    }

    /// Removes this daemon's kernel volumes that no instance on their host boots any more,
    /// on every reachable remote host.
    pub(crate) async fn collect_host_kernels(&self) {
        let Ok(records) = self.store.all() else {
            return;
        };
        for host in self.hosts.all().iter().filter(|h| h.config.is_remote()) {
            let Ok(backend) = host.backend() else {
                continue;
            };
            let wanted: std::collections::HashSet<String> = records
                .iter()
                .filter(|r| self.host_name(&r.host) == host.name())
                .map(|r| format!("{}{}", self.kernel_volume_prefix(), r.kernel_sha256))
                .collect();
            let prefix = self.kernel_volume_prefix();
            let name = host.name().to_string();
            let removed = blocking(move || {
                let mut removed = 0;
                for volume in backend.kernel_volumes(&prefix)? {
                    if !wanted.contains(&volume) && backend.remove_kernel(&volume)? {
                        removed += 1;
                    }
                }
                Ok::<_, crate::backend::BackendError>(removed)
            })
            .await;
            match removed {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    tracing::info!(host = %name, removed = n, "removed unused kernel volumes")
                }
                Ok(Err(e)) => {
                    tracing::warn!(host = %name, error = %e, "cannot collect kernel volumes")
                }
                Err(e) => tracing::warn!(host = %name, error = %e, "cannot collect kernel volumes"),
            }
        }
    }
}
