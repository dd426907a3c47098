//! The daemon as an unprivileged user in the `libvirt` group, as docs/security.md recommends:
//! it boots guests, reads their consoles (and so their exit codes), recovers from a console
//! log that virtlogd re-created as root, and cleans up.

use crate::harness::{lab_user, ping, udp, Daemon};
use rhyzome_api::InstanceState;
use rhyzome_testkernel::READY_LINE;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

#[test]
fn the_daemon_runs_as_an_unprivileged_member_of_the_libvirt_group() {
    let d = Daemon::start_unprivileged("unpriv");
    let (uid, _) = lab_user();
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid().unwrap())).unwrap();
    let real_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert_eq!(
        real_uid,
        uid.to_string(),
        "the daemon is not running as rhyzome-e2e"
    );
    assert_ne!(uid, 0);

    let ip = Ipv4Addr::new(192, 168, 100, 180);
    let i = d.create_at("unpriv-a", ip);
    d.wait_for_console("unpriv-a", READY_LINE, 1);
    assert!(ping(ip, Duration::from_secs(10)), "no ping reply from {ip}");

    // The console log belongs to the daemon's user, though virtlogd (root) writes it.
    let log = d.dir.path().join(format!("state/consoles/{}.log", i.id));
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), uid);

    // The exit code comes from the console, so this proves the daemon can read it.
    assert_eq!(udp(ip, "exit 3").trim(), "ok");
    let ended = d.wait_for_state("unpriv-a", InstanceState::Exited);
    assert_eq!(ended.exit_code, Some(3), "{}", d.log());

    // What virtlogd leaves after rotating a log: a new file, root's and 0600. The daemon says
    // why it cannot read it, and the next start gives the instance a readable log again.
    std::os::unix::fs::chown(&log, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = d.client.console("unpriv-a", None).unwrap_err().to_string();
    assert!(
        err.contains("permission denied to the daemon's user"),
        "{err}"
    );
    d.ctl_ok(&["instance", "start", "unpriv-a"]);
    d.wait_for_console("unpriv-a", READY_LINE, 1);
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), uid);
    let aside = log.with_extension("log.root");
    assert!(aside.exists(), "the unreadable log was not kept");

    d.ctl_ok(&["instance", "delete", "unpriv-a"]);
    assert!(!d.has_domain("unpriv-a"));
    assert!(!log.exists() && !aside.exists());
}
