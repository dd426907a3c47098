//! A daemon killed with SIGKILL and started again loses nothing and reboots nothing.

use crate::harness::{udp, Daemon};
use rhyzome_api::InstanceState;
use rhyzome_testkernel::{BANNER_LINE, READY_LINE};
use std::net::Ipv4Addr;

#[test]
fn a_killed_daemon_restarts_without_losing_or_rebooting_anything() {
    let mut d = Daemon::start("recover");
    for (name, ip) in [("recover-a", 120), ("recover-b", 121)] {
        d.client
            .create_instance(&rhyzome_api::InstanceSpec {
                name: name.into(),
                kernel: d.kernel(),
                kernel_parameters: format!("--ipv4=192.168.100.{ip}/24 --name={name}"),
                memory_mib: None,
                vcpus: None,
                network: None,
                ..Default::default()
            })
            .unwrap();
        d.wait_for_console(name, READY_LINE, 1);
    }
    d.ctl_ok(&["instance", "stop", "recover-b"]);
    let before = d.client.list_instances().unwrap();
    let domid = d.domain_id("recover-a").unwrap();

    d.restart();

    let after = d.client.list_instances().unwrap();
    assert_eq!(after, before, "the store survived");
    assert_eq!(
        d.domain_id("recover-a").unwrap(),
        domid,
        "the running guest was adopted, not rebooted"
    );
    assert!(
        d.domain_id("recover-b").is_none(),
        "the stopped instance stays stopped"
    );
    let console = d.console("recover-a");
    assert_eq!(
        console.lines().filter(|l| *l == BANNER_LINE).count(),
        1,
        "{console}"
    );
    assert!(udp(Ipv4Addr::new(192, 168, 100, 120), "status").starts_with("name=recover-a "));
    assert_eq!(
        d.client.get_instance("recover-a").unwrap().state,
        InstanceState::Running
    );
}
