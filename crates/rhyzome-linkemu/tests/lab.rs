//! The emulator on real libvirt, in the lab's network namespace (`scripts/lab.sh`), with two
//! test-kernel guests whose NICs are `<interface type='udp'>` toward it and the host reaching
//! them through its tap: the measurements of issue 14, guest to guest (the test kernel's
//! `probe` command) and host to guest. It needs root, QEMU and libvirt; without them it fails
//! saying so. It destroys only the two domains it created, by their names, and stops only
//! the emulator it started (through its own control socket).

use rhyzome_api::LinkConditions;
use rhyzome_linkemu::state::{NetworkState, Partition, PortSpec, TapSpec};
use rhyzome_linkemu::supervise::Supervisor;
use rhyzome_testkernel::in_named_netns;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `scripts/lab.sh up`, then its `env` as pairs.
fn lab() -> std::collections::HashMap<String, String> {
    rhyzome_testkernel::require_root();
    let up = Command::new("bash")
        .arg(repo_root().join("scripts/lab.sh"))
        .arg("up")
        .output()
        .expect("run scripts/lab.sh up");
    assert!(
        up.status.success(),
        "scripts/lab.sh up failed; this test needs root, QEMU and libvirt: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let env = Command::new("bash")
        .arg(repo_root().join("scripts/lab.sh"))
        .arg("env")
        .output()
        .expect("run scripts/lab.sh env");
    String::from_utf8_lossy(&env.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim_start_matches("export ").split_once('=')?;
            Some((k.to_string(), v.trim_matches(['\'', '"']).to_string()))
        })
        .collect()
}

struct Guest {
    name: String,
    ip: Ipv4Addr,
    mac: String,
    port: u16,
    console: PathBuf,
}

/// What this test made, removed on the way out whatever happens.
struct Bed {
    uri: String,
    netns: String,
    supervisor: Supervisor,
    guests: Vec<Guest>,
    _dir: tempfile::TempDir,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for g in &self.guests {
            let _ = Command::new("virsh")
                .args(["-c", &self.uri, "destroy", &g.name])
                .output();
        }
        let _ = self.supervisor.stop("wan");
    }
}

impl Bed {
    fn virsh_create(&self, g: &Guest, emulator_port: u16, dir: &Path) {
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>16</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel>\
             <cmdline>--ipv4={ip}/24</cmdline></os><features><acpi/></features>\
             <on_poweroff>destroy</on_poweroff><devices>\
             <interface type='udp'><mac address='{mac}'/>\
             <source address='127.0.0.1' port='{emulator_port}'>\
             <local address='127.0.0.1' port='{port}'/></source>\
             <model type='virtio-transitional'/></interface>\
             <serial type='file'><source path='{console}'/><target port='0'/></serial>\
             <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>",
            name = g.name,
            kernel = rhyzome_testkernel::kernel_path().display(),
            ip = g.ip,
            mac = g.mac,
            port = g.port,
            console = g.console.display(),
        );
        let file = dir.join(format!("{}.xml", g.name));
        std::fs::write(&file, xml).unwrap();
        let out = Command::new("virsh")
            .args(["-c", &self.uri, "create"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "virsh create: {out:?}");
    }

    /// Runs the `probe` command on guest `from` toward `to`: (received, average RTT in ms,
    /// pattern).
    fn probe(&self, from: usize, to: usize, count: u32, interval_ms: u32) -> (u32, f64, String) {
        let (from, to) = (&self.guests[from], &self.guests[to]);
        let report =
            rhyzome_testkernel::probe_in(&self.netns, from.ip, to.ip, &to.mac, count, interval_ms)
                .unwrap_or_else(|e| panic!("no probe report from {}: {e}", from.ip));
        let field = |key: &str| -> String {
            report
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
                .unwrap_or_else(|| panic!("no {key} in {report:?}"))
        };
        (
            field("received").parse().unwrap(),
            field("rtt_avg_us").parse::<f64>().unwrap() / 1000.0,
            field("pattern"),
        )
    }

    fn pings(&self, ip: Ipv4Addr) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "ping",
                "-n",
                "-q",
                "-c1",
                "-W1",
            ])
            .arg(ip.to_string())
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

fn conditions(text: &str) -> LinkConditions {
    rhyzome_api::validate::parse_conditions(text).unwrap()
}

#[test]
fn guests_on_an_emulated_network_get_the_conditions_set_at_run_time() {
    let env = lab();
    let netns = env["RHYZOME_LAB_NETNS"].clone();
    let uri = env["RHYZOME_LAB_URI"].clone();
    let dir = tempfile::tempdir().unwrap();
    let id = std::process::id() % 200;
    let subnet = [10, 231, id as u8];
    let base_port = 42_000 + (id as u16) * 8;
    let guests: Vec<Guest> = (1..=2u8)
        .map(|i| Guest {
            name: format!("linkemu-test-{id}-g{i}"),
            ip: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 1 + i),
            mac: format!("02:4c:{:02x}:00:00:{i:02x}", id),
            port: base_port + u16::from(i),
            console: dir.path().join(format!("g{i}.log")),
        })
        .collect();
    let mut state = NetworkState {
        listen: SocketAddrV4::new(Ipv4Addr::LOCALHOST, base_port),
        remote_listen: None,
        tap: Some(TapSpec {
            name: format!("rzemu-t{id}"),
            address: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 1),
            prefix_len: 24,
            conditions: LinkConditions::default(),
        }),
        seed: 2026,
        ports: guests
            .iter()
            .enumerate()
            .map(|(i, g)| {
                (
                    format!("g{}", i + 1),
                    PortSpec {
                        peer_port: g.port,
                        peer_address: None,
                        conditions: LinkConditions::default(),
                    },
                )
            })
            .collect(),
        partitions: Vec::new(),
    };
    let supervisor = Supervisor::new(
        dir.path().join("emulators"),
        PathBuf::from(env!("CARGO_BIN_EXE_rhyzome-linkemu")),
        Some(PathBuf::from(format!("/run/netns/{netns}"))),
    );
    supervisor.ensure("wan", &state).unwrap();
    let bed = Bed {
        uri,
        netns,
        supervisor,
        guests,
        _dir: tempfile::tempdir().unwrap(),
    };
    for g in &bed.guests {
        bed.virsh_create(g, base_port, dir.path());
    }
    // Host to guest, through the tap.
    for g in &bed.guests {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !bed.pings(g.ip) {
            assert!(Instant::now() < deadline, "no ping answer from {}", g.ip);
        }
    }
    let put = |state: &NetworkState| bed.supervisor.ensure("wan", state).unwrap();

    // Guest to guest, no conditions.
    let (received, base, _) = bed.probe(0, 1, 20, 20);
    assert_eq!(received, 20);
    eprintln!("guest to guest, no conditions: {base:.1} ms average round trip");

    // latency=50ms on g1: its requests are delayed, g2's answers are not.
    state.ports.get_mut("g1").unwrap().conditions = conditions("latency=50ms");
    put(&state);
    let (received, one, _) = bed.probe(0, 1, 20, 20);
    assert_eq!(received, 20);
    eprintln!("latency=50ms on g1: {one:.1} ms");
    assert!((one - base - 50.0).abs() <= 10.0, "{base} -> {one}");
    // On both NICs: the round trip carries both.
    state.ports.get_mut("g2").unwrap().conditions = conditions("latency=50ms");
    put(&state);
    let (received, both, _) = bed.probe(0, 1, 20, 20);
    assert_eq!(received, 20);
    eprintln!("latency=50ms on g1 and g2: {both:.1} ms");
    assert!((both - base - 100.0).abs() <= 10.0, "{base} -> {both}");
    state.ports.get_mut("g1").unwrap().conditions = LinkConditions::default();
    state.ports.get_mut("g2").unwrap().conditions = LinkConditions::default();
    put(&state);

    // loss=30% on g2 (it sends nothing but the echo answers): 200 probes lose 20-40 %, and
    // the same seed loses the same ones again (re-applying the conditions restarts the
    // link's generator).
    let lossy = |state: &mut NetworkState| {
        state.ports.get_mut("g2").unwrap().conditions = LinkConditions::default();
        put(state);
        state.ports.get_mut("g2").unwrap().conditions = conditions("loss=30%");
        put(state);
        bed.probe(0, 1, 200, 10)
    };
    let (received, _, first) = lossy(&mut state);
    eprintln!("loss=30% on g2: {received} of 200 answered: {first}");
    assert!((120..=160).contains(&received), "{received}");
    let (_, _, second) = lossy(&mut state);
    assert_eq!(first, second, "the same seed drops the same frames");
    state.ports.get_mut("g2").unwrap().conditions = LinkConditions::default();
    put(&state);

    // rate=1mbit on g2: 100 echoes of 1,200 bytes (993,600 bits on the wire) take ~1 s.
    state.ports.get_mut("g2").unwrap().conditions = conditions("rate=1mbit");
    put(&state);
    let g2 = bed.guests[1].ip;
    let elapsed = in_named_netns(&bed.netns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        let payload = vec![b'x'; 1200];
        let t = Instant::now();
        // In bursts of 20 every 40 ms: a guest polls its queue at 100 Hz, and QEMU's socket
        // holds about 90 such frames, so 100 at once would be lost before the guest, not
        // shaped. The sending is over after 160 ms; the rate spreads the answers over ~1 s.
        for burst in 0..5 {
            if burst > 0 {
                std::thread::sleep(Duration::from_millis(40));
            }
            for _ in 0..20 {
                sock.send_to(&payload, SocketAddrV4::new(g2, 7))?;
            }
        }
        let mut buf = vec![0u8; 2048];
        let mut got = 0;
        while got < 100 {
            if sock.recv_from(&mut buf).is_err() {
                break;
            }
            got += 1;
        }
        Ok((got, t.elapsed()))
    })
    .unwrap();
    eprintln!(
        "rate=1mbit on g2: {} echoes of 1,200 bytes in {:?}",
        elapsed.0, elapsed.1
    );
    assert_eq!(elapsed.0, 100);
    let seconds = elapsed.1.as_secs_f64();
    assert!((0.75..=1.25).contains(&seconds), "{seconds}");
    state.ports.get_mut("g2").unwrap().conditions = LinkConditions::default();
    put(&state);

    // A partition between g1 and g2 cuts both ways; the host still reaches both; heal.
    state.partitions = vec![Partition {
        a: vec!["g1".into()],
        b: vec!["g2".into()],
    }];
    put(&state);
    assert_eq!(bed.probe(0, 1, 5, 20).0, 0);
    assert_eq!(bed.probe(1, 0, 5, 20).0, 0);
    assert!(bed.pings(bed.guests[0].ip) && bed.pings(bed.guests[1].ip));
    state.partitions.clear();
    put(&state);
    assert_eq!(bed.probe(0, 1, 5, 20).0, 5);

    // Every change took effect without restarting a guest: one banner each.
    for g in &bed.guests {
        let console = std::fs::read_to_string(&g.console).unwrap();
        assert_eq!(console.matches(rhyzome_testkernel::READY_LINE).count(), 1);
    }

    // The daemon's side restarts (a new supervisor adopts the emulator) while g1 probes g2:
    // no probe is lost.
    let ip = bed.guests[0].ip;
    let to = (bed.guests[1].ip, bed.guests[1].mac.clone());
    let netns = bed.netns.clone();
    let probing = std::thread::spawn(move || {
        in_named_netns(&netns, move || {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            sock.set_read_timeout(Some(Duration::from_secs(10)))?;
            sock.send_to(
                format!("probe {} {} 100 20", to.0, to.1).as_bytes(),
                SocketAddrV4::new(ip, 7),
            )?;
            let mut buf = vec![0u8; 4096];
            sock.recv_from(&mut buf)?;
            let (n, _) = sock.recv_from(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let adopter = Supervisor::new(
        dir.path().join("emulators"),
        PathBuf::from(env!("CARGO_BIN_EXE_rhyzome-linkemu")),
        Some(PathBuf::from(format!("/run/netns/{}", bed.netns))),
    );
    let before = bed.supervisor.stats("wan").unwrap().pid;
    assert_eq!(adopter.ensure("wan", &state).unwrap().pid(), before);
    let report = probing.join().unwrap().unwrap();
    eprintln!("while a new supervisor adopted the emulator: {report}");
    assert!(report.contains("received=100 "), "{report}");

    // Kill the emulator: revived from its state file, traffic resumes; the longest gap in a
    // ping every 20 ms from the host is measured.
    let g1 = bed.guests[0].ip;
    let netns = bed.netns.clone();
    let pinger = std::thread::spawn(move || {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &netns, "ping", "-n", "-D", "-i", "0.02", "-c", "200", "-W", "1",
            ])
            .arg(g1.to_string())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    std::thread::sleep(Duration::from_millis(1000));
    unsafe { libc::kill(before as libc::pid_t, libc::SIGKILL) };
    let killed = Instant::now();
    while bed.supervisor.stats("wan").is_ok() {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The daemon's supervision notices within its interval; here, at once.
    let revived = bed.supervisor.revive("wan").unwrap().expect("restarted");
    eprintln!(
        "emulator {before} killed, {revived} answering after {:?}",
        killed.elapsed()
    );
    let pings = pinger.join().unwrap();
    let times: Vec<f64> = pings
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    eprintln!(
        "pings answered: {} of 200, longest gap {:.0} ms",
        times.len(),
        gap * 1000.0
    );
    assert!(
        times.last().unwrap() - times[0] > 3.0,
        "traffic resumed after the restart"
    );
    assert!(gap < 2.0, "{gap}");
    assert_eq!(bed.supervisor.state("wan").unwrap(), state);
}
