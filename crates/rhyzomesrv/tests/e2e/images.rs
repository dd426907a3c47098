//! Images on real libvirt: `instance create --kernel-file` uploads the test unikernel, deploys
//! and boots it in one command; the image's Solo5 notes are inspected; a second push sends
//! nothing; an image in use cannot be deleted.

use crate::harness::{bridge, bridge2, ping, udp, Daemon};
use rhyzome_testkernel::READY_LINE;
use std::net::Ipv4Addr;
use std::time::Duration;

fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn kernel_file_uploads_deploys_and_boots_in_one_command() {
    let d = Daemon::start("img");
    let file = rhyzome_testkernel::kernel_path();
    let file_str = file.to_str().unwrap();
    let digest = format!("sha256:{}", sha256_of(&file));
    let out = d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "img-web",
        "--kernel-file",
        file_str,
        "--kernel-parameters",
        "--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.170/24 --name=img-web",
    ]);
    assert!(out.starts_with("created img-web (running"), "{out}");
    d.wait_for_console("img-web", READY_LINE, 1);
    let ip = Ipv4Addr::new(192, 168, 100, 170);
    assert!(ping(ip, Duration::from_secs(10)), "no ping reply from {ip}");
    assert!(udp(ip, "status").starts_with("name=img-web "));
    let i = d.client.get_instance("img-web").unwrap();
    assert_eq!(i.image.as_deref(), Some(digest.as_str()));
    assert_eq!(format!("sha256:{}", i.kernel_sha256), digest);

    // What inspection found in the test kernel's notes.
    let show = d.ctl_ok(&["image", "show", &digest]);
    for needle in [
        "32-bit ELF, multiboot v1",
        "virtio (ABI version 1)",
        "service NET_BASIC",
        "runs on libvirt: yes",
    ] {
        assert!(show.contains(needle), "missing {needle:?} in\n{show}");
    }

    // A second push of the same file sends nothing; it only adds the name.
    let out = d.ctl_ok(&["image", "push", file_str, "--name", "testkernel:v1"]);
    assert!(out.contains("nothing sent"), "{out}");
    let list = d.ctl_ok(&["image", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(list.contains("testkernel:v1"), "{list}");

    // In use: refused, naming the instance.
    let refused = d.ctl(&["image", "rm", "testkernel:v1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("img-web"), "{stderr}");

    // A second instance from the same image by name boots the same blob.
    d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "img-two",
        "--image",
        "testkernel:v1",
        "--no-network",
    ]);
    d.wait_for_console("img-two", READY_LINE, 1);

    d.ctl_ok(&["instance", "delete", "img-web", "img-two"]);
    d.ctl_ok(&["image", "rm", "testkernel:v1"]);
    assert!(d.client.list_images().unwrap().is_empty());
}

#[test]
fn an_image_with_two_network_devices_gets_a_nic_for_each_in_manifest_order() {
    let d = Daemon::start("nic2");
    let file = rhyzome_testkernel::kernel_path_2nic();
    let file = file.to_str().unwrap();
    let service = format!("service={}", bridge());
    let admin = format!("admin={}", bridge2());
    let parameters = "--ipv4=192.168.100.196/24 --admin-ipv4=192.168.101.196/24";

    let create = |nets: &[&str]| {
        let mut args = vec![
            "instance",
            "create",
            "--name",
            "nic2-a",
            "--kernel-file",
            file,
        ];
        for net in nets {
            args.extend(["--net", net]);
        }
        args.extend(["--kernel-parameters", parameters]);
        d.ctl(&args)
    };

    // Every device of the manifest needs a bridge; a missing one is named.
    let out = create(&[&service]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no bridge for the image's network device \"admin\""),
        "{err}"
    );
    assert!(d.client.list_instances().unwrap().is_empty());

    let out = create(&[&service, &admin]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = d.wait_for_console("nic2-a", READY_LINE, 1);
    let i = d.client.get_instance("nic2-a").unwrap();
    let nics: Vec<(&str, &str)> = i
        .interfaces
        .iter()
        .map(|n| (n.device.as_str(), n.bridge.as_str()))
        .collect();
    assert_eq!(
        nics,
        vec![
            ("service", bridge().as_str()),
            ("admin", bridge2().as_str())
        ]
    );
    assert!(i.interfaces[0].pci_slot < i.interfaces[1].pci_slot);
    // The guest finds them in PCI slot order, which is manifest order.
    assert!(
        console.contains(&format!("net mac={}", i.interfaces[0].mac)),
        "{console}"
    );
    assert!(
        console.contains(&format!("net1 mac={}", i.interfaces[1].mac)),
        "{console}"
    );
    for ip in [
        Ipv4Addr::new(192, 168, 100, 196),
        Ipv4Addr::new(192, 168, 101, 196),
    ] {
        assert!(ping(ip, Duration::from_secs(10)), "no ping reply from {ip}");
        assert!(udp(ip, "status").contains("uptime_ms="), "{ip}");
    }
    // Each NIC has its own counters, and each saw the traffic sent to its address.
    let stats = d.client.instance_stats("nic2-a").unwrap();
    let macs: Vec<&str> = stats.nics.iter().map(|n| n.mac.as_str()).collect();
    assert_eq!(
        macs,
        [i.interfaces[0].mac.as_str(), i.interfaces[1].mac.as_str()]
    );
    assert!(stats.nics.iter().all(|n| n.rx_packets >= 2), "{stats:?}");
    d.ctl_ok(&["instance", "delete", "nic2-a"]);
}
