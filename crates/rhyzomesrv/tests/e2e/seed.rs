//! The command from the project's brief, exactly as written, on real libvirt.

use crate::harness::{ping, udp, Daemon};
use rhyzome_testkernel::{CMDLINE_PREFIX, READY_LINE};
use std::net::Ipv4Addr;
use std::time::Duration;

#[test]
fn the_seed_command_deploys_a_unikernel_that_answers_on_the_bridge() {
    let d = Daemon::start("seed");
    let kernel = d.kernel();
    let out = d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "msgrouter",
        "--kernel",
        &kernel,
        "--kernel-parameters",
        "--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.43/24",
    ]);
    assert!(out.starts_with("created msgrouter (running"), "{out}");

    // The parameters reach the guest, minus the kernel path QEMU puts in front.
    let console = d.wait_for_console("msgrouter", READY_LINE, 1);
    assert!(
        console.contains(&format!(
            "{CMDLINE_PREFIX}\"--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.43/24\""
        )),
        "{console}"
    );
    let i = d.client.get_instance("msgrouter").unwrap();
    let net = i.network.clone().unwrap();
    assert!(
        console.contains(&format!("net mac={}", net.mac)),
        "{console}"
    );

    // It answers on the bridge.
    let ip = Ipv4Addr::new(192, 168, 100, 43);
    assert!(ping(ip, Duration::from_secs(10)), "no ping reply from {ip}");
    assert!(udp(ip, "status").contains("ipv4=192.168.100.43/24"));

    // What it uses, from libvirt: CPU time, QEMU's resident size, and the traffic above.
    let stats = d.client.instance_stats("msgrouter").unwrap();
    assert!(stats.cpu_time_ns > 0, "{stats:?}");
    assert_eq!(stats.memory_kib, 32 << 10);
    assert!(stats.rss_kib.is_some_and(|k| k > 1024), "{stats:?}");
    assert_eq!(stats.nics.len(), 1);
    assert_eq!(stats.nics[0].mac, net.mac);
    assert!(
        stats.nics[0].rx_packets >= 2 && stats.nics[0].tx_packets >= 2,
        "a ping and a UDP request each way: {stats:?}"
    );
    let shown = d.ctl_ok(&["instance", "stats", "msgrouter"]);
    assert!(
        shown.contains("QEMU resident") && shown.contains(&net.mac),
        "{shown}"
    );

    let list = d.ctl_ok(&["instance", "list"]);
    let row = list
        .lines()
        .find(|l| l.starts_with("msgrouter"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("running") && row.contains("192.168.100.43/24") && row.contains(&net.mac),
        "{row}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["-o", "json", "instance", "show", "msgrouter"])).unwrap();
    assert_eq!(json["state"], "running");

    // Delete leaves nothing behind: no domain, no console log, no kernel copy.
    d.ctl_ok(&["instance", "delete", "msgrouter"]);
    match d.client.get_instance("msgrouter") {
        Err(rhyzome_api::client::ClientError::Api { status: 404, .. }) => {}
        other => panic!("expected a 404 after the delete, got {other:?}"),
    }
    assert!(!d.has_domain("msgrouter"), "the domain is left");
    let state = d.dir.path().join("state");
    assert_eq!(
        std::fs::read_dir(state.join("consoles")).unwrap().count(),
        0
    );
    assert_eq!(std::fs::read_dir(state.join("blobs")).unwrap().count(), 0);
    assert!(
        !ping(ip, Duration::from_secs(2)),
        "{ip} still answers after delete"
    );
}
