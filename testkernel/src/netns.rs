//! Private network namespaces for tests: [`TestNetns`] (a namespace with a bridge, removed on
//! drop), clean-up of namespaces left by killed test processes, and UDP from inside a named
//! namespace.

use crate::{next_unique, require_root, run, run_ok, UDP_PORT};
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

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
    /// namespace (see [`GuestBuilder::nic`](crate::GuestBuilder::nic)).
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

/// The report of the test kernel's `probe` command: the guest at `from` sends `count` probes,
/// one every `interval_ms`, to the guest `to_ip` (MAC `to_mac`, no ARP) and answers, once
/// done, one line `probe sent=N received=M rtt_avg_us=A rtt_min_us=B rtt_max_us=C
/// pattern=P` (see `kernel/net.c`). Asked from inside the named network namespace.
pub fn probe_in(
    netns: &str,
    from: Ipv4Addr,
    to_ip: Ipv4Addr,
    to_mac: &str,
    count: u32,
    interval_ms: u32,
) -> io::Result<String> {
    let command = format!("probe {to_ip} {to_mac} {count} {interval_ms}");
    let wait = Duration::from_millis(u64::from(count * interval_ms) + 6000);
    in_named_netns(netns, move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = vec![0u8; 4096];
        // The command is answered "ok" at once; retry if that answer was lost.
        for _ in 0..5 {
            sock.send_to(command.as_bytes(), SocketAddrV4::new(from, UDP_PORT))?;
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if &buf[..n] != b"ok\n" {
                    return Err(io::Error::other(format!(
                        "probe command answered {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    )));
                }
                break;
            }
        }
        sock.set_read_timeout(Some(wait))?;
        let (n, _) = sock.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}
