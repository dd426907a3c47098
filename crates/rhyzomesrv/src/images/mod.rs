//! Uploaded images: the bytes go into the same content-addressed blob store as server-side
//! kernels ([`crate::blobs::BlobStore`], `StateDir/blobs`); what is known about them
//! (size, upload time, names, inspection) is a row in SQLite ([`crate::store::images`]).
//!
//! An upload streams into a private file under `StateDir/uploads/`, hashing as it goes, and is
//! never held in memory. Only a complete, verified body is fsynced and renamed into the blob
//! directory (same file system, so the rename is atomic): a crash or a broken connection leaves
//! at most a file in `uploads/`, which the next start removes, and never a torn blob. The
//! upload directory is separate from `blobs/` so that blob garbage collection (which removes
//! unreferenced `sha256-*` blobs and leftovers of interrupted kernel imports there) never races
//! with an upload in progress. Concurrent uploads of the same
//! content each write their own file; the renames replace identical bytes, so the result is the
//! same whichever finishes first. The async part (receiving) runs on the runtime; the final
//! fsync, rename and inspection block and run on the blocking pool.

pub mod inspect;

use crate::blobs::BlobStore;
use futures_util::{Stream, StreamExt};
use rhyzome_api::ImageInspection;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("the image is larger than the limit of {limit} bytes (MaxImageBytes)")]
    TooLarge { limit: u64 },
    #[error("the upload ended early: {0}; nothing was stored")]
    Truncated(String),
    #[error("the body's SHA-256 is {actual}, not {expected} as given; nothing was stored")]
    DigestMismatch {
        field: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    NotAKernel(String),
    #[error("image {0} not found")]
    NotFound(String),
    #[error("image {reference} is used by instance(s) {instances}; delete them first")]
    InUse {
        reference: String,
        instances: String,
    },
    #[error("cannot store the image in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot inspect the image: {0}")]
    Inspect(#[from] inspect::InspectError),
}

/// A received upload waiting to be committed; removed on drop unless committed, so that an
/// abandoned request (client gone, error) leaves nothing behind.
pub struct PendingUpload {
    path: PathBuf,
    pub sha256: String,
    pub size: u64,
    committed: bool,
}

/// Reads and discards a request body (at most about `limit` bytes), so that a refusal made
/// before reading it reaches a client that is still sending: closing a connection with unread
/// bytes makes the kernel reset it, and the client may lose the answer.
pub async fn drain<S, B, E>(body: &mut S, limit: u64)
where
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    use futures_util::StreamExt;
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.as_ref().len() as u64;
        if seen > limit {
            break;
        }
    }
}

/// How far over `MaxImageBytes` a declared body may be and still be read to the end before
/// the refusal (see [`ImageFiles::receive`]).
const DRAIN_BEFORE_REFUSING: u64 = 1 << 20;

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl PendingUpload {
    pub fn inspect(&self) -> Result<ImageInspection, ImageError> {
        let f = File::open(&self.path).map_err(|source| ImageError::Io {
            dir: self.path.clone(),
            source,
        })?;
        Ok(inspect::inspect(&f)?)
    }
}

/// Where uploads are received, and the blob store they end in.
pub struct ImageFiles {
    upload_dir: PathBuf,
    blobs: Arc<BlobStore>,
    max_bytes: u64,
}

impl ImageFiles {
    pub fn new(state_dir: &Path, blobs: Arc<BlobStore>, max_bytes: u64) -> Self {
        ImageFiles {
            upload_dir: state_dir.join("uploads"),
            blobs,
            max_bytes,
        }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn io(&self, dir: &Path) -> impl Fn(std::io::Error) -> ImageError {
        let dir = dir.to_path_buf();
        move |source| ImageError::Io {
            dir: dir.clone(),
            source,
        }
    }

    /// Removes uploads a previous run left unfinished. Called once at start-up, before the
    /// API serves.
    pub fn clean_uploads(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.upload_dir) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Receives a body into a temporary file, hashing it. `declared` is the Content-Length,
    /// if the client sent one: a body over the limit is refused without being stored (only a
    /// small one is read and discarded first, see below), and a body that ends before its
    /// declared length counts as truncated.
    pub async fn receive<S, B, E>(
        &self,
        mut body: S,
        declared: Option<u64>,
    ) -> Result<PendingUpload, ImageError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        if let Some(n) = declared.filter(|n| *n > self.max_bytes) {
            // Closing a connection with unread bytes makes the kernel answer with a reset,
            // which can destroy the 413 before the client reads it. A modest excess is read
            // and thrown away so the client gets its answer; a huge one is not worth it.
            if n <= self.max_bytes.saturating_add(DRAIN_BEFORE_REFUSING) {
                drain(&mut body, n).await;
            }
            return Err(ImageError::TooLarge {
                limit: self.max_bytes,
            });
        }
        tokio::fs::create_dir_all(&self.upload_dir)
            .await
            .map_err(self.io(&self.upload_dir))?;
        let path = self
            .upload_dir
            .join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let mut pending = PendingUpload {
            path: path.clone(),
            sha256: String::new(),
            size: 0,
            committed: false,
        };
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(self.io(&self.upload_dir))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ImageError::Truncated(e.to_string()))?;
            let chunk = chunk.as_ref();
            pending.size += chunk.len() as u64;
            if pending.size > self.max_bytes {
                return Err(ImageError::TooLarge {
                    limit: self.max_bytes,
                });
            }
            hasher.update(chunk);
            file.write_all(chunk)
                .await
                .map_err(self.io(&self.upload_dir))?;
        }
        if let Some(n) = declared {
            if pending.size != n {
                return Err(ImageError::Truncated(format!(
                    "received {} of {n} bytes",
                    pending.size
                )));
            }
        }
        file.flush().await.map_err(self.io(&self.upload_dir))?;
        drop(file);
        pending.sha256 = hex::encode(hasher.finalize());
        Ok(pending)
    }

    /// Makes a received upload a blob: fsync, rename into the blob directory, fsync the
    /// directory. Returns whether the blob is new. Blocks. The caller holds a blob-store pin
    /// ([`crate::blobs::Pin`]) and records the image row before releasing it.
    pub fn commit(&self, mut pending: PendingUpload) -> Result<bool, ImageError> {
        // A blob already there is deduplicated; the drop removes the temporary copy.
        let new = self
            .blobs
            .commit(&pending.path, &pending.sha256)
            .map_err(self.io(self.blobs.dir()))?;
        pending.committed = new;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, max: u64) -> ImageFiles {
        ImageFiles::new(dir, Arc::new(BlobStore::new(dir.join("blobs"))), max)
    }

    fn chunks(
        parts: Vec<Result<Vec<u8>, String>>,
    ) -> impl Stream<Item = Result<Vec<u8>, String>> + Unpin {
        futures_util::stream::iter(parts)
    }

    #[tokio::test]
    async fn uploads_are_hashed_committed_and_deduplicated() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), 1024);
        let p = f
            .receive(chunks(vec![Ok(b"ab".to_vec()), Ok(b"c".to_vec())]), Some(3))
            .await
            .unwrap();
        assert_eq!(
            p.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let sha = p.sha256.clone();
        assert!(f.commit(p).unwrap());
        assert!(f.blobs.exists(&sha));
        let again = f
            .receive(chunks(vec![Ok(b"abc".to_vec())]), None)
            .await
            .unwrap();
        assert!(!f.commit(again).unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn broken_or_oversized_uploads_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), 4);
        let e = f
            .receive(chunks(vec![Ok(b"ab".to_vec()), Err("reset".into())]), None)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ImageError::Truncated(_)), "{e}");
        let e = f
            .receive(chunks(vec![Ok(b"ab".to_vec())]), Some(3))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ImageError::Truncated(_)), "{e}");
        let e = f
            .receive(chunks(vec![Ok(b"abcde".to_vec())]), None)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, ImageError::TooLarge { limit: 4 }), "{e}");
        let e = f.receive(chunks(vec![]), Some(5)).await.err().unwrap();
        assert!(matches!(e, ImageError::TooLarge { .. }), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            0
        );
        assert!(!dir.path().join("blobs").exists());
    }
}
