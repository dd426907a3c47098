//! Test kit for Rhyzome's own test unikernel.
//!
//! `testkernel/kernel/` holds a tiny (~16 KiB) multiboot v1 kernel that looks,
//! to a provisioner, like a Solo5 `virtio` unikernel: it boots from QEMU's
//! `-kernel` (libvirt `<os><kernel>`), reads its MirageOS-style command line,
//! prints Solo5-compatible console lines on COM1, answers ARP, ping and a small
//! UDP protocol on port [`UDP_PORT`], and powers off through ACPI S5 when asked
//! to exit. See `testkernel/README.md` for the exact console lines and the UDP
//! protocol.
//!
//! This crate gives tests:
//! - [`kernel_path`]: builds the kernel (once per process) and returns its path;
//!   [`kernel_path_2nic`], [`kernel_path_nonet`] and [`kernel_path_block`] are
//!   the same kernel with another Solo5 manifest (two NICs; no device; a NIC
//!   and a block device). Like Solo5, the kernel aborts at boot on a virtio
//!   device its manifest does not declare ([`not_in_manifest_line`]);
//! - [`TestNetns`]: a private network namespace with a bridge, removed on drop;
//! - [`QemuGuest`]: plain `qemu-system-x86_64` (TCG) booting the kernel, with
//!   its console captured line by line; killed on drop;
//! - the console line prefixes as constants ([`READY_LINE`], ...).
//!
//! Everything here needs root (network namespaces, taps) and
//! `qemu-system-x86_64`. Helpers panic with a clear message when something is
//! missing: they are meant for tests, which must fail loudly, not skip.
//!
//! Network rule: all traffic produced by this kit stays inside namespaces it
//! created itself. Guests get addresses from the namespace's own subnet
//! ([`TestNetns::guest_ip`]), and [`TestNetns::ping`] /
//! [`TestNetns::udp_request`] send from inside that namespace.
//!
//! ```no_run
//! use rhyzome_testkernel::{QemuGuest, TestNetns, READY_LINE};
//! use std::time::Duration;
//!
//! let ns = TestNetns::new("doc");
//! let tap = ns.add_tap("tap0");
//! let ip = ns.guest_ip(2);
//! let guest = QemuGuest::builder()
//!     .cmdline(format!("--ipv4={} --name=doc", ns.guest_cidr(2)))
//!     .nic(&ns, &tap, &rhyzome_testkernel::unique_mac())
//!     .spawn();
//! guest.wait_for_line(READY_LINE, Duration::from_secs(10)).expect("ready");
//! assert!(ns.ping(ip, Duration::from_secs(5)));
//! ```

mod build;
mod guest;
mod netns;

pub use build::*;
pub use guest::*;
pub use netns::*;

use std::io;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix shared by all of the test kernel's own console lines.
pub const LINE_PREFIX: &str = "rhyzome-testkernel: ";
/// First line the kernel prints (before anything else of its own).
pub const BANNER_LINE: &str = "rhyzome-testkernel: banner v1";
/// Followed by the double-quoted, escaped command line (first word dropped).
pub const CMDLINE_PREFIX: &str = "rhyzome-testkernel: cmdline ";
/// One line per recognised argument, e.g. `rhyzome-testkernel: arg name=web1`.
pub const ARG_PREFIX: &str = "rhyzome-testkernel: arg ";
/// Any non-fatal warning (unknown argument, missing or invalid value, ...).
pub const WARNING_PREFIX: &str = "rhyzome-testkernel: warning: ";
/// Followed by the double-quoted unrecognised argument.
pub const UNKNOWN_ARG_PREFIX: &str = "rhyzome-testkernel: warning: unknown argument ";
/// Either [`NET_MAC_PREFIX`]... or [`NET_NONE_LINE`].
pub const NET_PREFIX: &str = "rhyzome-testkernel: net ";
/// Followed by the MAC read from the virtio-net config space, lower-case hex.
pub const NET_MAC_PREFIX: &str = "rhyzome-testkernel: net mac=";
/// Like [`NET_MAC_PREFIX`], for the second NIC (printed right after the first's line).
pub const NET1_MAC_PREFIX: &str = "rhyzome-testkernel: net1 mac=";
/// Printed when no legacy/transitional virtio-net device was found.
pub const NET_NONE_LINE: &str = "rhyzome-testkernel: net none";
/// Network (if any) is up and the kernel is serving.
pub const READY_LINE: &str = "rhyzome-testkernel: ready";
/// Followed by 8 lower-case hex digits (FNV-1a 32 of sector 0 of the first disk).
pub const BLOCK_CHECKSUM_PREFIX: &str = "rhyzome-testkernel: block sector0 checksum=";
/// Followed by the device's size in 512-byte sectors, then ` sectors read_only=0|1`.
pub const BLOCK_CAPACITY_PREFIX: &str = "rhyzome-testkernel: block capacity=";
/// `--blk-read=S` (or UDP `blk-read S`): followed by `S text="..."` (the sector's text up to
/// its first NUL) or `S error=SOLO5_R_...`.
pub const BLOCK_READ_PREFIX: &str = "rhyzome-testkernel: block read sector=";
/// `--blk-write=S:TEXT` (or UDP `blk-write S TEXT`): followed by `S ok` or `S error=NAME`,
/// NAME Solo5's result: `SOLO5_R_EUNSPEC` when the device refuses (a read-only disk),
/// `SOLO5_R_EINVAL` for a sector outside it.
pub const BLOCK_WRITE_PREFIX: &str = "rhyzome-testkernel: block write sector=";
/// Exact Solo5 exit line prefix: `Solo5: solo5_exit(N) called`.
pub const SOLO5_EXIT_PREFIX: &str = "Solo5: solo5_exit(";
/// Solo5's line when start-up fails because a virtio device is not in the
/// manifest (after [`not_in_manifest_line`]), right before [`SOLO5_ABORT_CALLED_LINE`].
pub const PCI_ENUMERATION_FAILED_LINE: &str = "Solo5: PCI enumeration failed. Aborting.";
/// Solo5's line for `solo5_abort()`; the kernel then powers off.
pub const SOLO5_ABORT_CALLED_LINE: &str = "Solo5: solo5_abort() called";
/// Exact Solo5 abort prefix: `Solo5: ABORT: <file>:<line>: <message>`.
pub const SOLO5_ABORT_PREFIX: &str = "Solo5: ABORT: ";
/// Solo5-style version line printed right after the banner.
pub const SOLO5_VERSION_LINE: &str = "Solo5: Bindings version v0.0.0-rhyzome-testkernel-v1";
/// UDP port of the kernel's service (`status`, `exit N`, `crash`, echo).
pub const UDP_PORT: u16 = 7;

/// UDP port of the gossip protocol (`rumor ID HOPS ORIGIN_MS`; see the README).
pub const GOSSIP_PORT: u16 = 7946;

/// Opens the console line a guest prints for a rumor it receives the first time:
/// `RESULT rumor=ID hops=H ms=T`.
pub const RUMOR_RESULT_PREFIX: &str = "RESULT rumor=";
/// Longest command line the kernel keeps (like Solo5); longer ones are truncated.
pub const MAX_CMDLINE: usize = 8191;

/// The exact Solo5 exit line for `code`.
pub fn solo5_exit_line(code: i32) -> String {
    format!("Solo5: solo5_exit({code}) called")
}

/// A kind of virtio device a Solo5 manifest can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioDevice {
    Net,
    Block,
}

/// Solo5's line for a virtio device at PCI `bus:dev` that the manifest does
/// not declare, e.g. `Solo5: Virtio net: PCI:00:03 not in manifest`.
pub fn not_in_manifest_line(kind: VirtioDevice, bus: u8, dev: u8) -> String {
    let kind = match kind {
        VirtioDevice::Net => "net",
        VirtioDevice::Block => "block",
    };
    format!("Solo5: Virtio {kind}: PCI:{bus:02x}:{dev:02x} not in manifest")
}

/// Panics unless running as root (needed for netns, taps and bridges).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "rhyzome-testkernel tests need root (network namespaces, taps); euid is {euid}"
    );
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

fn next_unique() -> u32 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

/// A locally administered-looking QEMU MAC (`52:54:00:xx:xx:xx`), unique
/// within this process and very likely across concurrent processes.
pub fn unique_mac() -> String {
    let n = (std::process::id() << 12) ^ next_unique();
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

fn run(cmd: &str, args: &[&str]) -> io::Result<Output> {
    Command::new(cmd).args(args).stdin(Stdio::null()).output()
}

fn run_ok(cmd: &str, args: &[&str]) -> Result<(), String> {
    match run(cmd, args) {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `{cmd}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiboot_header_detection() {
        let mut img = vec![0u8; 64];
        assert_eq!(multiboot_header_offset(&img), None);
        let magic: u32 = 0x1BAD_B002;
        let flags: u32 = 3;
        let sum = 0u32.wrapping_sub(magic).wrapping_sub(flags);
        img[8..12].copy_from_slice(&magic.to_le_bytes());
        img[12..16].copy_from_slice(&flags.to_le_bytes());
        img[16..20].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(multiboot_header_offset(&img), Some(8));
        img[16] ^= 1;
        assert_eq!(multiboot_header_offset(&img), None);
    }

    #[test]
    fn exit_line_format() {
        assert_eq!(solo5_exit_line(3), "Solo5: solo5_exit(3) called");
        assert!(solo5_exit_line(-1).starts_with(SOLO5_EXIT_PREFIX));
    }

    #[test]
    fn unique_macs_differ() {
        let a = unique_mac();
        let b = unique_mac();
        assert_ne!(a, b);
        assert!(a.starts_with("52:54:00:") && a.len() == 17);
    }
}
