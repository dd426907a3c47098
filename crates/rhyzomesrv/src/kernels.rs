//! Server-side kernel images: confinement to `KernelDirs` and the daemon's own copies.
//!
//! A requested path is opened once; the check that it lies inside `KernelDirs` is made on the
//! path of the file actually opened (read back from `/proc/self/fd`), and that same open file
//! is copied into a content-addressed blob ([`BlobStore`], `StateDir/blobs`). So a symlink swapped
//! after the check cannot make the daemon boot something else, and an instance keeps booting
//! the image it was created with even if the original file changes or moves. Blobs are written
//! to a temporary file, fsynced and renamed, so a crash never leaves a torn image.
//! All functions block on file I/O; async callers use `spawn_blocking`.

use crate::blobs::BlobStore;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest kernel image accepted. Solo5 unikernels are a few MiB; Linux kernels tens.
pub const MAX_KERNEL_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("must be an absolute path, not {0:?}")]
    NotAbsolute(String),
    #[error("{0} does not exist on the server")]
    NotFound(String),
    #[error("{path} resolves to {resolved}, which is outside the allowed kernel directories ({allowed})")]
    OutsideKernelDirs {
        path: String,
        resolved: String,
        allowed: String,
    },
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("{path} is {size} bytes; the limit is {MAX_KERNEL_BYTES}")]
    TooLarge { path: String, size: u64 },
    #[error("{0} is not a bootable kernel (neither an ELF image nor a Linux bzImage)")]
    NotAKernel(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot store the kernel image in {dir}: {source}")]
    Store {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a non-admin caller is told about every kernel path outside `KernelDirs`, missing or
/// unreadable: one answer for all, so that answers reveal nothing about the server's files.
pub const NOT_ALLOWED: &str = "not an allowed kernel path";

impl KernelError {
    /// True for the errors whose detail tells something about files outside `KernelDirs`:
    /// whether a path exists, where a symlink points, which directories are allowed.
    pub fn reveals_the_file_system(&self) -> bool {
        matches!(
            self,
            KernelError::NotFound(_)
                | KernelError::OutsideKernelDirs { .. }
                | KernelError::Read { .. }
        )
    }

    /// True when the error is the client's fault (a 4xx), not the server's.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, KernelError::Store { .. })
    }
}

/// A kernel imported into the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKernel {
    pub sha256: String,
    pub path: PathBuf,
}

pub struct KernelStore {
    allowed: Vec<PathBuf>,
    blobs: Arc<BlobStore>,
}

impl KernelStore {
    pub fn new(allowed: Vec<PathBuf>, blobs: Arc<BlobStore>) -> Self {
        KernelStore { allowed, blobs }
    }

    /// Opens `requested`, checks that it is a kernel inside `KernelDirs`, and copies it into
    /// the blob store. The caller holds a [`crate::blobs::Pin`] until the blob is referenced.
    pub fn import(&self, requested: &str) -> Result<StoredKernel, KernelError> {
        let path = Path::new(requested);
        if !path.is_absolute() {
            return Err(KernelError::NotAbsolute(requested.to_string()));
        }
        let read_err = |source: std::io::Error| KernelError::Read {
            path: requested.to_string(),
            source,
        };
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            // A FIFO or device must not block the daemon in open().
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KernelError::NotFound(requested.to_string()))
            }
            Err(e) => return Err(read_err(e)),
        };
        let resolved = opened_path(&file).map_err(read_err)?;
        self.check_confined(requested, &resolved)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(KernelError::NotAFile(requested.to_string()));
        }
        if meta.len() > MAX_KERNEL_BYTES {
            return Err(KernelError::TooLarge {
                path: requested.to_string(),
                size: meta.len(),
            });
        }
        self.copy_into_store(requested, &mut file)
    }

    fn check_confined(&self, requested: &str, resolved: &Path) -> Result<(), KernelError> {
        // The allowed directories are resolved on every call, so that one created after the
        // daemon started counts, and a symlinked KernelDir compares by its target.
        let roots: Vec<PathBuf> = self
            .allowed
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .collect();
        if roots.iter().any(|root| resolved.starts_with(root)) {
            Ok(())
        } else {
            Err(KernelError::OutsideKernelDirs {
                path: requested.to_string(),
                resolved: resolved.display().to_string(),
                allowed: self
                    .allowed
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }

    fn copy_into_store(
        &self,
        requested: &str,
        file: &mut File,
    ) -> Result<StoredKernel, KernelError> {
        let store_err = |source: std::io::Error| KernelError::Store {
            dir: self.blobs.dir().to_path_buf(),
            source,
        };
        let tmp_path = self.blobs.incoming_path().map_err(store_err)?;
        let result = (|| {
            let mut tmp = File::create(&tmp_path).map_err(store_err)?;
            let mut hasher = Sha256::new();
            let mut head = Vec::with_capacity(1024);
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(KernelError::Read {
                            path: requested.to_string(),
                            source,
                        })
                    }
                };
                total += n as u64;
                if total > MAX_KERNEL_BYTES {
                    return Err(KernelError::TooLarge {
                        path: requested.to_string(),
                        size: total,
                    });
                }
                if head.len() < 1024 {
                    let take = n.min(1024 - head.len());
                    head.extend_from_slice(&buf[..take]);
                }
                hasher.update(&buf[..n]);
                tmp.write_all(&buf[..n]).map_err(store_err)?;
            }
            if !looks_like_kernel(&head) {
                return Err(KernelError::NotAKernel(requested.to_string()));
            }
            drop(tmp);
            let sha256 = hex::encode(hasher.finalize());
            self.blobs.commit(&tmp_path, &sha256).map_err(store_err)?;
            let path = self.blobs.path(&sha256);
            Ok(StoredKernel { sha256, path })
        })();
        // Gone unless committed: a failure, or a blob that was already there.
        let _ = std::fs::remove_file(&tmp_path);
        result
    }
}

/// The path of an open file, as the kernel resolved it (symlinks followed).
fn opened_path(file: &File) -> std::io::Result<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// ELF (Solo5 virtio images are multiboot ELFs) or a Linux bzImage ("HdrS" at 0x202).
fn looks_like_kernel(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF") || head.get(0x202..0x206) == Some(b"HdrS")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, KernelStore) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("kernels")).unwrap();
        let store = KernelStore::new(
            vec![dir.path().join("kernels")],
            Arc::new(BlobStore::new(dir.path().join("state/blobs"))),
        );
        (dir, store)
    }

    fn elf(dir: &Path, name: &str, body: &[u8]) -> String {
        let p = dir.join(name);
        let mut content = b"\x7fELF".to_vec();
        content.extend_from_slice(body);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_string()
    }

    #[test]
    fn imports_are_content_addressed() {
        let (dir, store) = setup();
        let a = elf(&dir.path().join("kernels"), "a.virtio", b"same");
        let b = elf(&dir.path().join("kernels"), "b.virtio", b"same");
        let ka = store.import(&a).unwrap();
        let kb = store.import(&b).unwrap();
        assert_eq!(ka, kb);
        assert_eq!(std::fs::read(&ka.path).unwrap(), b"\x7fELFsame");
        assert_eq!(ka.sha256.len(), 64);
    }

    #[test]
    fn paths_outside_kernel_dirs_are_refused_even_through_symlinks() {
        let (dir, store) = setup();
        let outside = elf(dir.path(), "outside.virtio", b"x");
        assert!(matches!(
            store.import(&outside),
            Err(KernelError::OutsideKernelDirs { .. })
        ));
        let link = dir.path().join("kernels/link.virtio");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(matches!(
            store.import(link.to_str().unwrap()),
            Err(KernelError::OutsideKernelDirs { .. })
        ));
        let dotdot = format!("{}/kernels/../outside.virtio", dir.path().display());
        assert!(matches!(
            store.import(&dotdot),
            Err(KernelError::OutsideKernelDirs { .. })
        ));
    }

    #[test]
    fn bad_paths_get_specific_errors() {
        let (dir, store) = setup();
        assert!(matches!(
            store.import("relative.virtio"),
            Err(KernelError::NotAbsolute(_))
        ));
        let missing = format!("{}/kernels/missing", dir.path().display());
        assert!(matches!(
            store.import(&missing),
            Err(KernelError::NotFound(_))
        ));
        let d = format!("{}/kernels", dir.path().display());
        assert!(matches!(store.import(&d), Err(KernelError::NotAFile(_))));
        let text = dir.path().join("kernels/readme.txt");
        std::fs::write(&text, "hello").unwrap();
        assert!(matches!(
            store.import(text.to_str().unwrap()),
            Err(KernelError::NotAKernel(_))
        ));
        // A refused import leaves no temporary file behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state/blobs"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty());
    }

    #[tokio::test]
    async fn garbage_collection_keeps_referenced_blobs() {
        let (dir, store) = setup();
        let a = store
            .import(&elf(&dir.path().join("kernels"), "a", b"a"))
            .unwrap();
        let b = store
            .import(&elf(&dir.path().join("kernels"), "b", b"b"))
            .unwrap();
        let keep: std::collections::HashSet<String> = [a.sha256.clone()].into();
        let exclusive = store.blobs.exclusive().await;
        assert_eq!(store.blobs.collect_garbage(&exclusive, &keep).unwrap(), 1);
        assert!(a.path.exists());
        assert!(!b.path.exists());
    }
}
