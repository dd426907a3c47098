//! [`HostFiles`] and the host's [`NodeInfo`] for the fake backend: kernel and console volumes
//! in memory, under a mutex of their own (calls are instantaneous; reading a kernel's source
//! file happens outside it). Tests play the guest's console with
//! [`FakeBackend::append_console`], set what the host reports with
//! [`FakeBackend::set_node_info`], and make the host unreachable with
//! [`FakeBackend::fail_host_files`].

use super::fake::FakeBackend;
use super::host_files::{ConsoleChunk, HostFiles, PutKernel, CONSOLE_POOL, KERNEL_POOL};
use super::{BackendError, NodeInfo};
use std::collections::BTreeMap;
use std::path::Path;

pub struct FakeHostFiles {
    /// Kernel volumes by name: their bytes.
    kernels: BTreeMap<String, Vec<u8>>,
    /// Console volumes by name: what the guest printed.
    consoles: BTreeMap<String, Vec<u8>>,
    /// How many kernel uploads happened (skipped ones do not count).
    uploads: usize,
    node_info: NodeInfo,
    /// Makes every call fail with this error, as an unreachable host would.
    fail: Option<BackendError>,
}

impl Default for FakeHostFiles {
    fn default() -> Self {
        FakeHostFiles {
            kernels: BTreeMap::new(),
            consoles: BTreeMap::new(),
            uploads: 0,
            // A small host as the lab's: TCG only.
            node_info: NodeInfo {
                libvirt_version: "9.0.0".into(),
                hypervisor: "QEMU 7.2.0".into(),
                cpus: 2,
                memory_kib: 8 << 20,
                free_memory_kib: 6 << 20,
                domain_types: vec!["qemu".into()],
            },
            fail: None,
        }
    }
}

/// Where a fake volume would be on the host.
fn path(pool: &str, name: &str) -> String {
    format!("/fake/{pool}/{name}")
}

impl FakeBackend {
    pub(super) fn host(&self) -> std::sync::MutexGuard<'_, FakeHostFiles> {
        self.host_files.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The host as it answers now: the error set by [`fail_host_files`](Self::fail_host_files),
    /// if any.
    fn reachable_host(&self) -> Result<std::sync::MutexGuard<'_, FakeHostFiles>, BackendError> {
        let host = self.host();
        match &host.fail {
            Some(e) => Err(e.clone()),
            None => Ok(host),
        }
    }

    /// What `node_info` reports from now on.
    pub fn set_node_info(&self, info: NodeInfo) {
        self.host().node_info = info;
    }

    /// Makes every host-file call and `node_info` fail with `err` (or succeed again, with
    /// `None`).
    pub fn fail_host_files(&self, err: Option<BackendError>) {
        self.host().fail = err;
    }

    /// Appends `bytes` to console volume `name`, as the guest's console would through
    /// virtlogd; the file is made if missing, as virtlogd would.
    pub fn append_console(&self, name: &str, bytes: &[u8]) {
        self.host()
            .consoles
            .entry(name.to_string())
            .or_default()
            .extend_from_slice(bytes);
    }

    /// The bytes of kernel volume `name`, if it exists.
    pub fn kernel_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.host().kernels.get(name).cloned()
    }

    /// How many kernel uploads `put_kernel` made (the skipped ones do not count).
    pub fn kernel_uploads(&self) -> usize {
        self.host().uploads
    }

    /// The host's facts, or the error set by [`fail_host_files`](Self::fail_host_files).
    pub(super) fn fake_node_info(&self) -> Result<NodeInfo, BackendError> {
        Ok(self.reachable_host()?.node_info.clone())
    }
}

impl HostFiles for FakeBackend {
    fn put_kernel(&self, name: &str, source: &Path) -> Result<PutKernel, BackendError> {
        let want = std::fs::metadata(source)
            .map_err(|e| BackendError::Other(format!("kernel file {}: {e}", source.display())))?
            .len();
        let path = path(KERNEL_POOL, name);
        if self
            .reachable_host()?
            .kernels
            .get(name)
            .is_some_and(|k| k.len() as u64 == want)
        {
            return Ok(PutKernel {
                path,
                uploaded: false,
            });
        }
        // Read outside the lock, as the real upload streams outside libvirt's.
        let bytes = std::fs::read(source)
            .map_err(|e| BackendError::Other(format!("kernel file {}: {e}", source.display())))?;
        let mut host = self.reachable_host()?;
        host.kernels.insert(name.to_string(), bytes);
        host.uploads += 1;
        Ok(PutKernel {
            path,
            uploaded: true,
        })
    }

    fn kernel_volumes(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        Ok(self
            .reachable_host()?
            .kernels
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn remove_kernel(&self, name: &str) -> Result<bool, BackendError> {
        Ok(self.reachable_host()?.kernels.remove(name).is_some())
    }

    fn console_volume(&self, name: &str) -> Result<String, BackendError> {
        self.reachable_host()?
            .consoles
            .entry(name.to_string())
            .or_default();
        Ok(path(CONSOLE_POOL, name))
    }

    fn read_console(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<ConsoleChunk>, BackendError> {
        let host = self.reachable_host()?;
        Ok(host.consoles.get(name).map(|log| {
            let size = log.len() as u64;
            let start = offset.min(size);
            let end = start.saturating_add(len).min(size);
            ConsoleChunk {
                size,
                bytes: log[start as usize..end as usize].to_vec(),
            }
        }))
    }

    fn remove_console(&self, name: &str) -> Result<bool, BackendError> {
        let mut host = self.reachable_host()?;
        host.consoles
            .retain(|other, _| !super::host_files::is_rotated_copy(other, name));
        Ok(host.consoles.remove(name).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Hypervisor;

    #[test]
    fn kernels_are_uploaded_once_per_name_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.virtio");
        std::fs::write(&file, b"\x7fELF one").unwrap();
        let fake = FakeBackend::new();
        let first = fake.put_kernel("sha256-aa", &file).unwrap();
        assert!(first.uploaded);
        assert_eq!(first.path, "/fake/rhyzome-kernels/sha256-aa");
        assert!(!fake.put_kernel("sha256-aa", &file).unwrap().uploaded);
        // Another size under the same name: an upload that broke off, replaced.
        std::fs::write(&file, b"\x7fELF longer").unwrap();
        assert!(fake.put_kernel("sha256-aa", &file).unwrap().uploaded);
        assert_eq!(fake.kernel_bytes("sha256-aa").unwrap(), b"\x7fELF longer");
        assert_eq!(fake.kernel_uploads(), 2);
        fake.put_kernel("other", &file).unwrap();
        assert_eq!(fake.kernel_volumes("sha256-").unwrap(), vec!["sha256-aa"]);
        assert!(fake.remove_kernel("sha256-aa").unwrap());
        assert!(!fake.remove_kernel("sha256-aa").unwrap());
        assert!(fake.put_kernel("x", &dir.path().join("missing")).is_err());
    }

    #[test]
    fn console_reads_follow_offsets_and_report_the_size() {
        let fake = FakeBackend::new();
        assert_eq!(fake.read_console("c", 0, 10).unwrap(), None);
        assert_eq!(
            fake.console_volume("c").unwrap(),
            "/fake/rhyzome-consoles/c"
        );
        let empty = fake.read_console("c", 0, 10).unwrap().unwrap();
        assert_eq!((empty.size, empty.bytes.len()), (0, 0));
        fake.append_console("c", b"Solo5: banner\n");
        fake.append_console("c", b"Solo5: solo5_exit(0) called\n");
        let head = fake.read_console("c", 0, 5).unwrap().unwrap();
        assert_eq!((head.size, head.bytes.as_slice()), (42, &b"Solo5"[..]));
        let tail = fake.read_console("c", 14, 1 << 20).unwrap().unwrap();
        assert_eq!(tail.bytes, b"Solo5: solo5_exit(0) called\n");
        let past = fake.read_console("c", 100, 10).unwrap().unwrap();
        assert_eq!((past.size, past.bytes.len()), (42, 0));
        // Copies virtlogd rotated out go with the log; other logs stay.
        fake.append_console("c.0", b"older");
        fake.append_console("c2", b"another guest");
        // An existing volume keeps its content.
        fake.console_volume("c").unwrap();
        assert_eq!(fake.read_console("c", 0, 100).unwrap().unwrap().size, 42);
        assert!(fake.remove_console("c").unwrap());
        assert!(!fake.remove_console("c").unwrap());
        assert_eq!(fake.read_console("c.0", 0, 1).unwrap(), None);
        assert!(fake.read_console("c2", 0, 1).unwrap().is_some());
    }

    #[test]
    fn node_info_and_failures_are_the_tests_to_set() {
        let fake = FakeBackend::new();
        assert_eq!(fake.node_info().unwrap().domain_types, vec!["qemu"]);
        let mut info = fake.node_info().unwrap();
        info.domain_types = vec!["qemu".into(), "kvm".into()];
        info.cpus = 64;
        fake.set_node_info(info.clone());
        assert_eq!(fake.node_info().unwrap(), info);
        let down = BackendError::Unavailable("host down".into());
        fake.fail_host_files(Some(down.clone()));
        assert_eq!(fake.node_info(), Err(down.clone()));
        assert_eq!(fake.console_volume("c"), Err(down.clone()));
        assert_eq!(fake.read_console("c", 0, 1), Err(down));
        fake.fail_host_files(None);
        assert!(fake.console_volume("c").is_ok());
    }
}
