//! Restart policies on real guests that end by themselves: `always[:N]` restarts even a
//! clean exit and gives up after N restarts in a row, and a run of at least
//! `RestartStableSeconds` resets that count. (Failure-code policies and back-off timing are
//! in the faults suite.)

use crate::harness::Daemon;
use rhyzome_api::InstanceState;
use rhyzome_testkernel::BANNER_LINE;
use std::time::Duration;

fn banners(console: &str) -> usize {
    console.lines().filter(|l| *l == BANNER_LINE).count()
}

#[test]
fn restart_always_restarts_clean_exits_and_gives_up_after_n_in_a_row() {
    let d = Daemon::start_with(
        "ralw",
        serde_json::json!({ "RestartBackoffMs": 200, "RestartBackoffMaxMs": 2000 }),
    );
    d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "ralw-a",
        "--kernel",
        &d.kernel(),
        "--kernel-parameters",
        "--exit-after=150 --exit-code=0",
        "--restart",
        "always:2",
    ]);
    // Runs of 150 ms are far from the default 60 s of stability: the count only grows.
    let failed = d.wait_for_state("ralw-a", InstanceState::Failed);
    assert_eq!((failed.restart_count, failed.exit_code), (2, Some(0)));
    let reason = failed.last_error.unwrap();
    assert!(
        reason.contains("restart loop")
            && reason.contains("exited with code 0")
            && reason.contains("max_retries 2"),
        "{reason}"
    );
    let console = d.console("ralw-a");
    assert_eq!(banners(&console), 3, "one run and two restarts:\n{console}");
    assert!(d.domain_id("ralw-a").is_none());
}

#[test]
fn a_run_longer_than_restart_stable_seconds_resets_the_restart_count() {
    let d = Daemon::start_with(
        "rstb",
        serde_json::json!({
            "RestartBackoffMs": 200,
            "RestartBackoffMaxMs": 2000,
            "RestartStableSeconds": 1,
        }),
    );
    // Each run lasts 1.5 s, longer than the 1 s of stability: every restart is the first of
    // a new series, so `always:1` never gives up.
    d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "rstb-a",
        "--kernel",
        &d.kernel(),
        "--kernel-parameters",
        "--exit-after=1500 --exit-code=0",
        "--restart",
        "always:1",
    ]);
    // Four runs are three restarts, two more than max_retries 1 allows in a row. Each run is
    // a boot, 1.5 s and a back-off: on two cores busy with other tests' beds that can take
    // longer than the usual 30 s.
    let console = d.wait_for_console_within("rstb-a", BANNER_LINE, 4, Duration::from_secs(90));
    assert!(banners(&console) >= 4, "{console}");
    let i = d.client.get_instance("rstb-a").unwrap();
    assert_ne!(i.state, InstanceState::Failed, "{:?}", i.last_error);
    assert!(
        i.restart_count <= 1,
        "the count was not reset: {}",
        i.restart_count
    );
}
