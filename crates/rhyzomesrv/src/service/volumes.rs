//! Volumes: block storage in a libvirt storage pool, outliving the instances that attach it.
//!
//! **Ownership.** The daemon keeps its volumes in one pool: by default its own `dir` pool at
//! `StateDir/volumes`, named `rhyzome-<daemon id>` (libvirt pools carry no metadata, so the
//! name is the mark: no other daemon's identity can produce it), or the existing pool that
//! `VolumePool` names. In either pool it touches only libvirt volumes its store records
//! (`store::volumes`): a row is written before a libvirt volume is made, and removed only
//! after it is gone, so leftovers of a crash are provably its own and are deleted at start.
//! Users never name libvirt volumes: those are `rhyzome-vol-<uuid>`, so no user string
//! reaches a path.
//!
//! **Uploads** go into a fresh libvirt volume, streamed chunk by chunk through libvirt (never
//! buffered whole), hashed on the way; only when the body is complete, within the limits and
//! matches the expected digest does the volume point at it (one store update), and the old
//! content is deleted. A broken or refused upload deletes the fresh volume: nothing is left.
//! **Downloads** stream the same way in the other direction.
//!
//! **Concurrency.** Changes to one volume serialise on the name lock `volume:<name>` (the
//! instance names of [`super::locks::NameLocks`] cannot contain `:`). libvirt calls and
//! transfers run on the blocking pool.

use super::authz::{authorize, Action};
use super::{blocking, now_rfc3339, Service, ServiceError};
use crate::auth::Caller;
use crate::backend::storage::{NewVolume, PoolSpec, VolumeFormat as BackendFormat};
use crate::backend::Disk;
use crate::backend::{BackendError, Hypervisor};
use crate::store::volumes::{AttachmentRow, VolumeRow};
use crate::store::StoreError;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use rhyzome_api::validate::{validate_name, FieldError};
use rhyzome_api::volumes::validate_size;
use rhyzome_api::{
    InstanceSpec, Volume, VolumeAttachment, VolumeFormat, VolumeSpec, VolumeUploaded, VolumeUse,
};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::sync::Arc;

/// Bytes of an upload's body handed to libvirt's side at a time.
const UPLOAD_BATCH: usize = 256 << 10;

/// How much of an oversized body is read before the refusal is answered.
const DRAIN_BEFORE_REFUSING: u64 = 1 << 20;

/// Prefix of the libvirt volumes the daemon makes.
pub const LIBVIRT_VOLUME_PREFIX: &str = "rhyzome-vol-";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0:?} not found")]
    NotFound(String),
    #[error("a volume named {0:?} exists already")]
    NameTaken(String),
    /// The volume is attached; `users` says to what and how.
    #[error("volume {name:?} is attached to {users}; {action}")]
    InUse {
        name: String,
        users: String,
        action: &'static str,
    },
    #[error("volume {name:?} has clones ({clones}); {action}")]
    HasClones {
        name: String,
        clones: String,
        action: &'static str,
    },
    #[error("the body is larger than {limit} bytes ({what})")]
    TooLarge { limit: u64, what: &'static str },
    #[error("the upload ended early: {0}; the volume is unchanged")]
    Broken(String),
    #[error(
        "the body's SHA-256 is {actual}, not {expected} as {field} says; the volume is unchanged"
    )]
    DigestMismatch {
        field: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Maps the API's format to the backend's.
fn backend_format(f: VolumeFormat) -> BackendFormat {
    match f {
        VolumeFormat::Raw => BackendFormat::Raw,
        VolumeFormat::Qcow2 => BackendFormat::Qcow2,
    }
}

fn parse_format(s: &str) -> Result<VolumeFormat, ServiceError> {
    match s {
        "raw" => Ok(VolumeFormat::Raw),
        "qcow2" => Ok(VolumeFormat::Qcow2),
        other => Err(StoreError::Corrupt {
            what: "volume format",
            value: other.to_string(),
        }
        .into()),
    }
}

fn format_str(f: VolumeFormat) -> &'static str {
    backend_format(f).as_str()
}

fn lock_key(name: &str) -> String {
    format!("volume:{name}")
}

fn new_libvirt_name() -> String {
    format!("{LIBVIRT_VOLUME_PREFIX}{}", uuid::Uuid::new_v4())
}

/// Reads an upload body handed over from the async side, hashing and counting it.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
    pending: Bytes,
    hasher: Sha256,
    bytes: u64,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        let chunk = self.pending.split_to(n);
        buf[..n].copy_from_slice(&chunk);
        self.hasher.update(&chunk);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Hands a download to the async side, chunk by chunk; fails once the client went away.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, BackendError>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Service {
    /// The pool volumes live in, made or checked on first use.
    pub(super) fn pool_spec(&self) -> PoolSpec {
        match &self.config.volume_pool {
            Some(name) => PoolSpec::Existing { name: name.clone() },
            None => PoolSpec::Own {
                name: format!("rhyzome-{}", self.daemon_id),
                path: self.config.state_dir.join("volumes"),
            },
        }
    }

    async fn pool(&self) -> Result<String, ServiceError> {
        let spec = self.pool_spec();
        self.volume_pool
            .get_or_try_init(|| async {
                let backend = self.backend.clone();
                let s = spec.clone();
                blocking(move || backend.ensure_pool(&s))
                    .await?
                    .map_err(ServiceError::Backend)?;
                tracing::info!(pool = %spec.name(), "volume pool ready");
                Ok::<_, ServiceError>(spec.name().to_string())
            })
            .await
            .cloned()
    }

    /// At start-up: makes sure the pool exists and deletes the libvirt volumes that a crash
    /// or a failed operation left pending (provably the daemon's: its store names them).
    pub async fn recover_volumes(&self) -> Result<(), ServiceError> {
        if self.store.volumes()?.is_empty() && self.store.abandoned_volumes()?.is_empty() {
            // Nothing to recover: the pool is made on first use, so that a daemon that never
            // uses volumes never touches libvirt's storage driver.
            return Ok(());
        }
        self.pool().await?;
        self.delete_abandoned().await;
        Ok(())
    }

    /// Deletes pending libvirt volumes no volume row names (best effort; retried next start).
    async fn delete_abandoned(&self) {
        let abandoned = match self.store.abandoned_volumes() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list abandoned volumes");
                return;
            }
        };
        for (pool, name) in abandoned {
            if let Err(e) = self.delete_libvirt_volume(&pool, &name).await {
                tracing::warn!(pool = %pool, volume = %name, error = %e,
                    "cannot delete an abandoned volume; retrying at the next start");
            }
        }
    }

    /// Deletes one of the daemon's libvirt volumes and forgets it.
    async fn delete_libvirt_volume(&self, pool: &str, name: &str) -> Result<(), ServiceError> {
        let backend = self.backend.clone();
        let (p, n) = (pool.to_string(), name.to_string());
        let existed = blocking(move || backend.delete_volume(&p, &n))
            .await?
            .map_err(ServiceError::Backend)?;
        self.store.remove_pending_volume(pool, name)?;
        tracing::info!(pool = %pool, volume = %name, existed, "deleted libvirt volume");
        Ok(())
    }

    fn visible_volume(&self, name: &str, caller: &Caller) -> Result<VolumeRow, ServiceError> {
        if !caller.sees(name) {
            return Err(VolumeError::NotFound(name.to_string()).into());
        }
        self.store
            .volume_by_name(name)?
            .ok_or_else(|| VolumeError::NotFound(name.to_string()).into())
    }

    async fn volume_to_api(&self, row: &VolumeRow) -> Result<Volume, ServiceError> {
        let backend = self.backend.clone();
        let (pool, lv) = (row.pool.clone(), row.libvirt_name.clone());
        let info = blocking(move || backend.volume_info(&pool, &lv))
            .await?
            .map_err(ServiceError::Backend)?;
        let base = match &row.base_id {
            Some(id) => self.store.volume_by_id(id)?.map(|b| b.name),
            None => None,
        };
        let attached = self
            .store
            .users_of_volume(&row.id)?
            .into_iter()
            .map(|u| VolumeUse {
                instance: u.instance,
                device: u.device,
                read_only: u.read_only,
            })
            .collect();
        Ok(Volume {
            name: row.name.clone(),
            format: parse_format(&row.format)?,
            size_bytes: info.as_ref().map_or(row.capacity, |i| i.capacity),
            allocation_bytes: info.as_ref().map_or(0, |i| i.allocation),
            base,
            clones: self.store.clones_of(&row.id)?,
            attached,
            created_at: row.created_at.clone(),
        })
    }

    /// Refuses a change to a volume that instances attach or that has clones.
    fn check_unused(&self, row: &VolumeRow, action: &'static str) -> Result<(), ServiceError> {
        let users = self.store.users_of_volume(&row.id)?;
        if !users.is_empty() {
            let users = users
                .iter()
                .map(|u| {
                    let how = if u.read_only { "ro" } else { "rw" };
                    format!("{} as {} ({how})", u.instance, u.device)
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(VolumeError::InUse {
                name: row.name.clone(),
                users,
                action,
            }
            .into());
        }
        let clones = self.store.clones_of(&row.id)?;
        if !clones.is_empty() {
            return Err(VolumeError::HasClones {
                name: row.name.clone(),
                clones: clones.join(", "),
                action,
            }
            .into());
        }
        Ok(())
    }

    /// Refuses a size the pool cannot hold.
    async fn check_free(
        &self,
        pool: &str,
        field: &'static str,
        bytes: u64,
    ) -> Result<(), ServiceError> {
        let backend = self.backend.clone();
        let p = pool.to_string();
        let space = blocking(move || backend.pool_space(&p))
            .await?
            .map_err(ServiceError::Backend)?;
        if bytes > space.available {
            return Err(FieldError::new(
                field,
                format!(
                    "is {bytes} bytes, more than the {} bytes free in pool {pool:?}",
                    space.available
                ),
            )
            .into());
        }
        Ok(())
    }

    /// Creates a libvirt volume, recorded as pending first.
    async fn make_libvirt_volume(&self, pool: &str, vol: NewVolume) -> Result<(), ServiceError> {
        self.store.insert_pending_volume(pool, &vol.name)?;
        let backend = self.backend.clone();
        let p = pool.to_string();
        let name = vol.name.clone();
        let made = blocking(move || backend.create_volume(&p, &vol)).await?;
        if let Err(e) = made {
            // libvirt may have made part of it; the volume is provably ours (pending).
            let _ = self.delete_libvirt_volume(pool, &name).await;
            return Err(ServiceError::Backend(e));
        }
        Ok(())
    }

    /// `POST /v1/volumes`: a new empty volume, or a copy-on-write clone of another.
    pub async fn create_volume(
        &self,
        spec: &VolumeSpec,
        caller: &Caller,
    ) -> Result<Volume, ServiceError> {
        authorize(caller, Action::CreateVolumes)?;
        validate_name(&spec.name)?;
        if let Some(size) = spec.size_bytes {
            validate_size("size_bytes", size)?;
        }
        caller.may_name(&spec.name)?;
        let _guard = self.locks.lock(&lock_key(&spec.name)).await;
        if self.store.volume_by_name(&spec.name)?.is_some() {
            return Err(VolumeError::NameTaken(spec.name.clone()).into());
        }
        let pool = self.pool().await?;
        let (format, capacity, base) = match &spec.clone {
            Some(base_name) => {
                if spec.format == Some(VolumeFormat::Raw) {
                    return Err(FieldError::new("format", "a clone is always qcow2").into());
                }
                let base = self
                    .visible_volume(base_name, caller)
                    .map_err(|e| match e {
                        ServiceError::Volume(VolumeError::NotFound(_)) => FieldError::new(
                            "clone",
                            format!("no volume named {base_name:?} to clone"),
                        )
                        .into(),
                        other => other,
                    })?;
                if self
                    .store
                    .users_of_volume(&base.id)?
                    .iter()
                    .any(|u| !u.read_only)
                {
                    return Err(ServiceError::Conflict {
                        field: Some("clone"),
                        message: format!(
                            "volume {base_name:?} is attached read-write; a clone of a disk being \
                             written would be inconsistent"
                        ),
                    });
                }
                let capacity = spec.size_bytes.unwrap_or(base.capacity);
                if capacity < base.capacity {
                    return Err(FieldError::new(
                        "size_bytes",
                        format!(
                            "is {capacity} bytes, smaller than the base's {} bytes",
                            base.capacity
                        ),
                    )
                    .into());
                }
                (VolumeFormat::Qcow2, capacity, Some(base))
            }
            None => {
                let capacity = spec.size_bytes.ok_or_else(|| {
                    FieldError::new("size_bytes", "is required (except for a clone)")
                })?;
                (spec.format.unwrap_or_default(), capacity, None)
            }
        };
        self.check_free(&pool, "size_bytes", capacity).await?;
        let libvirt_name = new_libvirt_name();
        self.make_libvirt_volume(
            &pool,
            NewVolume {
                name: libvirt_name.clone(),
                capacity,
                format: backend_format(format),
                backing: base.as_ref().map(|b| {
                    (
                        b.libvirt_name.clone(),
                        if b.format == "qcow2" {
                            BackendFormat::Qcow2
                        } else {
                            BackendFormat::Raw
                        },
                    )
                }),
            },
        )
        .await?;
        let row = VolumeRow {
            id: uuid::Uuid::new_v4().to_string(),
            name: spec.name.clone(),
            owner: caller.name.clone(),
            pool: pool.clone(),
            libvirt_name: libvirt_name.clone(),
            format: format_str(format).to_string(),
            capacity,
            base_id: base.map(|b| b.id),
            created_at: now_rfc3339(),
        };
        if let Err(e) = self.store.insert_volume(&row) {
            let _ = self.delete_libvirt_volume(&pool, &libvirt_name).await;
            return Err(match e {
                StoreError::NameTaken(n) => VolumeError::NameTaken(n).into(),
                e => e.into(),
            });
        }
        tracing::info!(volume = %row.name, libvirt = %libvirt_name, capacity, format = %row.format,
            "volume created");
        self.volume_to_api(&row).await
    }

    pub async fn list_volumes(&self, caller: &Caller) -> Result<Vec<Volume>, ServiceError> {
        authorize(caller, Action::ListVolumes)?;
        let mut out = Vec::new();
        for row in self.store.volumes()? {
            if caller.sees(&row.name) {
                out.push(self.volume_to_api(&row).await?);
            }
        }
        Ok(out)
    }

    pub async fn get_volume(&self, name: &str, caller: &Caller) -> Result<Volume, ServiceError> {
        authorize(caller, Action::ReadVolume(name))?;
        let row = self.visible_volume(name, caller)?;
        self.volume_to_api(&row).await
    }

    /// `DELETE /v1/volumes/{name}`: refused while attached or cloned.
    pub async fn delete_volume(&self, name: &str, caller: &Caller) -> Result<(), ServiceError> {
        authorize(caller, Action::ChangeVolume(name, "delete"))?;
        let _guard = self.locks.lock(&lock_key(name)).await;
        let row = self.visible_volume(name, caller)?;
        self.check_unused(&row, "detach it (delete those instances) first")?;
        self.store.remove_volume(&row)?;
        if let Err(e) = self
            .delete_libvirt_volume(&row.pool, &row.libvirt_name)
            .await
        {
            // The row is gone and the libvirt volume pending: the next start deletes it.
            tracing::warn!(volume = %name, error = %e, "volume forgotten; its content is deleted at the next start");
        }
        tracing::info!(volume = %name, "volume deleted");
        Ok(())
    }

    /// `POST /v1/volumes/{name}/resize`: grows a volume that nothing attaches.
    pub async fn resize_volume(
        &self,
        name: &str,
        size_bytes: u64,
        caller: &Caller,
    ) -> Result<Volume, ServiceError> {
        authorize(caller, Action::ChangeVolume(name, "resize"))?;
        validate_size("size_bytes", size_bytes)?;
        let _guard = self.locks.lock(&lock_key(name)).await;
        let row = self.visible_volume(name, caller)?;
        if size_bytes <= row.capacity {
            return Err(FieldError::new(
                "size_bytes",
                format!(
                    "is {size_bytes} bytes, not more than the current {} bytes: volumes only grow",
                    row.capacity
                ),
            )
            .into());
        }
        self.check_unused(&row, "a guest's disk does not change size under it")?;
        self.check_free(&row.pool, "size_bytes", size_bytes - row.capacity)
            .await?;
        let backend = self.backend.clone();
        let (pool, lv) = (row.pool.clone(), row.libvirt_name.clone());
        blocking(move || backend.resize_volume(&pool, &lv, size_bytes))
            .await?
            .map_err(ServiceError::Backend)?;
        self.store.set_volume_capacity(&row.id, size_bytes)?;
        tracing::info!(volume = %name, size_bytes, "volume resized");
        let row = self.visible_volume(name, caller)?;
        self.volume_to_api(&row).await
    }

    /// `PUT /v1/volumes/{name}/content`: replaces a raw volume's content with the body.
    pub async fn upload_volume<S, B, E>(
        &self,
        name: &str,
        body: S,
        expected: Option<super::images::ExpectedDigest>,
        caller: &Caller,
    ) -> Result<VolumeUploaded, ServiceError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: Into<Bytes> + AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let mut body = body;
        let checked = async {
            authorize(caller, Action::ChangeVolume(name, "upload to"))?;
            let expected = match expected {
                Some(e) => Some((e.field, rhyzome_api::images::parse_digest(e.field, &e.value)?)),
                None => None,
            };
            let guard = self.locks.lock(&lock_key(name)).await;
            let row = self.visible_volume(name, caller)?;
            if row.format != "raw" {
                // A qcow2 file names its own backing file: an uploaded one could make the
                // guest read any file on the host.
                return Err(VolumeError::Unsupported(
                    "uploads go to raw volumes only: a qcow2 file from a client could name any host file as its backing file",
                )
                .into());
            }
            self.check_unused(&row, "content cannot change under a guest or a clone")?;
            Ok::<_, ServiceError>((expected, guard, row))
        }
        .await;
        let (expected, _guard, row) = match checked {
            Ok(v) => v,
            Err(e) => {
                // Read the body (within bounds) before refusing, so the client hears the
                // answer instead of a reset connection.
                crate::images::drain(&mut body, DRAIN_BEFORE_REFUSING).await;
                return Err(e);
            }
        };
        let limit = row.capacity.min(self.config.max_volume_upload_bytes);
        let what = if limit == row.capacity {
            "the volume's size"
        } else {
            "MaxVolumeUploadBytes"
        };
        let staged = new_libvirt_name();
        self.make_libvirt_volume(
            &row.pool,
            NewVolume {
                name: staged.clone(),
                capacity: row.capacity,
                format: BackendFormat::Raw,
                backing: None,
            },
        )
        .await?;
        let received = self.stream_into(&row.pool, &staged, body, limit).await;
        let (bytes, sha256) = match received {
            Ok(v) => v,
            Err(e) => {
                let _ = self.delete_libvirt_volume(&row.pool, &staged).await;
                return Err(match e {
                    Transfer::TooLarge => VolumeError::TooLarge { limit, what }.into(),
                    Transfer::Client(m) => VolumeError::Broken(m).into(),
                    Transfer::Service(e) => e,
                });
            }
        };
        if let Some((field, want)) = expected {
            if want != sha256 {
                let _ = self.delete_libvirt_volume(&row.pool, &staged).await;
                return Err(VolumeError::DigestMismatch {
                    field,
                    expected: want,
                    actual: sha256,
                }
                .into());
            }
        }
        self.store
            .swap_volume_content(&row.id, &staged, row.capacity)?;
        if let Err(e) = self
            .delete_libvirt_volume(&row.pool, &row.libvirt_name)
            .await
        {
            tracing::warn!(volume = %name, error = %e, "old content kept until the next start");
        }
        tracing::info!(volume = %name, bytes, sha256 = %sha256, "volume uploaded");
        let row = self.visible_volume(name, caller)?;
        Ok(VolumeUploaded {
            volume: self.volume_to_api(&row).await?,
            bytes,
            sha256,
        })
    }

    /// Streams `body` into the libvirt volume `libvirt_name`, at most `limit` bytes; returns
    /// the byte count and SHA-256.
    async fn stream_into<S, B, E>(
        &self,
        pool: &str,
        libvirt_name: &str,
        mut body: S,
        limit: u64,
    ) -> Result<(u64, String), Transfer>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: Into<Bytes>,
        E: std::fmt::Display,
    {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(8);
        let backend = self.backend.clone();
        let (p, n) = (pool.to_string(), libvirt_name.to_string());
        let writer = tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader {
                rx,
                pending: Bytes::new(),
                hasher: Sha256::new(),
                bytes: 0,
            };
            let sent = backend.upload_volume(&p, &n, &mut reader);
            (sent, reader.bytes, hex(&reader.hasher.finalize()))
        });
        let mut seen = 0u64;
        let mut refused: Option<Transfer> = None;
        let mut ended = false;
        // The body arrives in pieces of a few KiB; handing each to the blocking side would
        // cost a thread wake-up apiece, so they are gathered into batches first.
        let mut batch = bytes::BytesMut::new();
        loop {
            let item = match body.next().await {
                None => {
                    ended = true;
                    if batch.is_empty() {
                        break;
                    }
                    Ok(batch.split().freeze())
                }
                Some(Ok(c)) => {
                    let c: Bytes = c.into();
                    seen += c.len() as u64;
                    if seen > limit {
                        refused = Some(Transfer::TooLarge);
                        Err("too large".to_string())
                    } else {
                        batch.extend_from_slice(&c);
                        if batch.len() < UPLOAD_BATCH {
                            continue;
                        }
                        Ok(batch.split().freeze())
                    }
                }
                Some(Err(e)) => {
                    ended = true;
                    refused = Some(Transfer::Client(e.to_string()));
                    Err(e.to_string())
                }
            };
            let stop = item.is_err() || ended;
            // A closed channel: libvirt's side failed; its error is the answer.
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
        drop(tx);
        if !ended {
            // Read on a little, so that a client still sending hears the answer rather than
            // a reset connection (as image uploads do).
            let mut drained = 0u64;
            while drained < DRAIN_BEFORE_REFUSING {
                match body.next().await {
                    Some(Ok(c)) => drained += c.into().len() as u64,
                    _ => break,
                }
            }
        }
        let (sent, bytes, sha256) = writer
            .await
            .map_err(|e| Transfer::Service(ServiceError::Internal(format!("upload task: {e}"))))?;
        if let Some(r) = refused {
            return Err(r);
        }
        sent.map_err(|e| Transfer::Service(ServiceError::Backend(e)))?;
        Ok((bytes, sha256))
    }

    /// `GET /v1/volumes/{name}/content`: the volume's bytes, as libvirt reads them.
    pub async fn download_volume(
        &self,
        name: &str,
        caller: &Caller,
    ) -> Result<impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static, ServiceError>
    {
        authorize(caller, Action::ReadVolume(name))?;
        let row = self.visible_volume(name, caller)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, BackendError>>(8);
        let backend: Arc<dyn Hypervisor> = self.backend.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let mut writer = ChannelWriter { tx: tx.clone() };
            match backend.download_volume(&row.pool, &row.libvirt_name, &mut writer) {
                Ok(bytes) => tracing::info!(volume = %name, bytes, "volume downloaded"),
                Err(e) => {
                    tracing::warn!(volume = %name, error = %e, "volume download failed");
                    let _ = tx.blocking_send(Err(e));
                }
            }
        });
        // Wait for the first chunk: a download libvirt refuses to start (or an empty volume)
        // is answered with its own status, not with a 200 whose body breaks.
        let first = match rx.recv().await {
            Some(Ok(chunk)) => Some(chunk),
            Some(Err(e)) => return Err(ServiceError::Backend(e)),
            None => None,
        };
        let rest = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| {
                // Midway, only ending the body early can say it failed.
                (item.map_err(|e| std::io::Error::other(e.to_string())), rx)
            })
        });
        Ok(futures_util::stream::iter(first.map(Ok)).chain(rest))
    }
}

/// A volume planned for a block device of a new instance.
pub(super) struct PlannedVolume {
    pub attachment: AttachmentRow,
}

impl Service {
    /// Locks the volumes `spec` asks for (sorted, so two creates cannot deadlock), for the
    /// time from planning to the insert of the record: another create cannot attach one of
    /// them read-write meanwhile, nor a delete remove it.
    pub(super) async fn lock_requested_volumes(
        &self,
        spec: &InstanceSpec,
    ) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let mut names: Vec<&str> = spec
            .volumes
            .iter()
            .flat_map(|m| m.values().map(|v| v.volume.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut guards = Vec::new();
        for name in names {
            guards.push(self.locks.lock(&lock_key(name)).await);
        }
        guards
    }

    /// The volumes of a new instance: one per block device of its manifest (`block_devices`,
    /// in manifest order), as `spec.volumes` maps them. A missing, an extra or an unknown one
    /// is a 422 naming the device (`volumes.DEVICE`); sharing that breaks the rule (read-write
    /// to one instance at a time, or read-only to any number) is a 409. The caller holds the
    /// volumes' locks ([`Self::lock_requested_volumes`]).
    pub(super) fn plan_volumes(
        &self,
        spec: &InstanceSpec,
        block_devices: &[&str],
        caller: &Caller,
    ) -> Result<Vec<PlannedVolume>, ServiceError> {
        let asked = spec.volumes.clone().unwrap_or_default();
        let field = |dev: &str| format!("volumes.{dev}");
        if block_devices.is_empty() {
            if let Some(dev) = asked.keys().next() {
                return Err(FieldError::new(
                    field(dev),
                    format!(
                        "the image declares no block device, so it takes no volume \
                         (asked for device {dev:?})"
                    ),
                )
                .into());
            }
            return Ok(Vec::new());
        }
        if let Some(unknown) = asked.keys().find(|k| !block_devices.contains(&k.as_str())) {
            return Err(FieldError::new(
                field(unknown),
                format!(
                    "the image has no block device {unknown:?}; its block devices are {}",
                    block_devices.join(", ")
                ),
            )
            .into());
        }
        for (i, d) in block_devices.iter().enumerate() {
            if block_devices[..i].contains(d) {
                return Err(FieldError::new(
                    "image",
                    format!("declares the block device {d:?} twice; Solo5 needs unique names"),
                )
                .into());
            }
        }
        let mut planned: Vec<(PlannedVolume, String)> = Vec::new();
        for dev in block_devices {
            let mount = asked.get(*dev).ok_or_else(|| {
                FieldError::new(
                    field(dev),
                    format!(
                        "the image declares the block device {dev:?}; give it a volume \
                         (CLI: --volume {dev}=NAME[:ro])"
                    ),
                )
            })?;
            validate_name(&mount.volume)
                .map_err(|e| FieldError::new(field(dev), format!("volume {}", e.message)))?;
            let row = self
                .visible_volume(&mount.volume, caller)
                .map_err(|e| match e {
                    ServiceError::Volume(VolumeError::NotFound(n)) => {
                        FieldError::new(field(dev), format!("no volume named {n:?}")).into()
                    }
                    other => other,
                })?;
            let how = |ro: bool| if ro { "read-only" } else { "read-write" };
            let mut users: Vec<(String, bool)> = self
                .store
                .users_of_volume(&row.id)?
                .into_iter()
                .map(|u| (u.instance, u.read_only))
                .collect();
            // The same volume on two devices of this instance counts too.
            users.extend(
                planned
                    .iter()
                    .filter(|(p, _)| p.attachment.volume_id == row.id)
                    .map(|(p, _)| (spec.name.clone(), p.attachment.read_only)),
            );
            if let Some((other, other_ro)) = users
                .iter()
                .find(|(_, other_ro)| !mount.read_only || !*other_ro)
            {
                return Err(ServiceError::Conflict {
                    field: Some("volumes"),
                    message: format!(
                        "volume {:?} is attached {} to {other}; a volume is attached \
                         read-write to one instance at a time, or read-only to any number, \
                         so it cannot also be attached {} as {dev:?}",
                        row.name,
                        how(*other_ro),
                        how(mount.read_only)
                    ),
                });
            }
            if !mount.read_only {
                let clones = self.store.clones_of(&row.id)?;
                if !clones.is_empty() {
                    return Err(ServiceError::Conflict {
                        field: Some("volumes"),
                        message: format!(
                            "volume {:?} is the base of {}; writing it would corrupt them, \
                             so it can only be attached read-only",
                            row.name,
                            clones.join(", ")
                        ),
                    });
                }
            }
            planned.push((
                PlannedVolume {
                    attachment: AttachmentRow {
                        device: dev.to_string(),
                        volume_id: row.id.clone(),
                        read_only: mount.read_only,
                    },
                },
                row.name,
            ));
        }
        Ok(planned.into_iter().map(|(p, _)| p).collect())
    }

    /// The disks of an instance's domain, in manifest order, at fixed PCI slots from
    /// `first_slot` (after its NICs).
    pub(super) fn disks_of(
        &self,
        instance_id: &str,
        first_slot: u8,
    ) -> Result<Vec<Disk>, ServiceError> {
        let mut disks = Vec::new();
        for (i, a) in self
            .store
            .instance_volumes(instance_id)?
            .into_iter()
            .enumerate()
        {
            // A missing row would give a guest without the disk its image needs.
            let row = self.store.volume_by_id(&a.volume_id)?.ok_or_else(|| {
                ServiceError::Internal(format!("volume {} of an instance is gone", a.volume_id))
            })?;
            disks.push(Disk {
                pool: row.pool,
                volume: row.libvirt_name,
                format: if row.format == "qcow2" {
                    "qcow2"
                } else {
                    "raw"
                },
                read_only: a.read_only,
                pci_slot: first_slot + i as u8,
            });
        }
        Ok(disks)
    }

    /// An instance's volumes as the API shows them.
    pub(super) fn attachments_of(&self, instance_id: &str) -> Vec<VolumeAttachment> {
        let rows = match self.store.instance_volumes(instance_id) {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read an instance's volumes");
                return Vec::new();
            }
        };
        rows.into_iter()
            .map(|a| VolumeAttachment {
                volume: self
                    .store
                    .volume_by_id(&a.volume_id)
                    .ok()
                    .flatten()
                    .map_or(a.volume_id.clone(), |v| v.name),
                device: a.device,
                read_only: a.read_only,
            })
            .collect()
    }
}

/// Why a transfer stopped.
enum Transfer {
    TooLarge,
    Client(String),
    Service(ServiceError),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
