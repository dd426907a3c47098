//! Building the test kernel: one `make` per process, serialised across processes by a lock
//! file, and the multiboot header check used on its images.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Directory of this crate (`.../testkernel`).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the kernel with `make -C testkernel/kernel` (once per process; an
/// exclusive `flock` on `build/.lock` serialises concurrent processes) and
/// returns the absolute path of `testkernel/build/testkernel.elf`.
///
/// Its Solo5 manifest declares one network device, `service`.
///
/// # Panics
/// If `make` cannot be run or fails; the message includes make's output.
pub fn kernel_path() -> PathBuf {
    built_kernel("testkernel.elf")
}

/// Like [`kernel_path`] (same build), for `testkernel/build/testkernel-2nic.elf`:
/// the same kernel, whose Solo5 manifest declares two network devices,
/// `service` (NIC 0, `--ipv4`) and `admin` (NIC 1, `--admin-ipv4`).
///
/// # Panics
/// As [`kernel_path`].
pub fn kernel_path_2nic() -> PathBuf {
    built_kernel("testkernel-2nic.elf")
}

/// Like [`kernel_path`] (same build), for `testkernel/build/testkernel-nonet.elf`:
/// the same kernel, whose Solo5 manifest declares no device at all (like
/// Solo5's `test_hello`). Given a NIC, it aborts at boot, as Solo5 does.
///
/// # Panics
/// As [`kernel_path`].
pub fn kernel_path_nonet() -> PathBuf {
    built_kernel("testkernel-nonet.elf")
}

/// Like [`kernel_path`] (same build), for `testkernel/build/testkernel-block.elf`:
/// the same kernel, whose Solo5 manifest declares the network device
/// `service` and the block device `storage`.
///
/// # Panics
/// As [`kernel_path`].
pub fn kernel_path_block() -> PathBuf {
    built_kernel("testkernel-block.elf")
}

/// Like [`kernel_path`] (same build), for `testkernel/build/testkernel-storage.elf`:
/// the same kernel, whose Solo5 manifest declares only the block device `storage` (no
/// network device), driven by `--blk-write=SECTOR:TEXT` and `--blk-read=SECTOR`.
///
/// # Panics
/// As [`kernel_path`].
pub fn kernel_path_storage() -> PathBuf {
    built_kernel("testkernel-storage.elf")
}

/// Like [`kernel_path`] (same build), for `testkernel/build/testkernel-2blk.elf`: the
/// block devices `storage` then `logs`, no network device. It drives the first disk and
/// prints the size of the others (`block1 capacity=N sectors`), so tests can see which
/// volume got which device.
///
/// # Panics
/// As [`kernel_path`].
pub fn kernel_path_2blk() -> PathBuf {
    built_kernel("testkernel-2blk.elf")
}

/// Runs the build once per process (one make builds every image) and returns
/// `build/<file>`.
fn built_kernel(file: &str) -> PathBuf {
    static BUILD: OnceLock<PathBuf> = OnceLock::new();
    let build = BUILD.get_or_init(|| {
        let dir = crate_dir();
        let build = dir.join("build");
        std::fs::create_dir_all(&build)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", build.display()));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(build.join(".lock"))
            .unwrap_or_else(|e| panic!("cannot open {}/.lock: {e}", build.display()));
        // SAFETY: flock on a valid, owned fd; released when `lock` is dropped.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        let out = Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(dir.join("kernel"))
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run `make` to build the test kernel ({e}); install make and gcc")
            });
        drop(lock);
        if !out.status.success() {
            panic!(
                "building the test kernel failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        build
    });
    let elf = build.join(file);
    assert!(
        elf.is_file(),
        "make succeeded but {} is missing",
        elf.display()
    );
    elf
}

/// Byte offset of a valid multiboot v1 header (magic `0x1BADB002` plus a
/// matching checksum, 4-byte aligned, within the first 8192 bytes), if any.
pub fn multiboot_header_offset(image: &[u8]) -> Option<usize> {
    let end = image.len().min(8192);
    (0..end.saturating_sub(11)).step_by(4).find(|&off| {
        let word = |i: usize| u32::from_le_bytes(image[off + i..off + i + 4].try_into().unwrap());
        word(0) == 0x1BAD_B002 && word(0).wrapping_add(word(4)).wrapping_add(word(8)) == 0
    })
}
