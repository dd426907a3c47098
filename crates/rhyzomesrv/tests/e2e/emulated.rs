//! An emulated network through the daemon on real lab libvirt (issue 14): two test-kernel
//! guests whose NICs are `<interface type='udp'>` toward the network's emulator, which the
//! daemon starts in the lab namespace with the gateway on its tap. The host reaches the guests
//! at their allocated addresses; `instance link` and `network link` change the guest-to-guest
//! round trip of running guests; a partition by label cuts both ways and `heal` restores it;
//! a daemon restart keeps the conditions and traffic flows throughout. Everything
//! is removed through the API (the emulator by `network rm`, through its own control socket).

use crate::harness::{lab_interface_addresses, netns, ping, Daemon};
use rhyzome_api::{InstanceSpec, InstanceState, NetworkSpec};
use std::net::Ipv4Addr;
use std::time::Duration;

/// `rhyzome-linkemu`, built next to this test binary (by `cargo build --workspace`).
fn emulator_binary() -> std::path::PathBuf {
    super::links::emulator_binary()
}

/// A guest's address and MAC, as the daemon gave them.
pub(crate) struct Guest {
    pub ip: Ipv4Addr,
    pub mac: String,
}

pub(crate) fn guest(d: &Daemon, name: &str) -> Guest {
    let i = d.client.get_instance(name).unwrap();
    let n = i.network.expect("a NIC");
    let cidr = n.ipv4.expect("an address");
    Guest {
        ip: cidr.split('/').next().unwrap().parse().unwrap(),
        mac: n.mac,
    }
}

/// The test kernel's `probe` from `from` toward `to`: (received, average RTT in ms, the
/// longest run of lost probes).
/// `(received, shortest round trip in ms, longest run of losses)`. The shortest round trip
/// measures the conditions: a delay is never shorter than configured, while load on the
/// host (and both guests' 100 Hz polling) only ever adds to a round trip, so an average
/// would move with the machine's load and the minimum does not.
pub(crate) fn probe(from: &Guest, to: &Guest, count: u32, interval_ms: u32) -> (u32, f64, usize) {
    let report =
        rhyzome_testkernel::probe_in(&netns(), from.ip, to.ip, &to.mac, count, interval_ms)
            .unwrap_or_else(|e| panic!("no probe report from {}: {e}", from.ip));
    eprintln!("{report}");
    let field = |key: &str| -> String {
        report
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {key} in {report:?}"))
    };
    let longest_loss = field("pattern").split('1').map(str::len).max().unwrap_or(0);
    (
        field("received").parse().unwrap(),
        field("rtt_min_us").parse::<f64>().unwrap() / 1000.0,
        longest_loss,
    )
}

#[test]
fn guests_on_an_emulated_network_get_conditions_at_run_time_through_a_daemon_restart() {
    let netns = netns();
    let mut d = Daemon::start_with(
        "emunet",
        serde_json::json!({
            "LinkEmulator": emulator_binary(),
            "LinkEmulatorNetns": format!("/run/netns/{netns}"),
        }),
    );
    let out = d.ctl_ok(&[
        "network",
        "create",
        "e2e-emu",
        "--subnet",
        "10.71.0.0/24",
        "--emulated",
        "--seed",
        "7",
    ]);
    assert!(out.contains("created network e2e-emu"), "{out}");
    let n = d.client.get_network("e2e-emu").unwrap();
    assert!(n.emulated && n.active, "{n:?}\n{}", d.log());
    assert_eq!(n.seed, Some(7));
    assert_eq!(
        lab_interface_addresses(&n.bridge),
        Some(vec!["10.71.0.1/24".to_string()]),
        "the emulator's tap carries the gateway in the lab namespace"
    );

    for (name, group) in [("e2e-emu-1", "eu"), ("e2e-emu-2", "us")] {
        let spec = InstanceSpec {
            name: name.into(),
            kernel: d.kernel(),
            kernel_parameters: "--ipv4={cidr} --ipv4-gateway={gateway}".into(),
            network: Some(NetworkSpec {
                name: Some("e2e-emu".into()),
                ..Default::default()
            }),
            labels: [("group".to_string(), group.to_string())].into(),
            ..Default::default()
        };
        d.client
            .create_instance(&spec)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", d.log()));
        d.wait_for_state(name, InstanceState::Running);
    }
    let (g1, g2) = (guest(&d, "e2e-emu-1"), guest(&d, "e2e-emu-2"));
    assert_eq!(
        (g1.ip, g2.ip),
        (Ipv4Addr::new(10, 71, 0, 2), Ipv4Addr::new(10, 71, 0, 3))
    );
    // No bridge: the NICs are UDP sockets toward the emulator.
    let xml = crate::harness::virsh(&["dumpxml", "rhyzome-e2e-emu-1"]);
    let xml = String::from_utf8_lossy(&xml.stdout);
    assert!(xml.contains("<interface type='udp'>"), "{xml}");

    assert!(ping(g1.ip, Duration::from_secs(20)), "host -> g1");
    assert!(ping(g2.ip, Duration::from_secs(20)), "host -> g2");
    let (received, base, _) = probe(&g1, &g2, 20, 50);
    assert_eq!(received, 20, "guest to guest without conditions");
    assert!(
        base < 40.0,
        "shortest round trip without conditions: {base:.2} ms"
    );

    // At run time, without a restart of the guest.
    let domain = d.domain_id("e2e-emu-1");
    let set = std::time::Instant::now();
    d.ctl_ok(&["instance", "link", "e2e-emu-1", "latency=50ms"]);
    eprintln!("instance link answered after {:?}", set.elapsed());
    let (received, slow, _) = probe(&g1, &g2, 20, 100);
    eprintln!("round trip: {base:.2} ms, with 50 ms on e2e-emu-1: {slow:.2} ms");
    assert_eq!(received, 20);
    // 50 ms once per round trip: about that, and not twice that.
    assert!(
        (25.0..95.0).contains(&(slow - base)),
        "shortest round trip {slow:.2} ms with 50 ms on e2e-emu-1, {base:.2} ms without"
    );
    assert_eq!(
        d.domain_id("e2e-emu-1"),
        domain,
        "the guest was not restarted"
    );

    // Network-wide defaults: under each NIC's own conditions.
    let out = d.ctl_ok(&["network", "link", "e2e-emu", "latency=30ms"]);
    assert!(out.contains("defaults: latency=30ms"), "{out}");
    let c = d.client.network_conditions("e2e-emu").unwrap();
    let latency = |i: usize| c.nics[i].conditions.latency_ms;
    assert_eq!((latency(0), latency(1)), (Some(50.0), Some(30.0)), "{c:?}");
    let (received, both, _) = probe(&g1, &g2, 20, 100);
    assert_eq!(received, 20);
    // 80 ms, told apart from the 50 ms without the network's default. The guests' 100 Hz
    // polling moves a shortest round trip by up to 10 ms either way between two probes, so
    // each bound sits halfway between what is expected and what a fault would give.
    assert!(
        (65.0..120.0).contains(&(both - base)),
        "shortest round trip {both:.2} ms with 50 + 30 ms, {base:.2} ms without"
    );

    // A partition by label cuts both ways; the host still reaches both sides; heal restores.
    let partition = |other: &str| {
        let out = d.ctl(&[
            "network",
            "partition",
            "e2e-emu",
            "--between",
            "group=eu",
            other,
        ]);
        assert!(out.status.success(), "{out:?}");
        out
    };
    let out = partition("group=us");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("partition group=eu [e2e-emu-1] | group=us [e2e-emu-2]"),
        "{stdout}"
    );
    assert_eq!(probe(&g1, &g2, 10, 50).0, 0, "eu -> us is cut");
    assert_eq!(probe(&g2, &g1, 10, 50).0, 0, "us -> eu is cut");
    assert!(ping(g1.ip, Duration::from_secs(5)) && ping(g2.ip, Duration::from_secs(5)));
    let out = partition("group=asia");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"group=asia\" matches no instance"),
        "{stderr}"
    );
    let out = d.ctl_ok(&["network", "heal", "e2e-emu"]);
    assert!(!out.contains("partition"), "{out}");
    assert_eq!(probe(&g1, &g2, 10, 50).0, 10, "healed");

    // A daemon restart while g1 probes g2 every 20 ms: the conditions stay, traffic flows.
    let (p1, p2) = (
        Guest {
            ip: g1.ip,
            mac: g1.mac.clone(),
        },
        Guest {
            ip: g2.ip,
            mac: g2.mac.clone(),
        },
    );
    let probing = std::thread::spawn(move || probe(&p1, &p2, 200, 20));
    std::thread::sleep(Duration::from_millis(500));
    d.restart();
    let (received, during, longest) = probing.join().unwrap();
    eprintln!(
        "through a daemon restart: {received} of 200 answered, longest gap {} ms, shortest RTT {during:.2} ms",
        longest * 20
    );
    assert!(received >= 198, "{received} of 200");
    assert!(
        during - base >= 40.0,
        "the conditions stayed: {during:.2} ms"
    );
    let (received, after, _) = probe(&g1, &g2, 10, 100);
    assert_eq!(received, 10);
    assert!(after - base >= 40.0, "after the restart: {after:.2} ms");

    for name in ["e2e-emu-1", "e2e-emu-2"] {
        d.client.delete_instance(name).unwrap();
    }
    d.ctl_ok(&["network", "rm", "e2e-emu"]);
    assert_eq!(
        lab_interface_addresses(&n.bridge),
        None,
        "the emulator and its tap are gone"
    );
}
