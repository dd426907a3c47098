//! [`Storage`] for the fake backend: pools and volumes in memory, under the fake's one mutex.
//! A volume's content is the bytes last uploaded, followed by zeros up to its capacity (a
//! sparse raw file); a clone starts with its base's content. Fixed pool sizes, so tests can
//! ask for more than there is.

use super::fake::FakeBackend;
use super::storage::{NewVolume, PoolSpace, PoolSpec, Storage, VolumeFormat, VolumeInfo};
use super::BackendError;
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// Capacity of every fake pool: 1 GiB.
pub const FAKE_POOL_BYTES: u64 = 1 << 30;

#[derive(Default)]
pub struct FakeStorage {
    /// Pools that exist, by name; the value says whether the daemon defined it.
    pools: BTreeMap<String, bool>,
    volumes: BTreeMap<(String, String), FakeVolume>,
    /// Makes the next upload fail after this many bytes.
    fail_upload_after: Option<u64>,
    /// Makes the next download fail before its first byte.
    fail_next_download: bool,
}

struct FakeVolume {
    capacity: u64,
    format: VolumeFormat,
    content: Vec<u8>,
}

fn missing(name: &str) -> BackendError {
    BackendError::Other(format!("storage volume {name:?} does not exist"))
}

fn no_pool(name: &str) -> BackendError {
    BackendError::Other(format!(
        "storage pool not found: no storage pool with matching name '{name}'"
    ))
}

impl FakeBackend {
    fn storage(&self) -> std::sync::MutexGuard<'_, FakeStorage> {
        self.storage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pool that someone else made (for `VolumePool`).
    pub fn add_pool(&self, name: &str) {
        self.storage().pools.insert(name.to_string(), false);
    }

    /// Names of the volumes in `pool`.
    pub fn volume_names(&self, pool: &str) -> Vec<String> {
        self.storage()
            .volumes
            .keys()
            .filter(|(p, _)| p == pool)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Names of the pools that exist.
    pub fn pool_names(&self) -> Vec<String> {
        self.storage().pools.keys().cloned().collect()
    }

    /// Makes the next download fail before its first byte, as a driver without storage
    /// streams does (libvirt's test driver).
    pub fn fail_next_download(&self) {
        self.storage().fail_next_download = true;
    }

    /// Makes the next upload fail after `bytes` bytes, as a broken libvirt stream would.
    pub fn fail_next_upload_after(&self, bytes: u64) {
        self.storage().fail_upload_after = Some(bytes);
    }
}

impl FakeStorage {
    fn space(&self, pool: &str) -> PoolSpace {
        let allocation: u64 = self
            .volumes
            .iter()
            .filter(|((p, _), _)| p == pool)
            .map(|(_, v)| v.content.len() as u64)
            .sum();
        PoolSpace {
            capacity: FAKE_POOL_BYTES,
            allocation,
            available: FAKE_POOL_BYTES.saturating_sub(allocation),
        }
    }

    fn check_pool(&self, pool: &str) -> Result<(), BackendError> {
        if self.pools.contains_key(pool) {
            Ok(())
        } else {
            Err(no_pool(pool))
        }
    }

    fn volume_mut(&mut self, pool: &str, name: &str) -> Result<&mut FakeVolume, BackendError> {
        self.check_pool(pool)?;
        self.volumes
            .get_mut(&(pool.to_string(), name.to_string()))
            .ok_or_else(|| missing(name))
    }
}

fn info(pool: &str, name: &str, v: &FakeVolume) -> VolumeInfo {
    VolumeInfo {
        capacity: v.capacity,
        allocation: v.content.len() as u64,
        path: format!("/fake/{pool}/{name}"),
    }
}

impl Storage for FakeBackend {
    fn ensure_pool(&self, pool: &PoolSpec) -> Result<PoolSpace, BackendError> {
        let mut s = self.storage();
        match pool {
            PoolSpec::Own { name, .. } => {
                s.pools.entry(name.clone()).or_insert(true);
            }
            PoolSpec::Existing { name } => s.check_pool(name)?,
        }
        Ok(s.space(pool.name()))
    }

    fn pool_space(&self, pool: &str) -> Result<PoolSpace, BackendError> {
        let s = self.storage();
        s.check_pool(pool)?;
        Ok(s.space(pool))
    }

    fn create_volume(&self, pool: &str, vol: &NewVolume) -> Result<VolumeInfo, BackendError> {
        let mut s = self.storage();
        s.check_pool(pool)?;
        let key = (pool.to_string(), vol.name.clone());
        if s.volumes.contains_key(&key) {
            return Err(BackendError::Other(format!(
                "storage volume '{}' exists already",
                vol.name
            )));
        }
        let content = match &vol.backing {
            Some((base, _)) => s
                .volumes
                .get(&(pool.to_string(), base.clone()))
                .ok_or_else(|| missing(base))?
                .content
                .clone(),
            None => Vec::new(),
        };
        let v = FakeVolume {
            capacity: vol.capacity,
            format: vol.format,
            content,
        };
        let i = info(pool, &vol.name, &v);
        s.volumes.insert(key, v);
        Ok(i)
    }

    fn volume_info(&self, pool: &str, name: &str) -> Result<Option<VolumeInfo>, BackendError> {
        let s = self.storage();
        s.check_pool(pool)?;
        Ok(s.volumes
            .get(&(pool.to_string(), name.to_string()))
            .map(|v| info(pool, name, v)))
    }

    fn delete_volume(&self, pool: &str, name: &str) -> Result<bool, BackendError> {
        let mut s = self.storage();
        s.check_pool(pool)?;
        Ok(s.volumes
            .remove(&(pool.to_string(), name.to_string()))
            .is_some())
    }

    fn resize_volume(&self, pool: &str, name: &str, capacity: u64) -> Result<(), BackendError> {
        let mut s = self.storage();
        let v = s.volume_mut(pool, name)?;
        if capacity < v.capacity {
            return Err(BackendError::Other("cannot shrink".into()));
        }
        v.capacity = capacity;
        Ok(())
    }

    fn upload_volume(
        &self,
        pool: &str,
        name: &str,
        source: &mut dyn Read,
    ) -> Result<u64, BackendError> {
        let fail_after = {
            let mut s = self.storage();
            s.volume_mut(pool, name)?;
            s.fail_upload_after.take()
        };
        // Read outside the lock: the source may wait for a client.
        let mut content = Vec::new();
        let mut buf = [0u8; 64 << 10];
        loop {
            let n = source
                .read(&mut buf)
                .map_err(|e| BackendError::Other(format!("upload source: {e}")))?;
            if n == 0 {
                break;
            }
            content.extend_from_slice(&buf[..n]);
            if fail_after.is_some_and(|limit| content.len() as u64 > limit) {
                return Err(BackendError::Other("stream broke (fake)".into()));
            }
        }
        let total = content.len() as u64;
        let mut s = self.storage();
        let v = s.volume_mut(pool, name)?;
        if v.format == VolumeFormat::Raw {
            v.capacity = v.capacity.max(total);
        }
        v.content = content;
        Ok(total)
    }

    fn download_volume(
        &self,
        pool: &str,
        name: &str,
        sink: &mut dyn Write,
    ) -> Result<u64, BackendError> {
        let (content, capacity, format) = {
            let mut s = self.storage();
            if std::mem::take(&mut s.fail_next_download) {
                return Err(BackendError::Other(
                    "this function is not supported by the connection driver: virStorageVolDownload"
                        .into(),
                ));
            }
            let v = s.volume_mut(pool, name)?;
            (v.content.clone(), v.capacity, v.format)
        };
        let io = |e: std::io::Error| BackendError::Other(format!("download sink: {e}"));
        sink.write_all(&content).map_err(io)?;
        let mut total = content.len() as u64;
        if format == VolumeFormat::Raw {
            let zeros = vec![0u8; 64 << 10];
            while total < capacity {
                let n = (capacity - total).min(zeros.len() as u64) as usize;
                sink.write_all(&zeros[..n]).map_err(io)?;
                total += n as u64;
            }
        }
        Ok(total)
    }
}
