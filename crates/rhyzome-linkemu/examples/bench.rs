//! Measures the link emulator as docs/benchmarks.md reports it, on loopback, with UDP sockets
//! standing in for QEMU's NICs: the round trip it adds with no conditions, the 64-byte frames
//! per second it forwards, its CPU per 1,000 frames per second, and its memory per NIC.
//!
//! With `--cross-host`, across hosts as issue 20 runs it: the emulator and one NIC in
//! namespace NS_A on loopback (a guest of the primary host), other NICs in namespace NS_B at
//! HOST_ADDR (guests of a remote host) sending to the emulator at EMULATOR_ADDR, over
//! whatever joins the two namespaces (the lab's veth pair `rzframes`). It reports the round
//! trip and the frame rates local to remote, remote to local and remote to remote.
//!
//! ```sh
//! cargo build --release -p rhyzome-linkemu --bins --examples
//! target/release/examples/bench [target/release/rhyzome-linkemu]
//! target/release/examples/bench target/release/rhyzome-linkemu --cross-host \
//!     /run/netns/rhyzome-lab /run/netns/rhyzome-lab-h2 192.168.251.1 192.168.251.2
//! ```

use rhyzome_linkemu::protocol::{call, Request};
use rhyzome_linkemu::state::{NetworkState, PortSpec};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s
}

fn frame(dst: u8, src: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 0, dst]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Round trips of `n` frames from `a` to `b` (echoed by a thread), sent to `a_to` and
/// `b_to` (the emulator, or each other directly).
fn round_trips(a: &UdpSocket, b: UdpSocket, a_to: String, b_to: String, n: usize) -> Vec<Duration> {
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..n {
            let Ok((len, _)) = b.recv_from(&mut buf) else {
                return;
            };
            buf[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            buf[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
            b.send_to(&buf[..len], &b_to).unwrap();
        }
    });
    let mut buf = [0u8; 2048];
    let f = frame(2, 1, 64);
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.send_to(&f, &a_to).unwrap();
        a.recv_from(&mut buf).unwrap();
        rtts.push(t.elapsed());
    }
    echo.join().unwrap();
    rtts.sort();
    rtts
}

/// A running emulator, started from `state` in this process's network namespace.
struct Running {
    child: std::process::Child,
    pid: u32,
    control: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(binary: &str, state: &NetworkState) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let state_path = dir.path().join("net.json");
        let control = dir.path().join("net.sock");
        state.save(&state_path).unwrap();
        let child = Command::new(binary)
            .args(["run", "--state"])
            .arg(&state_path)
            .arg("--control")
            .arg(&control)
            .env("RHYZOME_LINKEMU_LOG", "warn")
            .spawn()
            .unwrap();
        let pid = child.id();
        while UnixStream::connect(&control).is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
        Running {
            child,
            pid,
            control,
            _dir: dir,
        }
    }

    /// (frames `from` offered, frames delivered to `to`), from the emulator's counters.
    fn counters(&self, from: &str, to: &str) -> (u64, u64) {
        let mut s = UnixStream::connect(&self.control).unwrap();
        let stats = call(&mut s, &Request::Stats).unwrap().stats.unwrap();
        (stats.ports[from].link.offered, stats.ports[to].delivered)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port(s: &UdpSocket, remote: bool) -> PortSpec {
    let SocketAddr::V4(own) = s.local_addr().unwrap() else {
        unreachable!("IPv4 sockets")
    };
    PortSpec {
        peer_port: own.port(),
        peer_address: remote.then(|| *own.ip()),
        conditions: Default::default(),
    }
}

fn enlarge_receive_buffer(s: &UdpSocket) {
    let bigger = 4i32 << 20;
    // SAFETY: setsockopt with a c_int on a socket we own (best effort, needs root).
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &bigger as *const i32 as *const libc::c_void,
            4,
        );
    }
}

/// A paced sender at each of `targets` frames per second, 3 s each, from port `from`
/// (socket `a`, sending to `emu`) to port `to` (socket `b`, which counts what arrives); the
/// emulator's counters say how many it took in and sent on (the rest was lost in the
/// kernel's socket buffers, on either side).
#[allow(clippy::too_many_arguments)]
fn forwarding(
    emulator: &Running,
    label: &str,
    (from, a): (&str, &UdpSocket),
    (to, b): (&str, &UdpSocket),
    dst_mac: u8,
    src_mac: u8,
    emu: SocketAddrV4,
    len: usize,
    targets: &[u64],
) {
    b.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    enlarge_receive_buffer(b);
    for &target in targets {
        let counter = b.try_clone().unwrap();
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut got = 0u64;
            while counter.recv_from(&mut buf).is_ok() {
                got += 1;
            }
            got
        });
        let f = frame(dst_mac, src_mac, len);
        let seconds = 3.0;
        let (offered0, delivered0) = emulator.counters(from, to);
        let cpu0 = cpu_seconds(emulator.pid);
        let t0 = Instant::now();
        let mut sent = 0u64;
        while t0.elapsed().as_secs_f64() < seconds {
            let due = (t0.elapsed().as_secs_f64() * target as f64) as u64;
            while sent < due {
                a.send_to(&f, emu).unwrap();
                sent += 1;
            }
            if target <= 100_000 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(emulator.pid) - cpu0;
        let got = receiver.join().unwrap();
        let (offered1, delivered1) = emulator.counters(from, to);
        let fps = got as f64 / elapsed;
        println!(
            "  the emulator read {} of {sent} frames sent and sent on {}; the receiver read {got}",
            offered1 - offered0,
            delivered1 - delivered0
        );
        println!(
            "{label}{len}-byte frames offered {:.0}/s: forwarded {:.0}/s = {:.0} Mbit/s of frames ({:.1} % delivered), emulator CPU {:.1} % of a core, {:.2} % of a core per 1,000 frames/s",
            sent as f64 / elapsed,
            fps,
            fps * len as f64 * 8.0 / 1e6,
            100.0 * got as f64 / sent as f64,
            100.0 * cpu / elapsed,
            100.0 * cpu / elapsed / (fps / 1000.0),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/rhyzome-linkemu".into());
    if args.get(2).map(String::as_str) == Some("--cross-host") {
        let [ns_a, ns_b, emulator_address, host_address] = &args[3..] else {
            eprintln!("usage: bench BINARY --cross-host NS_A NS_B EMULATOR_ADDR HOST_ADDR");
            std::process::exit(2);
        };
        cross_host(
            &binary,
            ns_a,
            ns_b,
            emulator_address.parse().expect("EMULATOR_ADDR"),
            host_address.parse().expect("HOST_ADDR"),
        );
        return;
    }
    let listen = socket().local_addr().unwrap().port();
    let (a, b) = (socket(), socket());
    let mut state = NetworkState {
        listen: format!("127.0.0.1:{listen}").parse().unwrap(),
        remote_listen: None,
        tap: None,
        seed: 1,
        ports: [("a", &a), ("b", &b)]
            .iter()
            .map(|(n, s)| (n.to_string(), port(s, false)))
            .collect(),
        partitions: Vec::new(),
    };
    let emulator = Running::start(&binary, &state);
    let pid = emulator.pid;
    println!("emulator pid {pid}, idle RSS {} KiB", rss_kib(pid));

    // Learn both addresses.
    b.send_to(&frame(0xff, 2, 64), ("127.0.0.1", listen))
        .unwrap();
    a.recv_from(&mut [0u8; 2048]).unwrap();
    let emu = format!("127.0.0.1:{listen}");
    let direct_b = b.local_addr().unwrap().to_string();
    let direct_a = a.local_addr().unwrap().to_string();
    let n = 5000;
    let direct = round_trips(&a, b.try_clone().unwrap(), direct_b, direct_a, n);
    let through = round_trips(&a, b.try_clone().unwrap(), emu.clone(), emu.clone(), n);
    println!(
        "round trip, {n} frames: direct p50 {:?} p99 {:?}; through the emulator p50 {:?} p99 {:?}; added p50 {:?}",
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
        percentile(&through, 0.5),
        percentile(&through, 0.99),
        percentile(&through, 0.5).saturating_sub(percentile(&direct, 0.5)),
    );

    forwarding(
        &emulator,
        "",
        ("a", &a),
        ("b", &b),
        2,
        1,
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, listen),
        64,
        &[20_000, 50_000, 100_000, 1_000_000],
    );

    // Memory per NIC: 1,000 more ports, each with conditions set.
    let before = rss_kib(pid);
    for i in 0..1000u16 {
        state.ports.insert(
            format!("n{i}"),
            PortSpec {
                peer_port: 20_000 + i,
                peer_address: None,
                conditions: rhyzome_api::LinkConditions {
                    latency_ms: Some(10.0),
                    loss_percent: Some(1.0),
                    ..Default::default()
                },
            },
        );
    }
    let mut s = UnixStream::connect(&emulator.control).unwrap();
    let r = call(&mut s, &Request::Put { state }).unwrap();
    assert!(r.ok, "{:?}", r.error);
    let after = rss_kib(pid);
    println!(
        "memory: RSS {before} KiB with 2 NICs, {after} KiB with 1,002: {:.2} KiB per idle NIC; a NIC's queue holds at most {} frames / {} KiB",
        (after as f64 - before as f64) / 1000.0,
        rhyzome_linkemu::link::QUEUE_FRAMES,
        rhyzome_linkemu::link::QUEUE_BYTES / 1024,
    );
}

/// The emulator and NIC `a` in namespace `ns_a`; NICs `b` and `c` in `ns_b` at `host`,
/// sending to the emulator at `emulator_address`.
fn cross_host(binary: &str, ns_a: &str, ns_b: &str, emulator_address: Ipv4Addr, host: Ipv4Addr) {
    // Sockets keep the namespace they were made in: `b` and `c` are made by a thread that
    // entered `ns_b`, then this thread enters `ns_a`, where the emulator is started.
    let ns_b = ns_b.to_string();
    let (b, c) = std::thread::spawn(move || {
        rhyzome_linkemu::tap::enter_netns(std::path::Path::new(&ns_b)).expect("enter NS_B");
        let bind = || {
            let s = UdpSocket::bind((host, 0)).expect("bind HOST_ADDR in NS_B");
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            s
        };
        (bind(), bind())
    })
    .join()
    .unwrap();
    rhyzome_linkemu::tap::enter_netns(std::path::Path::new(ns_a)).expect("enter NS_A");
    let a = socket();
    let listen = socket().local_addr().unwrap().port();
    let state = NetworkState {
        listen: SocketAddrV4::new(Ipv4Addr::LOCALHOST, listen),
        remote_listen: Some(SocketAddrV4::new(emulator_address, listen)),
        tap: None,
        seed: 1,
        ports: [
            ("a", port(&a, false)),
            ("b", port(&b, true)),
            ("c", port(&c, true)),
        ]
        .into_iter()
        .map(|(n, p)| (n.to_string(), p))
        .collect(),
        partitions: Vec::new(),
    };
    let emulator = Running::start(binary, &state);
    let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, listen);
    let remote = SocketAddrV4::new(emulator_address, listen);
    // Learn the three addresses.
    for (s, mac, to) in [(&a, 1, local), (&b, 2, remote), (&c, 3, remote)] {
        s.send_to(&frame(0xff, mac, 64), to).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    for s in [&a, &b, &c] {
        s.set_nonblocking(true).unwrap();
        while s.recv_from(&mut [0u8; 2048]).is_ok() {}
        s.set_nonblocking(false).unwrap();
    }
    println!("emulator pid {}, NICs: a on loopback, b and c at {host}; the emulator at {emulator_address}", emulator.pid);
    let n = 5000;
    let cross = round_trips(
        &a,
        b.try_clone().unwrap(),
        local.to_string(),
        remote.to_string(),
        n,
    );
    println!(
        "round trip a (local) <-> b (remote) through the emulator, {n} frames: p50 {:?} p99 {:?}",
        percentile(&cross, 0.5),
        percentile(&cross, 0.99),
    );
    let targets = [20_000, 50_000, 100_000, 1_000_000];
    let flows = [
        ("local -> remote: ", ("a", &a), ("b", &b), 2, 1, local),
        ("remote -> local: ", ("b", &b), ("a", &a), 1, 2, remote),
        ("remote -> remote: ", ("b", &b), ("c", &c), 3, 2, remote),
    ];
    for (label, from, to, dst, src, emu) in flows {
        forwarding(&emulator, label, from, to, dst, src, emu, 64, &targets);
    }
    // Full-size frames as fast as they go: the bandwidth guests get across hosts.
    for (label, from, to, dst, src, emu) in flows {
        forwarding(
            &emulator,
            label,
            from,
            to,
            dst,
            src,
            emu,
            1500,
            &[1_000_000],
        );
    }
}
