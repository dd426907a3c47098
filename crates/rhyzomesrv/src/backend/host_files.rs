//! Files a host needs that the controller holds: kernel images, and console logs written on the
//! host. A supertrait of [`super::Hypervisor`].
//!
//! A remote libvirt host shares no filesystem with the daemon, and nothing of rhyzome's is
//! installed on it: the daemon only speaks libvirt's protocol to it. So kernels go to the host,
//! and console logs come back, through libvirt's storage API alone. Two `dir` pools on every
//! host hold them: [`KERNEL_POOL`], whose volumes are kernel images that a domain's
//! `<os><kernel>` names by their path on the host, and [`CONSOLE_POOL`], whose volumes are the
//! files a domain's `<serial type='file'>` appends to (virtlogd writes them on the host). The
//! pools are made when missing and never redefined or deleted: several daemons may share a
//! host, each touching only the volumes it names.
//!
//! Kernel volumes are named by the caller after their content (a digest), so that a volume of
//! that name and size already holds those bytes; an upload is skipped then. Like every backend
//! method these block; kernel uploads and console reads stream their bytes through libvirt
//! (`virStorageVolUpload`, `virStorageVolDownload`) and may be called from several threads.

use super::BackendError;
use std::path::Path;

/// The host's pool of kernel images.
pub const KERNEL_POOL: &str = "rhyzome-kernels";
/// The host's pool of console logs.
pub const CONSOLE_POOL: &str = "rhyzome-consoles";
/// Where [`KERNEL_POOL`] keeps its files when it is made here (libvirt's own directory, which
/// a packaged libvirt owns and its QEMU may read).
pub const KERNEL_POOL_PATH: &str = "/var/lib/libvirt/rhyzome-kernels";
/// Where [`CONSOLE_POOL`] keeps its files when it is made here.
pub const CONSOLE_POOL_PATH: &str = "/var/lib/libvirt/rhyzome-consoles";

/// What [`HostFiles::put_kernel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutKernel {
    /// The volume's path on the host: what `<os><kernel>` names.
    pub path: String,
    /// Whether the bytes were sent (false: the volume was there with that size).
    pub uploaded: bool,
}

/// Part of a console log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleChunk {
    /// The log's whole length now. Smaller than an offset read before when the log was
    /// rotated (virtlogd starts a new file past its size limit) or replaced.
    pub size: u64,
    /// The bytes asked for, as many as there are (none at or past `size`).
    pub bytes: Vec<u8>,
}

/// Kernel images and console logs on the hypervisor's host. Every method blocks.
pub trait HostFiles {
    /// Makes sure the kernel pool exists and holds volume `name` with the bytes of local file
    /// `source`; uploads only when the volume is missing or its size differs (a size that
    /// differs is an upload that broke off: the volume is replaced). Returns the volume's
    /// path on the host and whether it uploaded.
    fn put_kernel(&self, name: &str, source: &Path) -> Result<PutKernel, BackendError>;
    /// Names of the volumes in the kernel pool that start with `prefix` (none when the pool
    /// does not exist).
    fn kernel_volumes(&self, prefix: &str) -> Result<Vec<String>, BackendError>;
    /// Deletes kernel volume `name`; `Ok(false)` when absent.
    fn remove_kernel(&self, name: &str) -> Result<bool, BackendError>;
    /// Makes sure the console pool exists and holds an (empty, if new) volume `name`, and
    /// returns its path on the host: the domain's `<serial type='file'>` writes there.
    fn console_volume(&self, name: &str) -> Result<String, BackendError>;
    /// Up to `len` bytes of console volume `name` from `offset`, with its current size;
    /// `None` when there is no such volume.
    fn read_console(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Option<ConsoleChunk>, BackendError>;
    /// Deletes console volume `name`, and the copies virtlogd rotated out of it
    /// ([`is_rotated_copy`]); `Ok(false)` when `name` was absent.
    fn remove_console(&self, name: &str) -> Result<bool, BackendError>;
}

/// Whether `file` is a copy that virtlogd rotated out of console log `name` (past its size
/// limit it renames the log to `NAME.0`, shifting older copies to `NAME.1`, ...).
pub fn is_rotated_copy(file: &str, name: &str) -> bool {
    file.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_copies_are_the_name_and_a_number() {
        assert!(is_rotated_copy("a.log.0", "a.log"));
        assert!(is_rotated_copy("a.log.12", "a.log"));
        assert!(!is_rotated_copy("a.log", "a.log"));
        assert!(!is_rotated_copy("a.log.", "a.log"));
        assert!(!is_rotated_copy("a.log.x", "a.log"));
        assert!(!is_rotated_copy("a.log2.0", "a.log"));
        assert!(!is_rotated_copy("b.log.0", "a.log"));
    }
}
