//! Test beds from a file on real libvirt (issue 15): a 30-node bed of two groups comes up in
//! `after` order with every node ready, re-applying it changes nothing, a bad file creates
//! nothing, and destroy leaves no instance, network or domain.

use crate::harness::{lab_domains, Daemon};
use rhyzome_testkernel::READY_LINE;
use std::time::Duration;

fn bed_file(kernel: &str) -> String {
    format!(
        r#"name = "tb30"
seed = 7

[[networks]]
name = "tb30-net"
subnet = "10.71.0.0/24"

[[groups]]
name = "seed"
count = 1
kernel = "{kernel}"
network = "tb30-net"
kernel_parameters = "--ipv4={{cidr}} --name=seed"
memory_mib = 16
ready = {{ console = "{READY_LINE}" }}

[[groups]]
name = "nodes"
count = 29
after = ["seed"]
kernel = "{kernel}"
network = "tb30-net"
kernel_parameters = "--ipv4={{cidr}} --name=node{{i}} --peers={{peers:nodes:3}},{{group.seed.ip}}"
memory_mib = 16
ready = {{ console = "{READY_LINE}" }}
"#
    )
}

fn ms(rfc3339: &str) -> u128 {
    humantime::parse_rfc3339(rfc3339)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[test]
fn a_30_node_bed_comes_up_in_after_order_reapplies_as_no_change_and_goes() {
    let d = Daemon::start("tb30");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bed.toml");

    // A bad file: its error has a line and column, and nothing is created.
    std::fs::write(
        &file,
        bed_file(&d.kernel()).replace("count = 29", "count = 29\ncolour = 1"),
    )
    .unwrap();
    let out = d.ctl(&["testbed", "apply", "-f", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bed.toml:20:1:") && err.contains("colour"),
        "{err}"
    );
    assert!(d.client.list_instances().unwrap().is_empty());
    assert!(d.own_networks().is_empty());

    std::fs::write(&file, bed_file(&d.kernel())).unwrap();
    let started = std::time::Instant::now();
    let out = d.apply_bed_and_wait(&file, "4m");
    let up = started.elapsed();
    assert!(out.contains("30 to create"), "{out}");
    assert!(out.contains("test bed tb30: ready"), "{out}");
    eprintln!("30 nodes ready in {:.1}s", up.as_secs_f64());

    let bed = d.client.get_testbed("tb30").unwrap();
    assert!(bed.ready, "{bed:?}");
    let counts: Vec<(&str, u32, u32, u32, u32, u32)> = bed
        .groups
        .iter()
        .map(|g| {
            (
                g.name.as_str(),
                g.desired,
                g.created,
                g.running,
                g.ready,
                g.failed,
            )
        })
        .collect();
    assert_eq!(
        counts,
        vec![("seed", 1, 1, 1, 1, 0), ("nodes", 29, 29, 29, 29, 0)]
    );
    // `after`: no node was created before the seed was ready.
    let seed_ready = ms(&bed.applied_at) + u128::from(bed.groups[0].ms_to_ready.unwrap());
    let instances = d.client.list_instances().unwrap();
    assert_eq!(instances.len(), 30);
    for i in instances
        .iter()
        .filter(|i| i.name.starts_with("tb30-nodes-"))
    {
        assert!(
            ms(&i.created_at) >= seed_ready,
            "{} created at {} before the seed was ready ({seed_ready})",
            i.name,
            i.created_at
        );
        assert_eq!(i.labels["testbed"], "tb30");
        assert_eq!(i.labels["group"], "nodes");
    }
    let node = d.wait_for_console("tb30-nodes-0", READY_LINE, 1);
    assert!(!node.is_empty());

    // The same file again: no changes, nothing recreated.
    let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    let out = d.ctl_ok(&["testbed", "apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("test bed tb30: no changes"), "{out}");
    let mut again: Vec<String> = d
        .client
        .list_instances()
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    let mut before = ids.clone();
    before.sort();
    again.sort();
    assert_eq!(again, before);

    let status = d.ctl_ok(&["testbed", "status", "tb30"]);
    assert!(status.contains("nodes"), "{status}");

    // Destroy: no instance, network or domain of the bed is left.
    let started = std::time::Instant::now();
    d.ctl_ok(&["testbed", "destroy", "tb30"]);
    eprintln!(
        "30 nodes destroyed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(d.client.list_instances().unwrap().is_empty());
    assert!(d.own_networks().is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lab_domains().keys().any(|n| n.starts_with("rhyzome-tb30-")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", lab_domains());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.client.list_testbeds().unwrap().is_empty());
}
