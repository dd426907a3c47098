//! Exit codes and restart policies on real guests.

use crate::harness::{udp, Daemon};
use crate::{ms_between, serial, EventLog};
use rhyzome_api::InstanceState;
use rhyzome_testkernel::{BANNER_LINE, READY_LINE};
use std::net::Ipv4Addr;
use std::time::Duration;

fn backoff() -> serde_json::Value {
    serde_json::json!({ "RestartBackoffMs": 200, "RestartBackoffMaxMs": 2000 })
}

#[test]
fn a_guest_exiting_with_a_failure_code_is_restarted_and_the_delay_is_measured() {
    let _serial = serial();
    let d = Daemon::start_with("rst", backoff());
    d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "rst-a",
        "--kernel",
        &d.kernel(),
        "--kernel-parameters",
        "--ipv4=192.168.100.130/24 --name=rst-a",
        "--restart",
        "on-failure:3",
    ]);
    d.wait_for_console("rst-a", READY_LINE, 1);
    let mut events = EventLog::follow(&d, "rst-a");
    assert_eq!(
        udp(Ipv4Addr::new(192, 168, 100, 130), "exit 3").trim(),
        "ok"
    );
    let exited = events.wait_for("exited", Duration::from_secs(20));
    assert_eq!(exited.exit_code, Some(3));
    assert_eq!(exited.restart_count, 1);
    let running = events.wait_for("running", Duration::from_secs(20));
    let delay = ms_between(&exited.time, &running.time);
    println!("exit noticed -> running again: {delay} ms (back-off 200 ms)");
    assert!(delay >= 200, "the back-off was not respected: {delay} ms");
    let i = d.client.get_instance("rst-a").unwrap();
    assert_eq!(
        (i.state, i.restart_count, i.exit_code),
        (InstanceState::Running, 1, None)
    );
    let console = d.wait_for_console("rst-a", READY_LINE, 2);
    assert_eq!(console.lines().filter(|l| *l == BANNER_LINE).count(), 2);

    // A clean exit is not a failure: no restart.
    assert_eq!(
        udp(Ipv4Addr::new(192, 168, 100, 130), "exit 0").trim(),
        "ok"
    );
    let i = d.wait_for_state("rst-a", InstanceState::Exited);
    assert_eq!((i.exit_code, i.next_restart_at), (Some(0), None));
    std::thread::sleep(Duration::from_millis(800));
    assert!(d.domain_id("rst-a").is_none());
}

#[test]
fn a_crash_loop_ends_failed_with_the_reason() {
    let _serial = serial();
    let d = Daemon::start_with("loop", backoff());
    d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "loop-a",
        "--kernel",
        &d.kernel(),
        "--kernel-parameters",
        "--exit-after=150 --exit-code=1",
        "--restart",
        "on-failure:2",
    ]);
    let failed = d.wait_for_state("loop-a", InstanceState::Failed);
    assert_eq!(failed.restart_count, 2);
    assert_eq!(failed.exit_code, Some(1));
    let reason = failed.last_error.unwrap();
    assert!(
        reason.contains("restart loop") && reason.contains("exited with code 1"),
        "{reason}"
    );
    assert!(d.domain_id("loop-a").is_none());
    let console = d.console("loop-a");
    assert_eq!(
        console.lines().filter(|l| *l == BANNER_LINE).count(),
        3,
        "{console}"
    );
    // It stays failed: nothing spins.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.client.get_instance("loop-a").unwrap().state,
        InstanceState::Failed
    );
    assert_eq!(
        d.console("loop-a")
            .lines()
            .filter(|l| *l == BANNER_LINE)
            .count(),
        3
    );
}

#[test]
fn exit_code_filters_decide_what_counts_as_failure() {
    let _serial = serial();
    let d = Daemon::start_with("filt", backoff());
    for (name, code) in [("filt-a", 7), ("filt-b", 3)] {
        d.ctl_ok(&[
            "instance",
            "create",
            "--name",
            name,
            "--kernel",
            &d.kernel(),
            "--kernel-parameters",
            &format!("--exit-after=150 --exit-code={code}"),
            "--restart",
            "on-failure:1",
            "--restart-exit-codes",
            "7,9",
        ]);
    }
    // 3 is not in the filter: it stays exited.
    let b = d.wait_for_state("filt-b", InstanceState::Exited);
    assert_eq!((b.exit_code, b.restart_count), (Some(3), 0));
    // 7 is: restarted once, then out of retries.
    let a = d.wait_for_state("filt-a", InstanceState::Failed);
    assert_eq!((a.exit_code, a.restart_count), (Some(7), 1));
}
