//! A test bed in one command on real libvirt: `instance create --count` with templated
//! addresses, every node answering on the bridge, then `instance delete --prefix`.

use crate::harness::{ping, udp, Daemon};
use rhyzome_testkernel::READY_LINE;
use std::net::Ipv4Addr;
use std::time::Duration;

#[test]
fn a_test_bed_comes_up_in_one_command_and_goes_in_another() {
    let d = Daemon::start("bed");
    let kernel = d.kernel();
    let out = d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "bed-node",
        "--count",
        "5",
        "--kernel",
        &kernel,
        "--kernel-parameters",
        "--ipv4 192.168.100.{i+189}/24 --name=node{i}",
    ]);
    assert!(out.contains("created 5 of 5 instances"), "{out}");
    for i in 1..=5u8 {
        let name = format!("bed-node-{i}");
        d.wait_for_console(&name, READY_LINE, 1);
        let ip = Ipv4Addr::new(192, 168, 100, 189 + i);
        assert!(
            ping(ip, Duration::from_secs(10)),
            "{name}: no ping reply from {ip}"
        );
        let status = udp(ip, "status");
        assert!(
            status.starts_with(&format!("name=node{i} ")),
            "{name}: {status}"
        );
    }

    let out = d.ctl_ok(&["instance", "delete", "--prefix", "bed-node-"]);
    assert_eq!(out.lines().filter(|l| l.starts_with("deleted ")).count(), 5);
    for i in 1..=5 {
        let name = format!("bed-node-{i}");
        assert!(!d.has_domain(&name), "the domain of {name} is left");
    }
    assert!(d.client.list_instances().unwrap().is_empty());
}
