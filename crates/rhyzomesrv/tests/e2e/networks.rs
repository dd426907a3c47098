//! Managed networks on the lab's libvirt: a create makes a libvirt network and its bridge
//! inside the lab namespace, `rm` removes both; bad requests are 422s naming the field and
//! leave nothing in libvirt; a network libvirt lost comes back when the daemon starts; and a
//! daemon never removes a network it did not make.
//!
//! Subnets 10.61.0.0/16 to 10.69.0.0/16 and network names `e2e-n*` are these tests' own.
//! The one network made by hand (with `virsh net-create`) is destroyed by the test, by name.

use crate::harness::{lab_interface_addresses, lab_network, virsh, Daemon};
use rhyzome_api::client::ClientError;
use rhyzome_api::{ForwardMode, NetworkCreate};

fn request(name: &str, subnet: &str) -> NetworkCreate {
    NetworkCreate {
        name: name.into(),
        subnet: subnet.into(),
        gateway: None,
        mode: None,
        dhcp: None,
        emulated: None,
        seed: None,
        link: None,
    }
}

/// The status and field of a refused call.
fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, Option<String>, String) {
    match r.expect_err("refused") {
        ClientError::Api { status, body } => (status, body.field, body.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[test]
fn a_network_gets_its_libvirt_network_and_bridge_and_rm_removes_both() {
    let d = Daemon::start("e2e-n1");
    let out = d.ctl_ok(&[
        "network",
        "create",
        "e2e-n1-lab",
        "--subnet",
        "10.61.0.0/24",
        "--mode",
        "isolated",
    ]);
    assert!(out.contains("created network e2e-n1-lab"), "{out}");
    let n = d.client.get_network("e2e-n1-lab").unwrap();
    assert!(n.active, "{n:?}");
    assert_eq!(
        (n.gateway.as_str(), n.mode),
        ("10.61.0.1", ForwardMode::Isolated)
    );
    assert_eq!(lab_network("rhyzome-e2e-n1-lab"), Some(true));
    assert_eq!(
        lab_interface_addresses(&n.bridge),
        Some(vec!["10.61.0.1/24".to_string()]),
        "the bridge and its gateway address are in the lab namespace"
    );
    assert_eq!(d.own_networks(), vec!["rhyzome-e2e-n1-lab".to_string()]);
    let list = d.ctl_ok(&["network", "list"]);
    assert!(
        list.contains("e2e-n1-lab") && list.contains("10.61.0.0/24"),
        "{list}"
    );
    let show = d.ctl_ok(&["network", "show", "e2e-n1-lab"]);
    assert!(show.contains(&n.bridge) && show.contains("253"), "{show}");

    d.ctl_ok(&["network", "rm", "e2e-n1-lab"]);
    assert_eq!(lab_network("rhyzome-e2e-n1-lab"), None);
    assert_eq!(
        lab_interface_addresses(&n.bridge),
        None,
        "the bridge is gone"
    );
    assert_eq!(
        refusal(d.client.get_network("e2e-n1-lab")).0,
        404,
        "the record is gone"
    );
}

#[test]
fn bad_networks_are_422s_naming_the_field_and_leave_nothing() {
    let d = Daemon::start("e2e-n2");
    d.client
        .create_network(&request("e2e-n2-ok", "10.62.0.0/24"))
        .unwrap();
    let mut outside = request("e2e-n2-b", "10.62.1.0/24");
    outside.gateway = Some("10.62.2.1".into());
    let cases = [
        // The lab bridge's own subnet: an address on the libvirt host.
        (request("e2e-n2-a", "192.168.100.0/24"), "subnet"),
        // Around it: libvirt's own check misses this one, the daemon's does not.
        (request("e2e-n2-a", "192.168.96.0/20"), "subnet"),
        // Inside a managed network.
        (request("e2e-n2-a", "10.62.0.128/25"), "subnet"),
        (outside, "gateway"),
        (request("e2e-n2-a", "10.62.3.0/31"), "subnet"),
        (request("e2e-n2-a", "10.62.3.1/24"), "subnet"),
        (request("E2E_bad", "10.62.4.0/24"), "name"),
    ];
    for (req, field) in cases {
        let what = format!("{req:?}");
        let (status, got, message) = refusal(d.client.create_network(&req));
        assert_eq!(
            (status, got.as_deref()),
            (422, Some(field)),
            "{what}: {message}"
        );
        if what.contains("192.168.") {
            assert!(message.contains("\"rzbr0\""), "{what}: {message}");
        }
    }
    // The CLI refuses the same before sending.
    let out = d.ctl(&["network", "create", "e2e-n2-c", "--subnet", "10.62.5.0/33"]);
    assert!(!out.status.success());
    assert_eq!(d.own_networks(), vec!["rhyzome-e2e-n2-ok".to_string()]);
    for name in ["rhyzome-e2e-n2-a", "rhyzome-e2e-n2-b", "rhyzome-E2E_bad"] {
        assert_eq!(lab_network(name), None, "{name} was left in libvirt");
    }
    let names: Vec<String> = d
        .client
        .list_networks()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["e2e-n2-ok".to_string()]);
}

#[test]
fn a_lost_network_comes_back_and_others_networks_are_left_alone() {
    let mut a = Daemon::start("e2e-n3a");
    let mut b = Daemon::start("e2e-n3b");
    let mut req = request("e2e-n3-lab", "10.63.0.0/24");
    req.dhcp = Some(true);
    let n = a.client.create_network(&req).unwrap();
    // The name and the subnet are a's: b is refused both, and its restart leaves them.
    assert_eq!(
        refusal(
            b.client
                .create_network(&request("e2e-n3-lab", "10.64.0.0/24"))
        )
        .0,
        409
    );
    let (status, field, _) = refusal(
        b.client
            .create_network(&request("e2e-n3-b", "10.63.0.0/16")),
    );
    assert_eq!((status, field.as_deref()), (422, Some("subnet")));
    // A network under rhyzome's prefix that no daemon made, made here by hand.
    let stranger = "rhyzome-e2e-n3-stranger";
    let file = a.dir.path().join("stranger.xml");
    std::fs::write(
        &file,
        format!(
            "<network><name>{stranger}</name><bridge name='rzn-e2e-n3s'/>\
             <ip address='10.65.0.1' prefix='24'/></network>"
        ),
    )
    .unwrap();
    let made = virsh(&["net-create", file.to_str().unwrap()]);
    assert!(made.status.success(), "{made:?}");
    b.restart();
    a.restart();
    assert_eq!(
        lab_network(stranger),
        Some(true),
        "another's network was removed"
    );
    assert_eq!(lab_network("rhyzome-e2e-n3-lab"), Some(true));

    // A simulated host reboot for networks: the daemon is down, libvirt loses the network.
    a.kill();
    let gone = virsh(&["net-destroy", "rhyzome-e2e-n3-lab"]);
    assert!(gone.status.success(), "{gone:?}");
    let gone = virsh(&["net-undefine", "rhyzome-e2e-n3-lab"]);
    assert!(gone.status.success(), "{gone:?}");
    assert_eq!(lab_interface_addresses(&n.bridge), None);
    a.start_again();
    assert_eq!(lab_network("rhyzome-e2e-n3-lab"), Some(true), "{}", a.log());
    assert_eq!(
        lab_interface_addresses(&n.bridge),
        Some(vec!["10.63.0.1/24".to_string()])
    );
    assert!(a.client.get_network("e2e-n3-lab").unwrap().active);
    // b's start-up pass again leaves a's network and the stranger alone.
    b.restart();
    assert_eq!(lab_network("rhyzome-e2e-n3-lab"), Some(true));
    assert_eq!(lab_network(stranger), Some(true));
    let removed = virsh(&["net-destroy", stranger]);
    assert!(removed.status.success(), "{removed:?}");
}

#[test]
fn twenty_concurrent_creates_get_distinct_addresses_and_a_released_one_is_reused() {
    let d = Daemon::start("e2e-n5");
    d.client
        .create_network(&request("e2e-n5-lab", "10.66.0.0/24"))
        .unwrap();
    d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "e2e-n5-g{i}",
        "--count",
        "20",
        "--parallel",
        "20",
        "--kernel",
        &d.kernel(),
        "--network",
        "e2e-n5-lab",
        "--kernel-parameters",
        "--ipv4={cidr} --ipv4-gateway={gateway}",
    ]);
    let address = |name: &str| {
        d.client
            .get_instance(name)
            .unwrap()
            .network
            .and_then(|n| n.ipv4)
            .unwrap()
    };
    let mut all: Vec<String> = (1..=20).map(|i| address(&format!("e2e-n5-g{i}"))).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 20, "{all:?}");
    let first = address("e2e-n5-g1");
    // Held until released: a new instance gets another address...
    let before = d
        .client
        .create_instance(&on_network(&d, "e2e-n5-x", "e2e-n5-lab"))
        .unwrap();
    assert!(!all.contains(before.network.as_ref().unwrap().ipv4.as_ref().unwrap()));
    // ...and once g1 is deleted, its address is free for the next one (the lowest free).
    d.client.delete_instance("e2e-n5-g1").unwrap();
    let after = d
        .client
        .create_instance(&on_network(&d, "e2e-n5-y", "e2e-n5-lab"))
        .unwrap();
    assert_eq!(after.network.unwrap().ipv4.unwrap(), first);
    // An address asked for that is taken is a 409; the gateway a 422.
    let mut taken = on_network(&d, "e2e-n5-z", "e2e-n5-lab");
    taken.network.as_mut().unwrap().ipv4 = Some(first.trim_end_matches("/24").into());
    assert_eq!(refusal(d.client.create_instance(&taken)).0, 409);
    taken.network.as_mut().unwrap().ipv4 = Some("10.66.0.1".into());
    let (status, field, _) = refusal(d.client.create_instance(&taken));
    assert_eq!((status, field.as_deref()), (422, Some("network.ipv4")));
    assert!(!d.has_domain("e2e-n5-z"));
    // In use: the network stays, with its bridge.
    assert_eq!(refusal(d.client.delete_network("e2e-n5-lab")).0, 409);
    assert_eq!(lab_network("rhyzome-e2e-n5-lab"), Some(true));
}

fn on_network(d: &Daemon, name: &str, network: &str) -> rhyzome_api::InstanceSpec {
    rhyzome_api::InstanceSpec {
        name: name.into(),
        kernel: d.kernel(),
        kernel_parameters: "--ipv4={cidr} --ipv4-gateway={gateway}".into(),
        network: Some(rhyzome_api::NetworkSpec {
            name: Some(network.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn a_device_of_a_two_nic_image_joins_a_managed_network_by_name() {
    let d = Daemon::start("e2e-n6");
    d.client
        .create_network(&request("e2e-n6-lab", "10.67.0.0/24"))
        .unwrap();
    let file = rhyzome_testkernel::kernel_path_2nic();
    let admin = format!("admin={}", crate::harness::bridge2());
    let create = |name: &str, parameters: &str| {
        d.ctl(&[
            "instance",
            "create",
            "--name",
            name,
            "--kernel-file",
            file.to_str().unwrap(),
            "--net",
            "service=e2e-n6-lab",
            "--net",
            &admin,
            "--kernel-parameters",
            parameters,
        ])
    };
    // The admin NIC is on a host bridge: it has no address to fill in.
    let out = create(
        "e2e-n6-bad",
        "--ipv4={service.cidr} --admin-ipv4={admin.cidr}",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("{admin.cidr}"), "{err}");
    assert!(!d.has_domain("e2e-n6-bad"));

    let out = create(
        "e2e-n6-a",
        "--ipv4={service.cidr} --ipv4-gateway={service.gateway} --admin-ipv4=192.168.101.198/24",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_for_console("e2e-n6-a", rhyzome_testkernel::READY_LINE, 1);
    let i = d.client.get_instance("e2e-n6-a").unwrap();
    let service = &i.attachments[0];
    assert_eq!(
        (
            service.device.as_deref(),
            service.network.as_deref(),
            service.ipv4.as_deref()
        ),
        (Some("service"), Some("e2e-n6-lab"), Some("10.67.0.2/24"))
    );
    assert_eq!(
        (
            i.attachments[1].network.as_ref(),
            i.attachments[1].ipv4.as_ref()
        ),
        (None, None)
    );
    assert!(i
        .kernel_parameters_expanded
        .starts_with("--ipv4=10.67.0.2/24 --ipv4-gateway=10.67.0.1 "));
    assert!(
        crate::harness::ping(
            "10.67.0.2".parse().unwrap(),
            std::time::Duration::from_secs(30)
        ),
        "no ping reply on the managed network:\n{}",
        d.log()
    );
}
