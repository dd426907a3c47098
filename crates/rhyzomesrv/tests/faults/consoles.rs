//! Consoles followed live by several readers, and tails.

use crate::harness::{ctl_binary, udp, Daemon};
use crate::serial;
use rhyzome_testkernel::{BANNER_LINE, READY_LINE};
use std::io::Read;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn two_followers_see_the_same_live_output_until_the_instance_is_deleted() {
    let _serial = serial();
    let d = Daemon::start("fol");
    d.client
        .create_instance(&rhyzome_api::InstanceSpec {
            name: "fol-a".into(),
            kernel: d.kernel(),
            kernel_parameters: "--ipv4=192.168.100.140/24".into(),
            ..Default::default()
        })
        .unwrap();
    d.wait_for_console("fol-a", READY_LINE, 1);
    let follow = || {
        Command::new(ctl_binary())
            .args([
                "--server", &d.server, "instance", "console", "fol-a", "--follow",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut a = follow();
    let mut b = follow();
    std::thread::sleep(Duration::from_millis(500));
    // New output while they follow: the exit line.
    assert_eq!(
        udp(Ipv4Addr::new(192, 168, 100, 140), "exit 6").trim(),
        "ok"
    );
    d.wait_for_console("fol-a", "Solo5: solo5_exit(6) called", 1);
    std::thread::sleep(Duration::from_millis(500));
    d.client.delete_instance("fol-a").unwrap();
    let mut outputs = Vec::new();
    for child in [&mut a, &mut b] {
        let status = child.wait().unwrap();
        assert!(status.success(), "a follower failed: {status}");
        let mut s = String::new();
        child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        outputs.push(s);
    }
    assert_eq!(outputs[0], outputs[1]);
    assert!(outputs[0].starts_with(BANNER_LINE), "{}", outputs[0]);
    assert!(
        outputs[0]
            .trim_end()
            .ends_with("Solo5: solo5_exit(6) called"),
        "{}",
        outputs[0]
    );
}

#[test]
fn tails_and_current_run() {
    let _serial = serial();
    let d = Daemon::start("tail");
    d.client
        .create_instance(&rhyzome_api::InstanceSpec {
            name: "tail-a".into(),
            kernel: d.kernel(),
            kernel_parameters: "--name=tail-a".into(),
            network: Some(rhyzome_api::NetworkSpec {
                mode: rhyzome_api::NetworkMode::None,
                bridge: None,
                mac: None,
            }),
            ..Default::default()
        })
        .unwrap();
    d.wait_for_console("tail-a", READY_LINE, 1);
    d.ctl_ok(&["instance", "restart", "tail-a"]);
    d.wait_for_console("tail-a", READY_LINE, 2);
    let two = d.ctl_ok(&["instance", "console", "tail-a", "--tail", "2"]);
    assert_eq!(two.lines().count(), 2, "{two}");
    assert_eq!(two.lines().last(), Some(READY_LINE));
    let current = d.ctl_ok(&["instance", "console", "tail-a", "--current-run"]);
    assert_eq!(
        current.lines().filter(|l| *l == BANNER_LINE).count(),
        1,
        "{current}"
    );
    let all = d.ctl_ok(&["instance", "console", "tail-a"]);
    assert_eq!(
        all.lines().filter(|l| *l == BANNER_LINE).count(),
        2,
        "{all}"
    );
}
