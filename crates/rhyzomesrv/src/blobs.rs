//! The content-addressed blob store, `StateDir/blobs/sha256-<hex>`: the one owner of that
//! directory. Server-side kernels ([`crate::kernels`]) and uploaded images ([`crate::images`])
//! are written into it, looked up and removed only through here, and its garbage collection
//! lives here too.
//!
//! A blob arrives as a complete, fsynced file that is renamed into place (same file system, so
//! atomically), then the directory is fsynced: a crash never leaves a torn blob. Kernel
//! imports write their temporary file in the directory itself ([`BlobStore::incoming_path`]);
//! collection removes such leftovers.
//!
//! Concurrency: one async read-write lock. Whoever is about to make a blob referenced (an
//! import or upload until its row is written, a create until its record is written) holds a
//! [`Pin`] (read); collection and removal need an [`Exclusive`] (write), so they never remove
//! a blob someone is about to reference. File operations block; async callers run them on
//! the blocking pool.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Prefix of a blob's file name; the rest is its SHA-256 in hex.
const BLOB_PREFIX: &str = "sha256-";
/// Prefix of a kernel import's temporary file in the blob directory.
const INCOMING_PREFIX: &str = ".incoming-";

pub struct BlobStore {
    dir: PathBuf,
    lock: tokio::sync::RwLock<()>,
}

/// Held while blobs may be added or about to be referenced: no collection meanwhile.
pub struct Pin<'a>(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>);

/// Held to remove blobs: nobody holds a [`Pin`] meanwhile.
pub struct Exclusive<'a>(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'a, ()>);

impl BlobStore {
    pub fn new(dir: PathBuf) -> Self {
        BlobStore {
            dir,
            lock: tokio::sync::RwLock::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with this digest lives; the one spelling of blob names.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{BLOB_PREFIX}{sha256}"))
    }

    pub fn exists(&self, sha256: &str) -> bool {
        self.path(sha256).exists()
    }

    /// Excludes collection until the guard drops.
    pub async fn pin(&self) -> Pin<'_> {
        Pin(self.lock.read().await)
    }

    /// Waits until nobody holds a [`Pin`], and excludes them until the guard drops.
    pub async fn exclusive(&self) -> Exclusive<'_> {
        Exclusive(self.lock.write().await)
    }

    /// A fresh temporary path inside the blob directory (created if need be), for a file that
    /// [`commit`](Self::commit) then renames into place. Collection removes leftovers.
    pub fn incoming_path(&self) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        Ok(self.dir.join(format!(
            "{INCOMING_PREFIX}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )))
    }

    /// Makes the complete file `file` (on the same file system) the blob `sha256`: fsync,
    /// rename, fsync the directory. Returns whether the blob is new; when it already existed,
    /// `file` is left where it is for its owner to remove.
    pub fn commit(&self, file: &Path, sha256: &str) -> std::io::Result<bool> {
        let target = self.path(sha256);
        if target.exists() {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.dir)?;
        File::open(file)?.sync_all()?;
        std::fs::rename(file, &target)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(true)
    }

    /// Removes one blob; a missing one is not an error.
    pub fn remove(&self, _exclusive: &Exclusive<'_>, sha256: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(sha256)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes every blob not in `referenced`, and leftovers of interrupted imports. Returns
    /// how many files went.
    pub fn collect_garbage(
        &self,
        _exclusive: &Exclusive<'_>,
        referenced: &HashSet<String>,
    ) -> std::io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = match name.strip_prefix(BLOB_PREFIX) {
                Some(digest) => referenced.contains(digest),
                None => !name.starts_with(INCOMING_PREFIX),
            };
            if !keep {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(store: &BlobStore, content: &[u8], sha256: &str) -> bool {
        let tmp = store.incoming_path().unwrap();
        std::fs::write(&tmp, content).unwrap();
        let new = store.commit(&tmp, sha256).unwrap();
        if !new {
            std::fs::remove_file(&tmp).unwrap();
        }
        new
    }

    #[tokio::test]
    async fn blobs_are_committed_once_and_collected_unless_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path().join("blobs"));
        assert!(blob(&store, b"a", "aa"));
        assert!(
            !blob(&store, b"a", "aa"),
            "the same digest again is not new"
        );
        assert!(blob(&store, b"b", "bb"));
        assert_eq!(std::fs::read(store.path("aa")).unwrap(), b"a");
        // A leftover of an interrupted import, and a file that is none of the store's.
        let leftover = store.incoming_path().unwrap();
        std::fs::write(&leftover, b"half").unwrap();
        std::fs::write(store.dir().join("README"), b"not a blob").unwrap();
        let exclusive = store.exclusive().await;
        let keep: HashSet<String> = ["aa".to_string()].into();
        assert_eq!(store.collect_garbage(&exclusive, &keep).unwrap(), 2);
        assert!(store.exists("aa"));
        assert!(!store.exists("bb"));
        assert!(!leftover.exists());
        assert!(store.dir().join("README").exists());
        store.remove(&exclusive, "aa").unwrap();
        store.remove(&exclusive, "aa").unwrap();
        assert!(!store.exists("aa"));
    }

    #[tokio::test]
    async fn collection_waits_for_pins() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(BlobStore::new(dir.path().join("blobs")));
        let pin = store.pin().await;
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move {
                let _exclusive = store.exclusive().await;
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "collection ran while a blob was pinned"
        );
        drop(pin);
        waiting.await.unwrap();
    }
}
