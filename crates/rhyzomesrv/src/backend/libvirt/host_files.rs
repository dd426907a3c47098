//! [`HostFiles`] on real libvirt: the kernel and console pools are `dir` pools on the host,
//! made (defined, built, started, autostarted) only when missing, and their volumes move
//! through `virStream` with the helpers of [`super::storage`], so the same calls serve a local
//! libvirt and one reached over `qemu+tcp://` or `qemu+tls://`.
//!
//! Lookups, creates and deletes go through `idempotent` (retried once after a reconnect);
//! streams are not retried, as in [`super::storage`]. libvirt knows a pool's files as volumes
//! only after a refresh, and a refresh scans the whole directory: so volumes are created
//! through libvirt (which records them at once), and a lookup that misses refreshes once and
//! looks again, for a file libvirt has not seen (made before a libvirtd restart, or by
//! another daemon through another libvirtd sharing the directory). Several daemons may use
//! one host at once; races on a pool's or a volume's creation end with both using the one
//! that won.

use super::storage::{download, is_code, pool_by_name, upload, vol_by_name};
use super::{classify, LibvirtBackend};
use crate::backend::host_files::{
    self, ConsoleChunk, HostFiles, PutKernel, CONSOLE_POOL, CONSOLE_POOL_PATH, KERNEL_POOL,
    KERNEL_POOL_PATH,
};
use crate::backend::storage::VolumeFormat;
use crate::backend::storage_xml;
use crate::backend::BackendError;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

/// Pool directories are traversable by everyone but listable by their owner only: QEMU runs
/// as an unprivileged user on a packaged libvirt (`libvirt-qemu` on Debian) and must reach the
/// kernel file, whose owner libvirt's DAC driver sets at start.
const POOL_MODE: &str = "0711";
/// Kernel images are loaded by QEMU; they are not secrets of the host.
const KERNEL_MODE: &str = "0644";
/// Console logs may hold what a tenant's guest prints: owner-only (virtlogd, running as root,
/// appends to them; libvirtd reads them).
const CONSOLE_MODE: &str = "0600";

/// The pool `name`, made as a `dir` pool at `path` when missing, and started when inactive.
/// An existing pool is used as it is, whoever made it.
fn ensure_pool(conn: &Connect, name: &str, path: &str) -> Result<StoragePool, VirtError> {
    if let Some(pool) = running_pool(conn, name)? {
        return Ok(pool);
    }
    let xml = storage_xml::dir_pool_with_mode(name, path, POOL_MODE)
        .expect("writing XML to memory cannot fail");
    let pool = match conn.define_storage_pool_xml(&xml, 0) {
        Ok(pool) => {
            // An existing directory (a pool undefined by hand) is fine.
            pool.build(0)?;
            pool.set_autostart(true)?;
            tracing::info!(pool = %name, path, "defined a storage pool for host files");
            pool
        }
        // Another daemon defined it meanwhile: use theirs.
        Err(e) => pool_by_name(conn, name)?.ok_or(e)?,
    };
    start(&pool)?;
    Ok(pool)
}

/// The pool `name` if it exists, started when inactive (a pool that exists but does not run
/// after a host reboot without autostart).
fn running_pool(conn: &Connect, name: &str) -> Result<Option<StoragePool>, VirtError> {
    let Some(pool) = pool_by_name(conn, name)? else {
        return Ok(None);
    };
    start(&pool)?;
    Ok(Some(pool))
}

/// Starts `pool` unless it runs (or someone else started it meanwhile).
fn start(pool: &StoragePool) -> Result<(), VirtError> {
    if pool.is_active()? {
        return Ok(());
    }
    match pool.create(0) {
        Ok(()) => Ok(()),
        Err(_) if pool.is_active()? => Ok(()),
        Err(e) => Err(e),
    }
}

/// Volume `name` of `pool`; when libvirt does not know it, after one refresh of the pool.
fn find_volume(pool: &StoragePool, name: &str) -> Result<Option<StorageVol>, VirtError> {
    if let Some(vol) = vol_by_name(pool, name)? {
        return Ok(Some(vol));
    }
    if let Err(e) = pool.refresh(0) {
        // A pool refuses a refresh while an upload into it runs ("asynchronous jobs
        // running"): the volume then stays unknown for this call, which is what it was.
        tracing::debug!(error = %e.message(), "storage pool refresh refused");
        return Ok(None);
    }
    vol_by_name(pool, name)
}

/// Creates the empty raw volume `name` with permissions `mode`; when it exists already (made
/// meanwhile by another daemon, or a file libvirt had not seen), that one.
fn create_empty(pool: &StoragePool, name: &str, mode: &str) -> Result<StorageVol, VirtError> {
    let xml = storage_xml::volume_with_mode(name, 0, VolumeFormat::Raw, None, mode)
        .expect("writing XML to memory cannot fail");
    match StorageVol::create_xml(pool, &xml, 0) {
        Ok(vol) => Ok(vol),
        Err(e) => find_volume(pool, name)?.ok_or(e),
    }
}

/// Deletes volume `name` of pool `pool_name`; false when the pool or the volume is absent.
fn delete(conn: &Connect, pool_name: &str, name: &str) -> Result<bool, VirtError> {
    let Some(pool) = pool_by_name(conn, pool_name)? else {
        return Ok(false);
    };
    let Some(vol) = find_volume(&pool, name)? else {
        return Ok(false);
    };
    match vol.delete(0) {
        Ok(()) => Ok(true),
        Err(e) if is_code(&e, ErrorNumber::NoStorageVolume) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A lock per kernel volume of a host (URI and name), held by `put_kernel` from its check of
/// the volume to the end of its upload: two instances booting one new kernel at once would
/// otherwise both find it missing or short, and one would delete the volume the other is
/// writing. Within this process only: daemons sharing a host name kernels by their content,
/// so that two uploads of one name carry the same bytes.
fn kernel_lock(uri: &str, name: &str) -> Arc<Mutex<()>> {
    type Locks = Mutex<HashMap<(String, String), Weak<Mutex<()>>>>;
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    // Entries of finished calls go, so the map holds only the puts in progress.
    locks.retain(|_, lock| lock.strong_count() > 0);
    let key = (uri.to_string(), name.to_string());
    if let Some(lock) = locks.get(&key).and_then(Weak::upgrade) {
        return lock;
    }
    let lock = Arc::new(Mutex::new(()));
    locks.insert(key, Arc::downgrade(&lock));
    lock
}

/// The size of a volume's file now: libvirt re-reads it (`virStorageVolGetInfo` refreshes a
/// `dir` pool's volume), and a raw file's capacity is its length.
fn size(vol: &StorageVol) -> Result<u64, VirtError> {
    Ok(vol.info()?.capacity)
}

impl HostFiles for LibvirtBackend {
    fn put_kernel(&self, name: &str, source: &Path) -> Result<PutKernel, BackendError> {
        let local = |e: std::io::Error| {
            BackendError::Other(format!("kernel file {}: {e}", source.display()))
        };
        let mut file = std::fs::File::open(source).map_err(local)?;
        let want = file.metadata().map_err(local)?.len();
        let lock = kernel_lock(&self.uri, name);
        let _serialised = lock.lock().unwrap_or_else(|p| p.into_inner());
        // Either the volume is there with the file's size (done), or an empty one is made
        // (replacing one of another size: an upload that broke off).
        let (conn, vol, present) = self.idempotent(|conn| {
            let pool = ensure_pool(conn, KERNEL_POOL, KERNEL_POOL_PATH)?;
            if let Some(vol) = find_volume(&pool, name)? {
                if size(&vol)? == want {
                    return Ok((conn.clone(), vol, true));
                }
                tracing::warn!(volume = %name, "kernel volume of the wrong size; replacing it");
                match vol.delete(0) {
                    Ok(()) => {}
                    Err(e) if is_code(&e, ErrorNumber::NoStorageVolume) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok((conn.clone(), create_empty(&pool, name, KERNEL_MODE)?, false))
        })?;
        let path = vol.path().map_err(classify)?;
        if present {
            return Ok(PutKernel {
                path,
                uploaded: false,
            });
        }
        let started = std::time::Instant::now();
        let sent = match upload(&conn, &vol, 0, &mut file) {
            Ok(sent) => sent,
            Err(e) => {
                // A short volume would only be replaced by the next put; remove it now.
                if let Err(d) = vol.delete(0) {
                    tracing::warn!(volume = %name, error = %d.message(),
                        "cannot remove a kernel volume whose upload failed");
                }
                return Err(e);
            }
        };
        // The file may have changed under the upload; a short volume would pass for a whole
        // one of another kernel's size only by chance, but is wrong either way.
        let stored = size(&vol).map_err(classify)?;
        if sent != want || stored != want {
            return Err(BackendError::Other(format!(
                "kernel volume {name:?}: sent {sent} bytes of {want}, the host holds {stored}"
            )));
        }
        tracing::info!(volume = %name, bytes = sent, ms = started.elapsed().as_millis() as u64,
            uri = %self.uri, "uploaded a kernel to the host");
        Ok(PutKernel {
            path,
            uploaded: true,
        })
    }

    fn kernel_volumes(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        self.idempotent(|conn| {
            let Some(pool) = running_pool(conn, KERNEL_POOL)? else {
                return Ok(Vec::new());
            };
            // Files libvirt has not seen count too (see the module's documentation); a
            // refused refresh (an upload runs) leaves the list libvirt has.
            if let Err(e) = pool.refresh(0) {
                tracing::debug!(error = %e.message(), "storage pool refresh refused");
            }
            let mut names: Vec<String> = pool
                .list_volumes()?
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .collect();
            names.sort();
            Ok(names)
        })
    }

    fn remove_kernel(&self, name: &str) -> Result<bool, BackendError> {
        self.idempotent(|conn| delete(conn, KERNEL_POOL, name))
    }

    fn console_volume(&self, name: &str) -> Result<String, BackendError> {
        self.idempotent(|conn| {
            let pool = ensure_pool(conn, CONSOLE_POOL, CONSOLE_POOL_PATH)?;
            // Made through libvirt rather than left to virtlogd: libvirt knows it at once,
            // without a refresh, and it exists (empty) before the guest prints.
            let vol = match find_volume(&pool, name)? {
                Some(vol) => vol,
                None => create_empty(&pool, name, CONSOLE_MODE)?,
            };
            vol.path()
        })
    }

    fn read_console(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<ConsoleChunk>, BackendError> {
        let found = self.idempotent(|conn| {
            let Some(pool) = running_pool(conn, CONSOLE_POOL)? else {
                return Ok(None);
            };
            let Some(vol) = find_volume(&pool, name)? else {
                return Ok(None);
            };
            let now = size(&vol)?;
            Ok(Some((conn.clone(), vol, now)))
        })?;
        let Some((conn, vol, size)) = found else {
            return Ok(None);
        };
        // Nothing to stream: and libvirt reads a length of 0 as "to the end".
        let want = len.min(size.saturating_sub(offset));
        if want == 0 {
            return Ok(Some(ConsoleChunk {
                size,
                bytes: Vec::new(),
            }));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        download(&conn, &vol, offset, want, &mut bytes)?;
        // The guest may have printed more since `size` was read; only what was asked for.
        bytes.truncate(usize::try_from(want).unwrap_or(usize::MAX));
        Ok(Some(ConsoleChunk { size, bytes }))
    }

    fn remove_console(&self, name: &str) -> Result<bool, BackendError> {
        self.idempotent(|conn| {
            let removed = delete(conn, CONSOLE_POOL, name)?;
            let Some(pool) = pool_by_name(conn, CONSOLE_POOL)? else {
                return Ok(removed);
            };
            // virtlogd's rotated copies (`NAME.0`, `NAME.1`, ...): files libvirt knows only
            // after a refresh, which would otherwise stay behind for ever.
            if let Err(e) = pool.refresh(0) {
                tracing::debug!(error = %e.message(), "storage pool refresh refused");
            }
            for other in pool.list_volumes()? {
                if host_files::is_rotated_copy(&other, name) {
                    delete(conn, CONSOLE_POOL, &other)?;
                }
            }
            Ok(removed)
        })
    }
}
