//! libvirtd restarted under the daemon, SIGTERM, and a simulated host reboot.

use crate::harness::{
    lab, lab_libvirtd_pid, lab_up, udp, virsh, Daemon, LIBVIRTD_STOPPED_ON_PURPOSE,
};
use crate::{serial, EventLog};
use rhyzome_api::InstanceState;
use rhyzome_testkernel::{BANNER_LINE, READY_LINE};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// libvirtd, stopped by a test. Dropping it brings libvirtd back even when the test fails
/// in between, so that one failure does not take every later test down with it.
#[must_use = "libvirtd stays down until this is restarted or dropped"]
pub(crate) struct StoppedLibvirtd {
    restarted: bool,
}

impl StoppedLibvirtd {
    pub(crate) fn restart(mut self) {
        self.restarted = true;
        let up = lab_up();
        LIBVIRTD_STOPPED_ON_PURPOSE.fetch_sub(1, Ordering::SeqCst);
        if let Err(e) = up {
            panic!("scripts/lab.sh up failed:\n{e}");
        }
    }
}

impl Drop for StoppedLibvirtd {
    fn drop(&mut self) {
        if !self.restarted {
            if let Err(e) = lab_up() {
                eprintln!("could not bring libvirtd back: {e}");
            }
            LIBVIRTD_STOPPED_ON_PURPOSE.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Stops the lab's own libvirtd, by the pid `scripts/lab.sh` recorded: never a libvirtd the
/// lab did not start.
pub(crate) fn kill_libvirtd() -> StoppedLibvirtd {
    let pid = lab_libvirtd_pid()
        .expect("the lab's libvirtd is not running")
        .to_string();
    // From here on the lab's watcher leaves it down, until restart() or drop.
    LIBVIRTD_STOPPED_ON_PURPOSE.fetch_add(1, Ordering::SeqCst);
    let stopped = StoppedLibvirtd { restarted: false };
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    for _ in 0..100 {
        let alive = Command::new("kill")
            .args(["-0", &pid])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        if !alive {
            return stopped;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("libvirtd {pid} did not stop");
}

#[test]
fn a_libvirtd_restart_is_survived_and_events_resume() {
    let _serial = serial();
    lab();
    // Polling is an hour away: only events can report the exit below.
    let d = Daemon::start_with(
        "lvd",
        serde_json::json!({ "ReconcileIntervalSeconds": 3600 }),
    );
    d.create_at("lvd-a", Ipv4Addr::new(192, 168, 100, 145));
    d.wait_for_console("lvd-a", READY_LINE, 1);
    let domid = d.domain_id("lvd-a").unwrap();

    let stopped = kill_libvirtd();
    // While libvirtd is away, reads from the store still work, and lifecycle calls say so.
    assert_eq!(
        d.client.get_instance("lvd-a").unwrap().state,
        InstanceState::Running
    );
    let err = d.client.restart_instance("lvd-a").unwrap_err();
    assert_eq!(err.status(), Some(503), "{err}");
    stopped.restart();

    // The guest survived, and the daemon reconnects on its next call.
    assert_eq!(d.domain_id("lvd-a").unwrap(), domid);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while d.client.start_instance("lvd-a").is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnect:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        d.domain_id("lvd-a").unwrap(),
        domid,
        "start of a running guest is a no-op"
    );
    assert!(d.log().contains("reconnected=true"), "{}", d.log());

    // Events flow again: the exit is noticed without polling.
    let mut events = EventLog::follow(&d, "lvd-a");
    assert_eq!(
        udp(Ipv4Addr::new(192, 168, 100, 145), "exit 5").trim(),
        "ok"
    );
    let ev = events.wait_for("exited", Duration::from_secs(10));
    assert_eq!(ev.exit_code, Some(5));
}

#[test]
fn sigterm_leaves_guests_running_unless_configured_and_autostart_brings_them_back_in_order() {
    let _serial = serial();
    let mut d = Daemon::start("term");
    d.client
        .create_instance(&rhyzome_api::InstanceSpec {
            name: "term-a".into(),
            kernel: d.kernel(),
            ..Default::default()
        })
        .unwrap();
    let domid = d.domain_id("term-a").unwrap();
    d.terminate();
    assert_eq!(
        d.domain_id("term-a").as_deref(),
        Some(domid.as_str()),
        "SIGTERM left the guest"
    );
    d.start_again();
    assert_eq!(
        d.domain_id("term-a").unwrap(),
        domid,
        "adopted, not rebooted"
    );
    drop(d);

    let mut d = Daemon::start_with("boot", serde_json::json!({ "StopGuestsOnShutdown": true }));
    for (name, priority) in [("boot-web", "3"), ("boot-db", "1"), ("boot-cache", "2")] {
        d.ctl_ok(&[
            "instance",
            "create",
            "--name",
            name,
            "--kernel",
            &d.kernel(),
            "--no-network",
            "--startup-priority",
            priority,
            "--autostart",
        ]);
    }
    d.ctl_ok(&[
        "instance",
        "create",
        "--name",
        "boot-tmp",
        "--kernel",
        &d.kernel(),
        "--no-network",
    ]);
    let order = |d: &Daemon| -> Vec<u64> {
        ["boot-db", "boot-cache", "boot-web"]
            .iter()
            .map(|n| {
                d.domain_id(n)
                    .unwrap_or_else(|| panic!("{n} is not running:\n{}", d.log()))
                    .parse()
                    .unwrap()
            })
            .collect()
    };

    // SIGTERM with StopGuestsOnShutdown stops every guest.
    d.terminate();
    for n in ["boot-web", "boot-db", "boot-cache", "boot-tmp"] {
        assert!(d.domain_id(n).is_none(), "{n} survived the shutdown");
    }
    d.start_again();
    let ids = order(&d);
    assert!(
        ids[0] < ids[1] && ids[1] < ids[2],
        "not started in priority order: {ids:?}"
    );
    let tmp = d.client.get_instance("boot-tmp").unwrap();
    assert_eq!(tmp.state, InstanceState::Exited);
    assert!(tmp.last_error.unwrap().contains("vanished"));

    // A host reboot: the daemon dies, every domain is gone, libvirtd restarts, then the daemon.
    d.kill();
    for n in ["boot-web", "boot-db", "boot-cache"] {
        let domain = format!("rhyzome-{n}");
        // Only what this test's daemon made: another daemon may share the libvirt.
        assert!(d.marked(&domain), "{domain} is not this test's daemon's");
        assert!(virsh(&["destroy", &domain]).status.success());
    }
    kill_libvirtd().restart();
    d.start_again();
    let ids = order(&d);
    assert!(
        ids[0] < ids[1] && ids[1] < ids[2],
        "not started in priority order: {ids:?}"
    );
    for n in ["boot-web", "boot-db", "boot-cache"] {
        let i = d.client.get_instance(n).unwrap();
        assert_eq!(i.state, InstanceState::Running, "{n}");
        assert!(
            d.console(n).lines().any(|l| l == BANNER_LINE),
            "{n} did not boot"
        );
    }
    assert_eq!(
        d.client.get_instance("boot-tmp").unwrap().state,
        InstanceState::Exited
    );
}

/// A host reboot with a volume: the guest's data, the daemon's own pool (persistent and
/// autostarted in libvirt) and the attachment all come back with the autostarted guest.
#[test]
fn a_host_reboot_keeps_a_volume_and_its_data() {
    let _serial = serial();
    let mut d = Daemon::start("rebootvol");
    d.client
        .create_volume(&rhyzome_api::VolumeSpec {
            name: "keep".into(),
            size_bytes: Some(8 << 20),
            ..Default::default()
        })
        .unwrap();
    d.client
        .push_image(
            &rhyzome_testkernel::kernel_path_block(),
            Some("blk"),
            &mut |_, _, _| {},
        )
        .unwrap();
    let ip = Ipv4Addr::new(192, 168, 100, 155);
    d.client
        .create_instance(&rhyzome_api::InstanceSpec {
            name: "rebootvol-a".into(),
            image: Some("blk".into()),
            kernel_parameters: format!("--ipv4={ip}/24 --blk-read=1"),
            autostart: Some(true),
            volumes: Some(
                [(
                    "storage".to_string(),
                    rhyzome_api::VolumeMount {
                        volume: "keep".into(),
                        read_only: false,
                    },
                )]
                .into(),
            ),
            ..Default::default()
        })
        .unwrap();
    d.wait_for_console("rebootvol-a", READY_LINE, 1);
    let reply = udp(ip, "blk-write 1 survived-the-reboot");
    assert!(reply.contains("ok"), "{reply}");

    // The daemon dies, the guest goes with the host, libvirtd restarts, then the daemon.
    d.kill();
    let domain = "rhyzome-rebootvol-a";
    assert!(d.marked(domain), "{domain} is not this test's daemon's");
    assert!(virsh(&["destroy", domain]).status.success());
    kill_libvirtd().restart();
    let pool = virsh(&["pool-info", &d.volume_pool()]);
    let pool = String::from_utf8_lossy(&pool.stdout).to_string();
    assert!(
        pool.contains("running"),
        "libvirt autostarted the pool:\n{pool}"
    );
    d.start_again();
    d.wait_for_state("rebootvol-a", InstanceState::Running);
    let console = d.wait_for_console(
        "rebootvol-a",
        "rhyzome-testkernel: block read sector=1 text=\"survived-the-reboot\"",
        1,
    );
    assert!(console.contains("read_only=0"), "{console}");
    d.client.delete_instance("rebootvol-a").unwrap();
    d.client.delete_volume("keep").unwrap();
}
