//! The storage half of the hypervisor boundary: libvirt storage pools and volumes, which
//! hold the block devices of instances ([`Storage`], a supertrait of
//! [`super::Hypervisor`]).
//!
//! Volumes are named by the daemon (never by users: see `service::volumes`), live in one
//! pool, and are created, cloned (a qcow2 child whose backing file is the base), resized,
//! uploaded to and downloaded from through libvirt, so that the same calls serve a `dir` pool
//! here and an LVM or ZFS pool or a remote host elsewhere. Like every backend method these
//! block; uploads and downloads move their bytes through `Read`/`Write` adapters chunk by
//! chunk, never whole.

use super::BackendError;
use std::io::{Read, Write};
use std::path::PathBuf;

/// The pool the daemon keeps its volumes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolSpec {
    /// The daemon's own `dir` pool: defined (persistent, autostarted) at `path` when missing.
    /// Its name carries the daemon identity, which is how the daemon knows it is its own.
    Own { name: String, path: PathBuf },
    /// A pool someone else made (`VolumePool`); it must exist. The daemon touches only the
    /// volumes its store records.
    Existing { name: String },
}

impl PoolSpec {
    pub fn name(&self) -> &str {
        match self {
            PoolSpec::Own { name, .. } | PoolSpec::Existing { name } => name,
        }
    }
}

/// Space in a pool, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpace {
    pub capacity: u64,
    pub allocation: u64,
    pub available: u64,
}

/// On-disk format of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFormat {
    Raw,
    Qcow2,
}

impl VolumeFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeFormat::Raw => "raw",
            VolumeFormat::Qcow2 => "qcow2",
        }
    }
}

/// A volume to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVolume {
    pub name: String,
    pub capacity: u64,
    pub format: VolumeFormat,
    /// For a copy-on-write child: the base volume's name in the same pool, and its format.
    pub backing: Option<(String, VolumeFormat)>,
}

/// What libvirt reports about a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub capacity: u64,
    pub allocation: u64,
    /// The file (or device) the guest's disk is backed by.
    pub path: String,
}

/// Pools and volumes. Every method blocks.
pub trait Storage {
    /// Makes sure the pool exists and is active, and reports its space. `Own` is defined,
    /// built and started when missing; `Existing` is only looked up (and started when
    /// inactive).
    fn ensure_pool(&self, pool: &PoolSpec) -> Result<PoolSpace, BackendError>;
    /// Space in the pool now (refreshed first, so files changed meanwhile count).
    fn pool_space(&self, pool: &str) -> Result<PoolSpace, BackendError>;
    fn create_volume(&self, pool: &str, vol: &NewVolume) -> Result<VolumeInfo, BackendError>;
    /// The volume, if it exists.
    fn volume_info(&self, pool: &str, name: &str) -> Result<Option<VolumeInfo>, BackendError>;
    /// Deletes the volume; `Ok(false)` when there was none.
    fn delete_volume(&self, pool: &str, name: &str) -> Result<bool, BackendError>;
    /// Grows the volume to `capacity` bytes.
    fn resize_volume(&self, pool: &str, name: &str, capacity: u64) -> Result<(), BackendError>;
    /// Writes everything `source` yields into the volume from offset 0, as it comes, and
    /// returns the byte count. An error from `source` aborts the transfer and is returned as
    /// [`BackendError::Other`]; the volume's content is then undefined (callers upload into a
    /// fresh volume, see `service::volumes`).
    fn upload_volume(
        &self,
        pool: &str,
        name: &str,
        source: &mut dyn Read,
    ) -> Result<u64, BackendError>;
    /// Reads the whole volume into `sink`, as it comes, and returns the byte count.
    fn download_volume(
        &self,
        pool: &str,
        name: &str,
        sink: &mut dyn Write,
    ) -> Result<u64, BackendError>;
}
