//! [`Storage`] on real libvirt: `virStoragePool` and `virStorageVol`, with uploads and
//! downloads through `virStream` (libvirt moves the bytes; the daemon never opens the
//! volume's file).
//!
//! Lookups, creates and deletes are idempotent enough to retry once after a reconnect (a
//! create that reached libvirt before the connection broke fails on retry with "volume
//! exists", which the caller reports). Streams are not retried: a broken transfer is an error
//! and the caller throws the half-written volume away.

use super::{classify, LibvirtBackend};
use crate::backend::storage::{NewVolume, PoolSpace, PoolSpec, Storage, VolumeInfo};
use crate::backend::storage_xml;
use crate::backend::BackendError;
use std::io::{Read, Write};
use virt::connect::Connect;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

/// Bytes per stream message: libvirt's own limit for one message is 256 KiB.
const CHUNK: usize = 256 << 10;

pub(super) fn is_code(e: &VirtError, code: ErrorNumber) -> bool {
    matches!(e.code(), virt::enumutil::Enum::Known(c) if c == code)
}

pub(super) fn pool_by_name(conn: &Connect, name: &str) -> Result<Option<StoragePool>, VirtError> {
    match conn.lookup_storage_pool_by_name(name) {
        Ok(p) => Ok(Some(p)),
        Err(e) if is_code(&e, ErrorNumber::NoStoragePool) => Ok(None),
        Err(e) => Err(e),
    }
}

fn existing_pool(conn: &Connect, name: &str) -> Result<StoragePool, VirtError> {
    conn.lookup_storage_pool_by_name(name)
}

pub(super) fn vol_by_name(pool: &StoragePool, name: &str) -> Result<Option<StorageVol>, VirtError> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_code(&e, ErrorNumber::NoStorageVolume) => Ok(None),
        Err(e) => Err(e),
    }
}

fn space(pool: &StoragePool) -> Result<PoolSpace, VirtError> {
    let info = pool.info()?;
    Ok(PoolSpace {
        capacity: info.capacity,
        allocation: info.allocation,
        available: info.available,
    })
}

fn vol_info(vol: &StorageVol) -> Result<VolumeInfo, VirtError> {
    let info = vol.info()?;
    Ok(VolumeInfo {
        capacity: info.capacity,
        allocation: info.allocation,
        path: vol.path()?,
    })
}

/// Reads until `buf` is full or the source ends; the byte count.
fn fill(source: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match source.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes everything `source` yields into `vol` from `offset` through a `virStream`, as it
/// comes, and returns the byte count. Not retried: a broken stream is the caller's error.
pub(super) fn upload(
    conn: &Connect,
    vol: &StorageVol,
    offset: u64,
    source: &mut dyn Read,
) -> Result<u64, BackendError> {
    let stream = Stream::new(conn, 0).map_err(classify)?;
    vol.upload(&stream, offset, 0, 0).map_err(classify)?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        // Whole messages: an HTTP body arrives in chunks of a few KiB, and one libvirt
        // message per chunk would cost a round of RPC work each.
        let n = match fill(source, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = stream.abort();
                return Err(BackendError::Other(format!("upload source: {e}")));
            }
        };
        let mut sent = 0;
        while sent < n {
            match stream.send(&buf[sent..n]) {
                Ok(k) if k > 0 => sent += k as usize,
                Ok(_) => continue,
                Err(e) => {
                    let _ = stream.abort();
                    return Err(classify(e));
                }
            }
        }
        total += n as u64;
    }
    stream.finish().map_err(classify)?;
    Ok(total)
}

/// Reads `length` bytes of `vol` from `offset` (0: to its end; fewer when it ends first)
/// into `sink` through a `virStream`, as they come, and returns the byte count.
pub(super) fn download(
    conn: &Connect,
    vol: &StorageVol,
    offset: u64,
    length: u64,
    sink: &mut dyn Write,
) -> Result<u64, BackendError> {
    let stream = Stream::new(conn, 0).map_err(classify)?;
    vol.download(&stream, offset, length, 0).map_err(classify)?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match stream.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) if n > 0 => n as usize,
            Ok(_) => continue,
            Err(e) => {
                let _ = stream.abort();
                return Err(classify(e));
            }
        };
        if let Err(e) = sink.write_all(&buf[..n]) {
            let _ = stream.abort();
            return Err(BackendError::Other(format!("download sink: {e}")));
        }
        total += n as u64;
    }
    stream.finish().map_err(classify)?;
    Ok(total)
}

fn missing_volume(name: &str) -> BackendError {
    BackendError::Other(format!("storage volume {name:?} does not exist"))
}

impl LibvirtBackend {
    fn volume(&self, pool: &str, name: &str) -> Result<(Connect, StorageVol), BackendError> {
        let conn = self.connection()?;
        let pool = existing_pool(&conn, pool).map_err(classify)?;
        let vol = vol_by_name(&pool, name)
            .map_err(classify)?
            .ok_or_else(|| missing_volume(name))?;
        Ok((conn, vol))
    }
}

impl Storage for LibvirtBackend {
    fn ensure_pool(&self, spec: &PoolSpec) -> Result<PoolSpace, BackendError> {
        self.idempotent(|conn| {
            let pool = match pool_by_name(conn, spec.name())? {
                Some(pool) => pool,
                // Someone else's pool must exist: report libvirt's own "no pool" error.
                None => match spec {
                    PoolSpec::Existing { name } => existing_pool(conn, name)?,
                    PoolSpec::Own { name, path } => {
                        let xml = storage_xml::dir_pool(name, &path.to_string_lossy())
                            .expect("writing XML to memory cannot fail");
                        let pool = conn.define_storage_pool_xml(&xml, 0)?;
                        pool.build(0)?;
                        pool.set_autostart(true)?;
                        tracing::info!(pool = %name, path = %path.display(),
                            "defined the daemon's storage pool");
                        pool
                    }
                },
            };
            if !pool.is_active()? {
                pool.create(0)?;
            }
            pool.refresh(0)?;
            space(&pool)
        })
    }

    fn pool_space(&self, pool: &str) -> Result<PoolSpace, BackendError> {
        self.idempotent(|conn| {
            let pool = existing_pool(conn, pool)?;
            pool.refresh(0)?;
            space(&pool)
        })
    }

    fn create_volume(&self, pool: &str, vol: &NewVolume) -> Result<VolumeInfo, BackendError> {
        self.idempotent(|conn| {
            let pool = existing_pool(conn, pool)?;
            let backing_path = match &vol.backing {
                Some((base, _)) => Some(pool.lookup_storage_vol_by_name(base)?.path()?),
                None => None,
            };
            let backing = backing_path
                .as_deref()
                .zip(vol.backing.as_ref().map(|(_, f)| *f));
            let xml = storage_xml::volume(&vol.name, vol.capacity, vol.format, backing)
                .expect("writing XML to memory cannot fail");
            let created = StorageVol::create_xml(&pool, &xml, 0)?;
            vol_info(&created)
        })
    }

    fn volume_info(&self, pool: &str, name: &str) -> Result<Option<VolumeInfo>, BackendError> {
        self.idempotent(|conn| {
            let pool = existing_pool(conn, pool)?;
            vol_by_name(&pool, name)?.map(|v| vol_info(&v)).transpose()
        })
    }

    fn delete_volume(&self, pool: &str, name: &str) -> Result<bool, BackendError> {
        self.idempotent(|conn| {
            let pool = existing_pool(conn, pool)?;
            match vol_by_name(&pool, name)? {
                Some(vol) => match vol.delete(0) {
                    Ok(()) => Ok(true),
                    Err(e) if is_code(&e, ErrorNumber::NoStorageVolume) => Ok(false),
                    Err(e) => Err(e),
                },
                None => Ok(false),
            }
        })
    }

    fn resize_volume(&self, pool: &str, name: &str, capacity: u64) -> Result<(), BackendError> {
        self.idempotent(|conn| {
            let pool = existing_pool(conn, pool)?;
            let vol = pool.lookup_storage_vol_by_name(name)?;
            vol.resize(capacity, 0)
        })
    }

    fn upload_volume(
        &self,
        pool: &str,
        name: &str,
        source: &mut dyn Read,
    ) -> Result<u64, BackendError> {
        let (conn, vol) = self.volume(pool, name)?;
        upload(&conn, &vol, 0, source)
    }

    fn download_volume(
        &self,
        pool: &str,
        name: &str,
        sink: &mut dyn Write,
    ) -> Result<u64, BackendError> {
        let (conn, vol) = self.volume(pool, name)?;
        download(&conn, &vol, 0, 0, sink)
    }
}
