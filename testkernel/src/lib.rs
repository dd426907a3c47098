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

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

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

/// Panics unless running as root (needed for netns, taps and bridges).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "rhyzome-testkernel tests need root (network namespaces, taps); euid is {euid}"
    );
}

/// The QEMU binary: `$RHYZOME_QEMU` if set, else `qemu-system-x86_64` from `PATH`.
///
/// # Panics
/// If it cannot be found (or `$RHYZOME_QEMU` names a missing file).
pub fn qemu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RHYZOME_QEMU") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "RHYZOME_QEMU={} does not exist", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join("qemu-system-x86_64");
        if cand.is_file() {
            return cand;
        }
    }
    panic!("qemu-system-x86_64 not found in PATH (apt-get install qemu-system-x86)");
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

const NETNS_MARK: &str = "rzt-";

/// Deletes namespaces left behind by killed test processes of this kit
/// (`rzt-*-PID-N` whose PID no longer exists). Called once per process by
/// [`TestNetns::new`].
pub fn cleanup_stale_netns() {
    let Ok(out) = run("ip", &["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if !name.starts_with(NETNS_MARK) {
            continue;
        }
        let parts: Vec<&str> = name.rsplitn(3, '-').collect();
        if parts.len() < 3 {
            continue;
        }
        let (Ok(pid), Ok(_)) = (parts[1].parse::<u32>(), parts[0].parse::<u32>()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            kill_netns_pids(name);
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

fn kill_netns_pids(ns: &str) {
    if let Ok(out) = run("ip", &["netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain kill(2) of a process inside our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// A private network namespace with `lo` up and a bridge holding a host
/// address, for booting guests without touching the host's network.
///
/// The namespace is named `rzt-<prefix>-<pid>-<n>` (unique per process and
/// per call). The bridge is `br0` and taps are created inside the namespace,
/// so their names only need to be unique within it (and at most 15 bytes).
/// Each namespace gets its own /24 from `10.77.0.0/16` (process-local
/// counter); since the addresses exist only inside the namespace, overlap with
/// other processes' namespaces is harmless.
///
/// Dropping it kills any process still inside (e.g. a leaked QEMU) and
/// deletes the namespace, which removes the bridge and taps with it.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    bridge: String,
    host_ip: Ipv4Addr,
    prefix_len: u8,
}

impl TestNetns {
    /// Creates a namespace with an automatically chosen /24; the bridge gets
    /// `.1` of it.
    ///
    /// # Panics
    /// If not root or if any `ip` command fails.
    pub fn new(prefix: &str) -> TestNetns {
        let n = next_unique();
        let host = Ipv4Addr::new(10, 77, (n % 256) as u8, 1);
        Self::with_subnet(prefix, host, 24)
    }

    /// Creates a namespace whose bridge gets `host_ip/prefix_len`.
    ///
    /// # Panics
    /// If not root, if `prefix_len` is not 8..=30, or if any `ip` command fails.
    pub fn with_subnet(prefix: &str, host_ip: Ipv4Addr, prefix_len: u8) -> TestNetns {
        require_root();
        assert!((8..=30).contains(&prefix_len), "prefix_len must be 8..=30");
        static SWEEP: OnceLock<()> = OnceLock::new();
        SWEEP.get_or_init(cleanup_stale_netns);
        let clean: String = prefix
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect();
        let name = format!(
            "{NETNS_MARK}{clean}-{}-{}",
            std::process::id(),
            next_unique()
        );
        if let Err(e) = run_ok("ip", &["netns", "add", &name]) {
            panic!("cannot create network namespace {name}: {e}");
        }
        // From here on, Drop cleans up even if a later step panics.
        let ns = TestNetns {
            name,
            bridge: "br0".to_string(),
            host_ip,
            prefix_len,
        };
        let n = ns.name.as_str();
        let cidr = format!("{host_ip}/{prefix_len}");
        let steps: [&[&str]; 5] = [
            &["-n", n, "link", "set", "lo", "up"],
            &["-n", n, "link", "add", "br0", "type", "bridge"],
            &[
                "-n",
                n,
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ],
            &["-n", n, "addr", "add", &cidr, "dev", "br0"],
            &["-n", n, "link", "set", "br0", "up"],
        ];
        for args in steps {
            if let Err(e) = run_ok("ip", args) {
                panic!("setting up network namespace {n}: {e}");
            }
        }
        ns
    }

    /// The namespace's name (as used by `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bridge's interface name inside the namespace (`br0`).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The bridge's (host side) address.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The subnet's prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Address number `host` of the namespace's subnet (e.g. `guest_ip(2)`
    /// is `10.77.N.2` for a default namespace).
    pub fn guest_ip(&self, host: u32) -> Ipv4Addr {
        let mask = u32::MAX << (32 - u32::from(self.prefix_len));
        let net = u32::from(self.host_ip) & mask;
        assert!(host > 0 && host < !mask, "host number out of range");
        Ipv4Addr::from(net | host)
    }

    /// `guest_ip(host)` with the prefix length, as `--ipv4=` wants it.
    pub fn guest_cidr(&self, host: u32) -> String {
        format!("{}/{}", self.guest_ip(host), self.prefix_len)
    }

    /// Runs `cmd args...` inside the namespace (`ip netns exec`) and waits
    /// for it.
    ///
    /// # Panics
    /// If `ip` cannot be started.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, cmd])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns exec {} {cmd}`: {e}", self.name))
    }

    /// Creates tap `name` (at most 15 bytes) inside the namespace, attached
    /// to the bridge and up, and returns its name. QEMU opens it with
    /// `-netdev tap,ifname=NAME,script=no,downscript=no` from inside the
    /// namespace (see [`GuestBuilder::nic`]).
    ///
    /// # Panics
    /// If the name is too long or an `ip` command fails.
    pub fn add_tap(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.len() <= 15,
            "interface name {name:?} must be 1..=15 bytes"
        );
        let n = self.name.as_str();
        let steps: [&[&str]; 3] = [
            &["-n", n, "tuntap", "add", "dev", name, "mode", "tap"],
            &["-n", n, "link", "set", name, "master", &self.bridge],
            &["-n", n, "link", "set", name, "up"],
        ];
        for args in steps {
            if let Err(e) = run_ok("ip", args) {
                panic!("adding tap {name} in {n}: {e}");
            }
        }
        name.to_string()
    }

    /// Pings `ip` from inside the namespace (`ping -c1 -W1`, repeated) until
    /// it answers or `timeout` passes.
    pub fn ping(&self, ip: Ipv4Addr, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let target = ip.to_string();
        loop {
            let out = self.exec("ping", &["-n", "-q", "-c1", "-W1", &target]);
            if out.status.success() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `payload` to `addr` over UDP from inside the namespace; see [`udp_request_in`].
    pub fn udp_request(
        &self,
        addr: SocketAddrV4,
        payload: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        udp_request_in(&self.name, addr, payload, timeout)
    }

    /// Sends one UDP datagram to `addr` from inside the namespace; see [`udp_send_in`].
    pub fn udp_send(&self, addr: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
        udp_send_in(&self.name, addr, payload)
    }

    /// Runs `f` inside this namespace; see [`in_named_netns`].
    pub fn in_netns<T, F>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> io::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        in_named_netns(&self.name, f)
    }
}

/// Sends `payload` to `addr` over UDP from inside the named network
/// namespace (for example the daemon tests' lab) and returns the first
/// datagram that comes back from `addr`.
///
/// The request is re-sent every 250 ms (at most ten times) until a reply
/// arrives or `timeout` passes, so the guest may see duplicates.
/// Errors: `TimedOut` if nothing came back, or the error of `setns`,
/// `bind` or `send`.
pub fn udp_request_in(
    netns: &str,
    addr: SocketAddrV4,
    payload: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let payload = payload.to_vec();
    in_named_netns(netns, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        for _ in 0..10 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            sock.send_to(&payload, addr)?;
            let attempt_end = (now + Duration::from_millis(250)).min(deadline);
            loop {
                let left = attempt_end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                sock.set_read_timeout(Some(left))?;
                match sock.recv_from(&mut buf) {
                    Ok((n, std::net::SocketAddr::V4(from))) if from == addr => {
                        return Ok(buf[..n].to_vec());
                    }
                    Ok(_) => continue, // stray datagram
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut =>
                    {
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no UDP reply from {addr}"),
        ))
    })
}

/// Sends one UDP datagram to `addr` from inside the named network
/// namespace, without waiting for a reply.
pub fn udp_send_in(netns: &str, addr: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
    let payload = payload.to_vec();
    in_named_netns(netns, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.send_to(&payload, addr).map(|_| ())
    })
}

/// Runs `f` on a fresh thread that has joined the named network namespace
/// (`setns`), so sockets it creates live there. The calling thread is
/// unaffected.
pub fn in_named_netns<T, F>(netns: &str, f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let path = format!("/run/netns/{netns}");
    thread::spawn(move || {
        let file = File::open(&path)?;
        // SAFETY: setns on a valid fd; it only changes this thread's
        // network namespace, and this thread ends after `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("network namespace thread panicked"))?
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        kill_netns_pids(&self.name);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

#[derive(Debug)]
struct ConsoleState {
    /// Complete lines (without "\n" or a trailing "\r") and when they arrived.
    lines: Vec<(Instant, String)>,
    partial: Vec<u8>,
    eof: bool,
}

#[derive(Debug)]
struct Console {
    state: Mutex<ConsoleState>,
    cond: Condvar,
}

impl Console {
    fn feed(&self, data: &[u8]) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        for &b in data {
            if b == b'\n' {
                let mut line = std::mem::take(&mut st.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                st.lines
                    .push((now, String::from_utf8_lossy(&line).into_owned()));
            } else {
                st.partial.push(b);
            }
        }
        drop(st);
        self.cond.notify_all();
    }
}

/// PCI slot of the first NIC on bus 0. Fixed slots make NIC order (PCI scan
/// order) follow [`GuestBuilder::nic`] call order, whatever else is attached;
/// slots 0-1 are the host bridge and PIIX3 on `machine=pc`, 2 is left for
/// devices QEMU places itself (the disk).
const FIRST_NIC_SLOT: usize = 3;

/// Builder for [`QemuGuest`]; start with [`QemuGuest::builder`].
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    kernel: Option<PathBuf>,
    cmdline: String,
    memory_mib: u32,
    netns: Option<String>,
    /// (tap, MAC) per NIC, in PCI slot order.
    nics: Vec<(String, String)>,
    legacy_only: bool,
    disk: Option<PathBuf>,
    extra: Vec<String>,
}

impl GuestBuilder {
    /// Kernel image (default: [`kernel_path`]).
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    /// Parameters for `-append` (QEMU prepends the kernel path; the kernel
    /// drops that first word).
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// Guest RAM in MiB (default 8).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Runs QEMU inside `ns` (via `ip netns exec`) even without a NIC.
    pub fn in_netns(mut self, ns: &TestNetns) -> Self {
        self.netns = Some(ns.name().to_string());
        self
    }

    /// Adds a virtio-net-pci NIC backed by tap `tap` (created beforehand
    /// with [`TestNetns::add_tap`]) with MAC `mac`; QEMU runs inside `ns`.
    /// The device is transitional (legacy + modern), as libvirt gives on
    /// `machine='pc'`, and without an option ROM.
    ///
    /// Call it again for more NICs. The n-th call's NIC (from 0) sits in PCI
    /// slot `3 + n` (`00:03.0`, `00:04.0`, ...), so PCI scan order, which
    /// the kernel and Solo5 number NICs by, is call order.
    ///
    /// # Panics
    /// If an earlier NIC was put in another namespace, or past the last PCI
    /// slot.
    pub fn nic(mut self, ns: &TestNetns, tap: &str, mac: &str) -> Self {
        if !self.nics.is_empty() {
            assert_eq!(
                self.netns.as_deref(),
                Some(ns.name()),
                "all NICs of a guest must be in the same namespace"
            );
        }
        assert!(
            FIRST_NIC_SLOT + self.nics.len() < 32,
            "no PCI slot left for another NIC"
        );
        self.netns = Some(ns.name().to_string());
        self.nics.push((tap.to_string(), mac.to_string()));
        self
    }

    /// Makes the NICs legacy-only (`disable-modern=on`) instead of transitional.
    pub fn legacy_only_nic(mut self, yes: bool) -> Self {
        self.legacy_only = yes;
        self
    }

    /// Attaches `path` as a raw virtio-blk disk (read-only).
    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disk = Some(path.into());
        self
    }

    /// Appends an extra raw QEMU argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// The full command line (program first) that [`spawn`](Self::spawn) runs.
    pub fn command_line(&self) -> Vec<String> {
        let kernel = self.kernel.clone().unwrap_or_else(kernel_path);
        let mut v: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            v.extend(["ip".into(), "netns".into(), "exec".into(), ns.clone()]);
        }
        v.push(qemu_binary().to_string_lossy().into_owned());
        for a in [
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-chardev",
            "stdio,id=con0,signal=off",
            "-serial",
            "chardev:con0",
        ] {
            v.push(a.into());
        }
        v.push("-m".into());
        v.push(self.memory_mib.to_string());
        v.push("-kernel".into());
        v.push(kernel.to_string_lossy().into_owned());
        v.push("-append".into());
        v.push(self.cmdline.clone());
        let modern = if self.legacy_only {
            ",disable-modern=on"
        } else {
            ""
        };
        for (i, (tap, mac)) in self.nics.iter().enumerate() {
            let slot = FIRST_NIC_SLOT + i;
            v.push("-netdev".into());
            v.push(format!(
                "tap,id=net{i},ifname={tap},script=no,downscript=no"
            ));
            v.push("-device".into());
            v.push(format!(
                "virtio-net-pci,netdev=net{i},mac={mac},addr={slot:#x},romfile={modern}"
            ));
        }
        if let Some(disk) = &self.disk {
            v.push("-drive".into());
            v.push(format!(
                "file={},if=none,id=disk0,format=raw,readonly=on",
                disk.display()
            ));
            v.push("-device".into());
            v.push("virtio-blk-pci,drive=disk0".into());
        }
        v.extend(self.extra.iter().cloned());
        v
    }

    /// Starts QEMU. Its stdout is the guest's COM1, captured line by line.
    ///
    /// # Panics
    /// If QEMU (or `ip`) cannot be started, or a netns is used without root.
    pub fn spawn(self) -> QemuGuest {
        if self.netns.is_some() {
            require_root();
        }
        let argv = self.command_line();
        let started = Instant::now();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", argv));
        let console = Arc::new(Console {
            state: Mutex::new(ConsoleState {
                lines: Vec::new(),
                partial: Vec::new(),
                eof: false,
            }),
            cond: Condvar::new(),
        });
        let mut stdout = child.stdout.take().expect("piped stdout");
        let c2 = Arc::clone(&console);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => c2.feed(&buf[..n]),
                }
            }
            let mut st = c2.state.lock().unwrap();
            if !st.partial.is_empty() {
                let line = String::from_utf8_lossy(&std::mem::take(&mut st.partial)).into_owned();
                st.lines.push((Instant::now(), line));
            }
            st.eof = true;
            drop(st);
            c2.cond.notify_all();
        });
        let stderr_buf = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let e2 = Arc::clone(&stderr_buf);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                e2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        QemuGuest {
            child,
            argv,
            started,
            console,
            stderr: stderr_buf,
            status: None,
        }
    }
}

/// A plain `qemu-system-x86_64 -machine pc -accel tcg` booting the test
/// kernel with `-kernel`/`-append`, console on stdout (COM1), optionally
/// inside a [`TestNetns`] with a tap NIC. Killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct QemuGuest {
    child: Child,
    argv: Vec<String>,
    started: Instant,
    console: Arc<Console>,
    stderr: Arc<Mutex<Vec<u8>>>,
    status: Option<ExitStatus>,
}

impl QemuGuest {
    /// A builder with defaults: [`kernel_path`], empty command line, 8 MiB,
    /// no NIC, no namespace.
    pub fn builder() -> GuestBuilder {
        GuestBuilder {
            kernel: None,
            cmdline: String::new(),
            memory_mib: 8,
            netns: None,
            nics: Vec::new(),
            legacy_only: false,
            disk: None,
            extra: Vec::new(),
        }
    }

    /// PID of the QEMU process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line QEMU was started with.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// When QEMU was spawned.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Waits until a console line starting with `prefix` has arrived (from
    /// the beginning of the console, not just new lines) and returns the
    /// first such line. `None` on timeout or if QEMU closed the console first.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> Option<String> {
        self.wait_for_line_timed(prefix, timeout).map(|(l, _)| l)
    }

    /// Like [`wait_for_line`](Self::wait_for_line), also returning how long
    /// after spawning QEMU the line was read from its stdout.
    pub fn wait_for_line_timed(
        &self,
        prefix: &str,
        timeout: Duration,
    ) -> Option<(String, Duration)> {
        let deadline = Instant::now() + timeout;
        let mut st = self.console.state.lock().unwrap();
        loop {
            if let Some((at, l)) = st.lines.iter().find(|(_, l)| l.starts_with(prefix)) {
                return Some((l.clone(), at.duration_since(self.started)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if st.eof || left.is_zero() {
                return None;
            }
            st = self.console.cond.wait_timeout(st, left).unwrap().0;
        }
    }

    /// All console lines whose text starts with `prefix`, so far.
    pub fn lines_with_prefix(&self, prefix: &str) -> Vec<String> {
        let st = self.console.state.lock().unwrap();
        st.lines
            .iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Everything printed on the console so far ("\n"-separated).
    pub fn console(&self) -> String {
        let st = self.console.state.lock().unwrap();
        let mut s = String::new();
        for (_, l) in &st.lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(&String::from_utf8_lossy(&st.partial));
        s
    }

    /// What QEMU wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits for QEMU to exit on its own; `None` if still running after
    /// `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The exit status if QEMU has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Kills QEMU (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// A multi-line description (argv, console, stderr) for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "qemu: {}\n--- console ---\n{}\n--- stderr ---\n{}",
            self.argv.join(" "),
            self.console(),
            self.stderr()
        )
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        self.kill();
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
