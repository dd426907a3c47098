//! Test-bed file features on real libvirt (issue 15): an emulated bed network with default
//! link conditions and a group's own, readiness by UDP and by ping probes (the daemon probing
//! from the lab namespace it is not in), and `kernel_file` pushed by the CLI once and not
//! again. Changing the conditions re-applies in place; a probe that never matches keeps a
//! running node unready; destroy leaves no domain.

use crate::harness::{lab_domains, netns, Daemon};
use rhyzome_api::InstanceState;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn bed(seed_ready: &str, net_link: &str, node_link: &str) -> String {
    format!(
        r#"name = "tbf"
seed = 3

[[networks]]
name = "tbf-net"
subnet = "10.77.0.0/24"
emulated = true
link = {{ {net_link} }}

[[groups]]
name = "seed"
count = 1
kernel_file = "./node.virtio"
network = "tbf-net"
kernel_parameters = "--ipv4={{cidr}} --ipv4-gateway={{gateway}} --name=seed"
memory_mib = 16
ready = {seed_ready}

[[groups]]
name = "nodes"
count = 2
after = ["seed"]
kernel_file = "./node.virtio"
network = "tbf-net"
kernel_parameters = "--ipv4={{cidr}} --ipv4-gateway={{gateway}} --name=node{{i}}"
memory_mib = 16
ready = {{ ping = true }}
link = {{ {node_link} }}
"#
    )
}

const UDP_READY: &str = r#"{ udp = { port = 7, send = "status", expect = "uptime_ms=" } }"#;

/// Effective latency of each NIC on the network, by instance.
fn latencies(d: &Daemon) -> BTreeMap<String, Option<f64>> {
    d.client
        .network_conditions("tbf-net")
        .unwrap()
        .nics
        .into_iter()
        .map(|n| (n.instance, n.conditions.latency_ms))
        .collect()
}

fn ids(d: &Daemon) -> BTreeMap<String, String> {
    d.client
        .list_instances()
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.id))
        .collect()
}

#[test]
fn a_bed_file_with_emulated_links_probes_and_a_kernel_file_comes_up_and_changes_in_place() {
    let netns = netns();
    let d = Daemon::start_with(
        "tbfile",
        serde_json::json!({
            "LinkEmulator": super::links::emulator_binary(),
            "LinkEmulatorNetns": format!("/run/netns/{netns}"),
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(d.kernel(), dir.path().join("node.virtio")).unwrap();
    let file = dir.path().join("bed.toml");
    let path = file.to_str().unwrap();
    std::fs::write(
        &file,
        bed(UDP_READY, r#"latency = "20ms""#, r#"latency = "30ms""#),
    )
    .unwrap();

    let started = Instant::now();
    let out = d.apply_bed_and_wait(std::path::Path::new(path), "3m");
    eprintln!(
        "{out}\n3 nodes ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(out.contains("kernel_file ./node.virtio: pushed"), "{out}");
    assert!(out.contains("test bed tbf: ready"), "{out}\n{}", d.log());
    let status = d.client.get_testbed("tbf").unwrap();
    assert!(status.ready, "{status:?}");
    assert_eq!(
        status
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.ready))
            .collect::<Vec<_>>(),
        [("seed", 1), ("nodes", 2)]
    );
    // They boot the pushed image.
    let seed = d.client.get_instance("tbf-seed-0").unwrap();
    assert!(
        seed.image.as_deref().is_some_and(|i| i.contains("sha256:")),
        "{seed:?}"
    );

    // The network is emulated, with its default; the nodes have their own.
    let net = d.client.get_network("tbf-net").unwrap();
    assert!(net.emulated && net.active, "{net:?}");
    assert_eq!(net.link.latency_ms, Some(20.0));
    let shown = d.ctl_ok(&["network", "show", "tbf-net"]);
    assert!(shown.contains("latency=20ms"), "{shown}");
    assert_eq!(
        latencies(&d),
        [
            ("tbf-nodes-0".to_string(), Some(30.0)),
            ("tbf-nodes-1".to_string(), Some(30.0)),
            ("tbf-seed-0".to_string(), Some(20.0)),
        ]
        .into()
    );

    // The same file again: nothing uploaded, nothing changed.
    let before = ids(&d);
    let out = d.ctl_ok(&["testbed", "apply", "-f", path]);
    assert!(out.contains("already on the server"), "{out}");
    assert!(out.contains("test bed tbf: no changes"), "{out}");

    // New conditions: set in place, the nodes stay the same domains.
    std::fs::write(
        &file,
        bed(UDP_READY, r#"latency = "10ms""#, r#"latency = "50ms""#),
    )
    .unwrap();
    let out = d.apply_bed_and_wait(std::path::Path::new(path), "1m");
    assert!(out.contains("will update network tbf-net"), "{out}");
    assert!(out.contains("2 to update"), "{out}");
    assert!(out.contains("0 to replace"), "{out}");
    assert_eq!(ids(&d), before, "updated in place");
    assert_eq!(
        latencies(&d),
        [
            ("tbf-nodes-0".to_string(), Some(50.0)),
            ("tbf-nodes-1".to_string(), Some(50.0)),
            ("tbf-seed-0".to_string(), Some(10.0)),
        ]
        .into()
    );
    for i in d.client.list_instances().unwrap() {
        assert_eq!(i.state, InstanceState::Running, "{i:?}");
    }

    // A probe that never matches: the seed runs, but never counts as ready, and the nodes
    // after it are not created.
    d.ctl_ok(&["testbed", "destroy", "tbf"]);
    std::fs::write(
        &file,
        bed(
            r#"{ udp = { port = 7, send = "status", expect = "never-said" } }"#,
            r#"latency = "10ms""#,
            r#"latency = "50ms""#,
        ),
    )
    .unwrap();
    d.ctl_ok(&["testbed", "apply", "-f", path]);
    // The driver creates it shortly after the apply answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.client.get_instance("tbf-seed-0").is_err() {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    d.wait_for_state("tbf-seed-0", InstanceState::Running);
    std::thread::sleep(Duration::from_secs(5));
    let status = d.client.get_testbed("tbf").unwrap();
    assert_eq!(
        status
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.running, g.ready))
            .collect::<Vec<_>>(),
        [("seed", 1, 0), ("nodes", 0, 0)],
        "{status:?}"
    );

    d.ctl_ok(&["testbed", "destroy", "tbf"]);
    assert!(d.client.list_instances().unwrap().is_empty());
    assert!(d.own_networks().is_empty());
    let deadline = Instant::now() + Duration::from_secs(30);
    while lab_domains().keys().any(|n| n.starts_with("rhyzome-tbf-")) {
        assert!(Instant::now() < deadline, "{:?}", lab_domains());
        std::thread::sleep(Duration::from_millis(200));
    }
}
