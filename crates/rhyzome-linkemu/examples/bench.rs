//! Measures the link emulator as docs/benchmarks.md reports it, on loopback, with UDP sockets
//! standing in for QEMU's NICs: the round trip it adds with no conditions, the 64-byte frames
//! per second it forwards, its CPU per 1,000 frames per second, and its memory per NIC.
//!
//! ```sh
//! cargo build --release -p rhyzome-linkemu --examples
//! target/release/examples/bench [target/release/rhyzome-linkemu]
//! ```

use rhyzome_linkemu::protocol::{call, Request};
use rhyzome_linkemu::state::{NetworkState, PortSpec};
use std::net::UdpSocket;
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

fn main() {
    let binary = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/rhyzome-linkemu".into());
    let dir = tempfile::tempdir().unwrap();
    let listen = socket().local_addr().unwrap().port();
    let (a, b) = (socket(), socket());
    let mut state = NetworkState {
        listen: format!("127.0.0.1:{listen}").parse().unwrap(),
        tap: None,
        seed: 1,
        ports: [("a", &a), ("b", &b)]
            .iter()
            .map(|(n, s)| {
                (
                    n.to_string(),
                    PortSpec {
                        peer_port: s.local_addr().unwrap().port(),
                        conditions: Default::default(),
                    },
                )
            })
            .collect(),
        partitions: Vec::new(),
    };
    let state_path = dir.path().join("net.json");
    let control = dir.path().join("net.sock");
    state.save(&state_path).unwrap();
    let mut child = Command::new(&binary)
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

    // Forwarding: a paced sender at several rates, 3 s each; b counts what arrives, and the
    // emulator's counters say how many it took in and sent on (the rest was lost in the
    // kernel's socket buffers, on either side).
    b.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let bigger = 4i32 << 20;
    // SAFETY: setsockopt with a c_int on a socket we own (best effort, needs root).
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&b),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &bigger as *const i32 as *const libc::c_void,
            4,
        );
    }
    let counters = |control: &std::path::Path| {
        let mut s = UnixStream::connect(control).unwrap();
        let stats = call(&mut s, &Request::Stats).unwrap().stats.unwrap();
        (stats.ports["a"].link.offered, stats.ports["b"].delivered)
    };
    for target in [20_000u64, 50_000, 100_000, 1_000_000] {
        let counter = b.try_clone().unwrap();
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut got = 0u64;
            while counter.recv_from(&mut buf).is_ok() {
                got += 1;
            }
            got
        });
        let f = frame(2, 1, 64);
        let seconds = 3.0;
        let (offered0, delivered0) = counters(&control);
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let mut sent = 0u64;
        while t0.elapsed().as_secs_f64() < seconds {
            let due = (t0.elapsed().as_secs_f64() * target as f64) as u64;
            while sent < due {
                a.send_to(&f, &emu).unwrap();
                sent += 1;
            }
            if target <= 100_000 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        let got = receiver.join().unwrap();
        let (offered1, delivered1) = counters(&control);
        let fps = got as f64 / elapsed;
        println!(
            "  the emulator read {} of {sent} frames sent and sent on {}; the receiver read {got}",
            offered1 - offered0,
            delivered1 - delivered0
        );
        println!(
            "64-byte frames offered {:.0}/s: forwarded {:.0}/s ({:.1} % delivered), emulator CPU {:.1} % of a core, {:.2} % of a core per 1,000 frames/s",
            sent as f64 / elapsed,
            fps,
            100.0 * got as f64 / sent as f64,
            100.0 * cpu / elapsed,
            100.0 * cpu / elapsed / (fps / 1000.0),
        );
    }

    // Memory per NIC: 1,000 more ports, each with conditions set.
    let before = rss_kib(pid);
    for i in 0..1000u16 {
        state.ports.insert(
            format!("n{i}"),
            PortSpec {
                peer_port: 20_000 + i,
                conditions: rhyzome_api::LinkConditions {
                    latency_ms: Some(10.0),
                    loss_percent: Some(1.0),
                    ..Default::default()
                },
            },
        );
    }
    let mut s = UnixStream::connect(&control).unwrap();
    let r = call(&mut s, &Request::Put { state }).unwrap();
    assert!(r.ok, "{:?}", r.error);
    let after = rss_kib(pid);
    println!(
        "memory: RSS {before} KiB with 2 NICs, {after} KiB with 1,002: {:.2} KiB per idle NIC; a NIC's queue holds at most {} frames / {} KiB",
        (after as f64 - before as f64) / 1000.0,
        rhyzome_linkemu::link::QUEUE_FRAMES,
        rhyzome_linkemu::link::QUEUE_BYTES / 1024,
    );
    let _ = child.kill();
    let _ = child.wait();
}
