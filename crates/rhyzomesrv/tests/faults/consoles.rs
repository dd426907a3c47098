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
    d.create_at("fol-a", Ipv4Addr::new(192, 168, 100, 140));
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
                ..Default::default()
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

#[test]
fn a_log_rotated_by_virtlogd_stays_bounded_and_the_current_run_stays_whole() {
    // scripts/lab.sh gives virtlogd max_size 256 KiB and max_backups 3.
    const MAX_SIZE: u64 = 256 << 10;
    let _serial = serial();
    let d = Daemon::start("rot");
    let ip = Ipv4Addr::new(192, 168, 100, 185);
    let i = d.create_at("rot-a", ip);
    d.wait_for_console("rot-a", READY_LINE, 1);
    // A second run, so that the current run starts at a non-zero offset of the log.
    assert_eq!(udp(ip, "exit 3").trim(), "ok");
    let ended = d.wait_for_state("rot-a", rhyzome_api::InstanceState::Exited);
    assert_eq!(ended.exit_code, Some(3));
    d.client.start_instance("rot-a").unwrap();
    d.wait_for_console("rot-a", READY_LINE, 2);
    // 12,000 lines of 64 bytes: 750 KiB, about three rotations.
    assert_eq!(udp(ip, "print 12000").trim(), "ok");
    let consoles = d.dir.path().join("state/consoles");
    let current = consoles.join(format!("{}.log", i.id));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&current)
        .unwrap_or_default()
        .contains("rhyzome-testkernel: printed 12000 lines")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest did not finish printing"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<(String, u64)> = std::fs::read_dir(&consoles)
        .unwrap()
        .flatten()
        .map(|e| {
            let len = e.metadata().unwrap().len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .filter(|(n, _)| n.starts_with(&i.id))
        .collect();
    assert!(
        logs.len() >= 3,
        "virtlogd did not rotate the log (is the lab's virtlogd running with scripts/lab.sh's \
         virtlogd.conf? scripts/lab.sh down && scripts/lab.sh up): {logs:?}"
    );
    assert!(logs.len() <= 4, "more than max_backups copies: {logs:?}");
    for (name, len) in &logs {
        assert!(*len <= MAX_SIZE + 4096, "{name} is {len} bytes");
    }

    // The current run began before the current file: all of it is the current run's.
    let whole = std::fs::read(&current).unwrap();
    let run = d
        .client
        .console_stream(
            "rot-a",
            &rhyzome_api::ConsoleQuery {
                current_run: Some(true),
                ..Default::default()
            },
        )
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(
        run.len(),
        whole.len(),
        "the start of the current file is missing"
    );

    // The exit code is still read after the rotations, and delete removes every copy.
    assert_eq!(udp(ip, "exit 4").trim(), "ok");
    let ended = d.wait_for_state("rot-a", rhyzome_api::InstanceState::Exited);
    assert_eq!(ended.exit_code, Some(4));
    d.client.delete_instance("rot-a").unwrap();
    let left: Vec<_> = std::fs::read_dir(&consoles)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&i.id))
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
