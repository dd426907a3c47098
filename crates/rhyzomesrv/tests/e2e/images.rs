//! Images on real libvirt: `instance create --kernel-file` uploads the test unikernel, deploys
//! and boots it in one command; the image's Solo5 notes are inspected; a second push sends
//! nothing; an image in use cannot be deleted.

use crate::harness::{ping, udp, Daemon};
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
