//! Ten guests of the test unikernel on one isolated managed network, addressed by the daemon
//! through `--kernel-parameters "--ipv4={cidr} --ipv4-gateway={gateway}"`: each answers ping
//! from the lab namespace at its own address, and keeps it across a daemon restart, a libvirtd
//! restart and a simulated host reboot (guests and network gone from libvirt, libvirtd
//! restarted, then the daemon starts). The DHCP host entries are in libvirt's network XML.
//!
//! Subnet 10.68.0.0/24 and names `fnet-*` are this test's own. Everything removed by hand is
//! this test's daemon's, checked by its mark first.

use crate::harness::{ping, udp, virsh, Daemon};
use crate::host::kill_libvirtd;
use crate::serial;
use rhyzome_api::InstanceState;
use rhyzome_testkernel::READY_LINE;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Generous: ten TCG guests share two cores with whatever else runs.
const PING_WAIT: Duration = Duration::from_secs(60);

/// Each guest's address, from the API, and its answer to ping and to `status` over UDP.
fn check_all(d: &Daemon, expected: &BTreeMap<String, Ipv4Addr>) {
    for (name, ip) in expected {
        let i = d.client.get_instance(name).unwrap();
        assert_eq!(
            i.network.as_ref().and_then(|n| n.ipv4.clone()),
            Some(format!("{ip}/24")),
            "{name}'s address changed"
        );
        assert_eq!(
            i.kernel_parameters_expanded,
            format!("--ipv4={ip}/24 --ipv4-gateway=10.68.0.1 --name={name}")
        );
        assert!(
            ping(*ip, PING_WAIT),
            "{name} does not answer ping at {ip}:\n{}",
            d.log()
        );
        let status = udp(*ip, "status");
        assert!(
            status.starts_with(&format!("name={name} "))
                && status.contains(&format!("ipv4={ip}/24")),
            "{name}: {status}"
        );
    }
}

#[test]
fn ten_guests_keep_their_addresses_through_daemon_libvirtd_and_host_restarts() {
    let _serial = serial();
    let mut d = Daemon::start("fnet");
    d.ctl_ok(&[
        "network",
        "create",
        "fnet-lab",
        "--subnet",
        "10.68.0.0/24",
        "--dhcp",
    ]);
    d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "fnet-g{i}",
        "--count",
        "10",
        "--kernel",
        &d.kernel(),
        "--network",
        "fnet-lab",
        "--autostart",
        "--kernel-parameters",
        "--ipv4={cidr} --ipv4-gateway={gateway} --name={name}",
    ]);
    let mut expected = BTreeMap::new();
    for i in 1..=10 {
        let name = format!("fnet-g{i}");
        let instance = d.client.get_instance(&name).unwrap();
        let cidr = instance.network.unwrap().ipv4.unwrap();
        let ip: Ipv4Addr = cidr.trim_end_matches("/24").parse().unwrap();
        expected.insert(name.clone(), ip);
        d.wait_for_console(&name, READY_LINE, 1);
    }
    let distinct: std::collections::BTreeSet<_> = expected.values().collect();
    assert_eq!(distinct.len(), 10, "{expected:?}");
    assert!(expected
        .values()
        .all(|ip| ip.octets()[..3] == [10, 68, 0] && ip.octets()[3] >= 2));
    check_all(&d, &expected);
    // The DHCP entries, one per guest, in libvirt's own XML of the network.
    let xml = String::from_utf8(virsh(&["net-dumpxml", "rhyzome-fnet-lab"]).stdout).unwrap();
    for (name, ip) in &expected {
        let mac = d.client.get_instance(name).unwrap().network.unwrap().mac;
        assert!(
            xml.contains(&format!("<host mac='{mac}' ip='{ip}'/>")),
            "no DHCP entry for {name}:\n{xml}"
        );
    }
    let shown = d.client.get_network("fnet-lab").unwrap();
    assert_eq!((shown.addresses_in_use, shown.attachments.len()), (10, 10));
    // Busy: the network cannot be removed.
    assert_eq!(
        d.client.delete_network("fnet-lab").unwrap_err().status(),
        Some(409)
    );

    // A daemon restart.
    d.restart();
    check_all(&d, &expected);

    // A libvirtd restart under the daemon.
    kill_libvirtd().restart();
    check_all(&d, &expected);

    // A simulated host reboot: the daemon dies, its guests and its network are gone from
    // libvirt, libvirtd restarts, then the daemon starts.
    d.kill();
    for name in expected.keys() {
        let domain = format!("rhyzome-{name}");
        assert!(d.marked(&domain), "{domain} is not this test's daemon's");
        assert!(virsh(&["destroy", &domain]).status.success());
    }
    assert_eq!(d.own_networks(), vec!["rhyzome-fnet-lab".to_string()]);
    assert!(virsh(&["net-destroy", "rhyzome-fnet-lab"]).status.success());
    assert!(virsh(&["net-undefine", "rhyzome-fnet-lab"])
        .status
        .success());
    kill_libvirtd().restart();
    d.start_again();
    for name in expected.keys() {
        d.wait_for_state(name, InstanceState::Running);
    }
    check_all(&d, &expected);
    let xml = String::from_utf8(virsh(&["net-dumpxml", "rhyzome-fnet-lab"]).stdout).unwrap();
    assert_eq!(xml.matches("<host ").count(), 10, "{xml}");
}
