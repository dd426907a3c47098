//! Networks across two hosts (issue 20). An emulated network: a 20-node gossip test bed spread over the
//! lab's libvirtd and host 2, whose guests' NICs are `<interface type='udp'>` toward the
//! daemon's link emulator, at its `LinkEmulatorAddress` across the veth pair between the
//! hosts. A rumor injected at the seed from the emulator's tap reaches every node on both
//! hosts, guests probe each other across the hosts, a latency set at run time on a remote
//! guest applies to it, and a partition by labels cuts remote guests off. A managed network,
//! with host 2 driven over TLS: one pool of addresses, host 2's copy of the libvirt network
//! made for its first guest there and removed after its last; a revoked client certificate
//! makes host 2 unreachable for that controller.

use super::emulated::{guest, probe};
use super::gossip::{gossip_bed, ip_of};
use crate::harness::*;
use rhyzome_testkernel::RUMOR_RESULT_PREFIX;
use std::net::SocketAddrV4;
use std::time::Instant;

const NODES: usize = 19;

fn bed_file(kernel: &str) -> String {
    gossip_bed("xh", 11, "10.79.0.0/24", NODES, true, kernel)
}

#[test]
fn a_gossip_bed_spread_over_two_hosts_shares_one_emulated_network() {
    lab();
    let _host2 = host2_lock();
    lab_command("host2-start");
    let netns = netns();
    let d = Daemon::start_with(
        "xhost",
        serde_json::json!({
            "LibvirtURI": null,
            "LinkEmulator": super::links::emulator_binary(),
            "LinkEmulatorNetns": format!("/run/netns/{netns}"),
            "LinkEmulatorAddress": emulator_address(),
            "Hosts": [
                {"Name": "local", "URI": libvirt_uri()},
                {"Name": "h2", "URI": host2_uri(), "Insecure": true,
                 "FrameAddress": host2_frame_address()},
            ],
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("xh.toml");
    std::fs::write(&file, bed_file(&d.kernel())).unwrap();
    let applied = Instant::now();
    d.apply_bed_and_wait(&file, "5m");
    eprintln!(
        "20 nodes over two hosts ready {:.1}s after apply",
        applied.elapsed().as_secs_f64()
    );

    // Spread: both hosts carry nodes, as `testbed status` says.
    let status = d.client.get_testbed("xh").unwrap();
    let nodes = status.groups.iter().find(|g| g.name == "nodes").unwrap();
    assert_eq!(nodes.hosts.values().sum::<u32>(), NODES as u32);
    assert!(
        nodes.hosts.get("local").copied().unwrap_or(0) >= 8
            && nodes.hosts.get("h2").copied().unwrap_or(0) >= 8,
        "spread over both hosts: {:?}",
        nodes.hosts
    );
    let printed = d.ctl_ok(&["testbed", "status", "xh"]);
    assert!(
        printed.contains("h2=") && printed.contains("local="),
        "{printed}"
    );

    let instances = d.client.list_instances().unwrap();
    assert_eq!(instances.len(), 1 + NODES);
    let on = |host: &str| -> Vec<&rhyzome_api::Instance> {
        instances
            .iter()
            .filter(|i| i.placement.as_ref().is_some_and(|p| p.host == host))
            .collect()
    };
    // A remote guest's NIC sends to the emulator's address between the hosts, from host 2's.
    let remote = on("h2")[0];
    let out = virsh_host2(&["dumpxml", &format!("rhyzome-{}", remote.name)]);
    let xml = String::from_utf8_lossy(&out.stdout);
    assert!(
        xml.contains("type='udp'")
            && xml.contains(&format!("address='{}'", emulator_address()))
            && xml.contains(&format!("address='{}'", host2_frame_address())),
        "{xml}"
    );
    let ip_of = |name: &str| ip_of(&instances, name);

    // The rumor, from the emulator's tap in the lab namespace to the seed, reaches every node
    // on both hosts.
    let injected = Instant::now();
    rhyzome_testkernel::udp_send_in(
        &netns,
        SocketAddrV4::new(ip_of("xh-seed-0"), rhyzome_testkernel::GOSSIP_PORT),
        b"rumor xhost 0 0",
    )
    .unwrap();
    for i in &instances {
        let console = d.wait_for_console(&i.name, RUMOR_RESULT_PREFIX, 1);
        assert!(console.contains("rumor=xhost"), "{}: {console}", i.name);
    }
    eprintln!(
        "rumor seen on all {} guests ({} on h2) {:.1}s after injection",
        1 + NODES,
        on("h2").len(),
        injected.elapsed().as_secs_f64()
    );

    // Guest to guest across the hosts, both ways through the emulator; a latency set on
    // the remote node at run time applies to what it sends, as on one host.
    let local = guest(&d, &on("local")[1].name);
    let far_name = on("h2")[0].name.clone();
    let far = guest(&d, &far_name);
    let (received, base, _) = probe(&local, &far, 20, 50);
    assert_eq!(received, 20, "local -> h2 -> local");
    d.ctl_ok(&["instance", "link", &far_name, "latency=40ms"]);
    let (received, slow, _) = probe(&local, &far, 20, 100);
    eprintln!("round trip local <-> h2: {base:.2} ms, with 40 ms on the h2 node: {slow:.2} ms");
    assert_eq!(received, 20);
    assert!(
        (20.0..80.0).contains(&(slow - base)),
        "shortest round trip {slow:.2} ms with 40 ms on {far_name}, {base:.2} ms without"
    );

    // A partition by labels holds for remote guests' ports too; heal restores.
    let seed = guest(&d, "xh-seed-0");
    d.ctl_ok(&[
        "network",
        "partition",
        "xh-net",
        "--between",
        "group=seed",
        "group=nodes",
    ]);
    assert_eq!(probe(&seed, &far, 10, 50).0, 0, "seed -> h2 node is cut");
    d.ctl_ok(&["network", "heal", "xh-net"]);
    assert_eq!(probe(&seed, &far, 10, 50).0, 10, "healed");

    d.ctl_ok(&["testbed", "destroy", "xh"]);
    assert!(d.client.list_instances().unwrap().is_empty());
    assert!(
        !String::from_utf8_lossy(&virsh_host2(&["list", "--name"]).stdout).contains("rhyzome-xh-"),
        "nothing of the bed is left on h2"
    );
}

/// Host 2's libvirt networks (all, with `--all`, or the active ones).
fn host2_networks(all: bool) -> Vec<String> {
    let mut args = vec!["net-list", "--name"];
    if all {
        args.push("--all");
    }
    let out = virsh_host2(&args);
    assert!(out.status.success(), "virsh net-list on h2: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A client certificate signed by host 2's CA but not admitted by its `tls_allowed_dn_list`
/// (a controller whose access was revoked): its `pkipath` directory.
fn refused_client(dir: &std::path::Path) -> std::path::PathBuf {
    let pki = host2_tls_uri()
        .split_once("pkipath=")
        .map(|(_, p)| std::path::PathBuf::from(p))
        .expect("a pkipath in the TLS URI");
    let ca = pki.parent().unwrap().join("ca");
    std::fs::create_dir(dir.join("ca")).unwrap();
    for file in ["cacert.pem", "cakey.pem"] {
        std::fs::copy(ca.join(file), dir.join("ca").join(file)).unwrap();
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/hosts-pki.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .args(["client", dir.to_str().unwrap(), "revoked"])
        .output()
        .unwrap();
    assert!(out.status.success(), "hosts-pki.sh client: {out:?}");
    dir.join("client-revoked")
}

/// Over TLS, as docs/hosts-tls.md sets it up: host 2 is driven with the lab's client
/// certificate, and a controller whose certificate host 2 does not admit finds it
/// unreachable with libvirt's reason.
#[test]
fn a_managed_network_is_one_address_space_over_two_hosts() {
    lab();
    let _host2 = host2_lock();
    lab_command("host2-start");
    let pki = tempfile::tempdir().unwrap();
    let revoked = format!(
        "{}?pkipath={}",
        host2_tls_uri().split('?').next().unwrap(),
        refused_client(pki.path()).display()
    );
    let d = Daemon::start_with(
        "xlan",
        serde_json::json!({
            "LibvirtURI": null,
            "Hosts": [
                {"Name": "local", "URI": libvirt_uri()},
                {"Name": "h2", "URI": host2_tls_uri()},
                {"Name": "revoked", "URI": revoked},
            ],
        }),
    );
    let hosts = d.client.list_hosts().unwrap();
    assert!(hosts[1].reachable, "h2 over TLS: {:?}", hosts[1]);
    assert!(!hosts[2].reachable);
    let error = hosts[2].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("certificate") || error.contains("TLS") || error.contains("authentication"),
        "{error}"
    );
    assert_eq!(
        hosts[2].uri,
        host2_tls_uri().split('?').next().unwrap(),
        "the key path is not shown"
    );
    d.ctl_ok(&[
        "network",
        "create",
        "xlan",
        "--subnet",
        "10.81.0.0/24",
        "--mode",
        "isolated",
    ]);
    let libvirt_name = "rhyzome-xlan".to_string();
    assert_eq!(lab_network(&libvirt_name), Some(true), "on the primary");
    assert!(
        !host2_networks(true).contains(&libvirt_name),
        "not on h2 before an instance there needs it"
    );
    let on = |name: &str, host: &str| {
        d.client
            .create_instance(&rhyzome_api::InstanceSpec {
                name: name.into(),
                kernel: d.kernel(),
                kernel_parameters: "--ipv4={cidr}".into(),
                host: Some(host.into()),
                network: Some(rhyzome_api::NetworkSpec {
                    name: Some("xlan".into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("create {name} on {host}: {e}\n{}", d.log()))
    };
    // Addresses come from one pool, whichever host the guest runs on.
    let mut addresses = Vec::new();
    for (name, host) in [("xlan-a", "local"), ("xlan-b", "h2"), ("xlan-c", "h2")] {
        let i = on(name, host);
        assert_eq!(i.placement.as_ref().unwrap().host, host);
        addresses.push(i.network.unwrap().ipv4.unwrap());
    }
    assert_eq!(addresses, ["10.81.0.2/24", "10.81.0.3/24", "10.81.0.4/24"]);
    // h2 got the same network (its bridge carries the gateway in host 2's namespace), and its
    // guest answers there at the address the controller gave it.
    assert!(host2_networks(false).contains(&libvirt_name));
    let xml = virsh_host2(&["net-dumpxml", &libvirt_name]);
    let xml = String::from_utf8_lossy(&xml.stdout);
    assert!(
        xml.contains("address='10.81.0.1'") && xml.contains("rhyzome"),
        "{xml}"
    );
    d.wait_for_console("xlan-b", rhyzome_testkernel::READY_LINE, 1);
    let reply = rhyzome_testkernel::udp_request_in(
        &host2_netns(),
        SocketAddrV4::new("10.81.0.3".parse().unwrap(), rhyzome_testkernel::UDP_PORT),
        b"status",
        std::time::Duration::from_secs(10),
    )
    .expect("xlan-b answers on h2's copy of the network");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.contains("ipv4=10.81.0.3/24"), "{reply}");

    // The network leaves h2 once no instance there is on it; `network rm` then removes it.
    d.client.delete_instance("xlan-b").unwrap();
    assert!(
        host2_networks(true).contains(&libvirt_name),
        "xlan-c still needs it"
    );
    d.client.delete_instance("xlan-c").unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while host2_networks(true).contains(&libvirt_name) {
        assert!(Instant::now() < deadline, "the network stayed on h2");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    d.client.delete_instance("xlan-a").unwrap();
    d.ctl_ok(&["network", "rm", "xlan"]);
    assert_eq!(lab_network(&libvirt_name), None);
}
