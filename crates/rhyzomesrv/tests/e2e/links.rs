//! Link conditions on a plain network (a lab bridge) with real libvirt: what a bridge can
//! not honour is refused before anything is made, and a rate, which libvirt shapes with tc,
//! is refused with the field named when this host's kernel lacks tc's modules (this lab's
//! kernel has neither `act_police` nor `sch_sfq`), leaving no domain and no record.

use crate::harness::Daemon;
use rhyzome_api::client::ClientError;
use rhyzome_api::InstanceSpec;

fn refused(result: Result<rhyzome_api::Instance, ClientError>) -> (u16, rhyzome_api::ErrorBody) {
    match result {
        Err(ClientError::Api { status, body }) => (status, body),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn a_plain_network_refuses_what_it_cannot_shape_and_leaves_nothing() {
    let d = Daemon::start("link");
    let spec = |name: &str, text: &str| InstanceSpec {
        name: name.into(),
        kernel: d.kernel(),
        kernel_parameters: "--ipv4=192.168.100.121/24".into(),
        link: Some(rhyzome_api::validate::parse_conditions(text).unwrap()),
        ..Default::default()
    };
    let (status, body) = refused(d.client.create_instance(&spec("link-a", "latency=50ms")));
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("link.latency_ms"))
    );
    assert!(
        body.message.contains("emulated network"),
        "{}",
        body.message
    );

    let (status, body) = refused(d.client.create_instance(&spec("link-b", "rate=1mbit")));
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("link.rate_bps")),
        "{body:?}\n{}",
        d.log()
    );
    eprintln!("refusal: {}", body.message);
    assert!(body.message.contains("tc"), "{}", body.message);
    assert!(!d.has_domain("link-b"));
    assert!(d.client.get_instance("link-b").is_err());
}

/// `rhyzome-linkemu`, built next to this test binary (by `cargo build --workspace`).
pub fn emulator_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("rhyzome-linkemu");
    assert!(
        binary.exists(),
        "{} is missing; build the workspace first (cargo build --workspace)",
        binary.display()
    );
    binary
}

/// Stops the test's emulator through its own control socket, whatever happens.
struct StopEmulator(rhyzome_linkemu::supervise::Supervisor);

impl Drop for StopEmulator {
    fn drop(&mut self) {
        let _ = self.0.stop("wan");
    }
}

/// The daemon supervises the emulators under `StateDir/emulators`: it starts one that does
/// not answer (from the state file the network code writes), restarts it with an event when
/// it is killed, and adopts it, without a restart, when the daemon itself restarts. The
/// emulator runs in the lab's network namespace (`LinkEmulatorNetns`), where its tap appears.
#[test]
fn the_daemon_starts_restarts_and_adopts_link_emulators() {
    let netns = crate::harness::netns();
    let mut d = Daemon::start_with(
        "emu",
        serde_json::json!({
            "LinkEmulator": emulator_binary(),
            "LinkEmulatorNetns": format!("/run/netns/{netns}"),
        }),
    );
    let emulators = d.dir.path().join("state/emulators");
    let supervisor = rhyzome_linkemu::supervise::Supervisor::new(
        emulators.clone(),
        emulator_binary(),
        Some(format!("/run/netns/{netns}").into()),
    );
    let id = std::process::id() % 200;
    let tap = format!("rzemu-e{id}");
    let state = rhyzome_linkemu::state::NetworkState {
        listen: format!("127.0.0.1:{}", 44_000 + id).parse().unwrap(),
        remote_listen: None,
        tap: Some(rhyzome_linkemu::state::TapSpec {
            name: tap.clone(),
            address: std::net::Ipv4Addr::new(10, 232, id as u8, 1),
            prefix_len: 24,
            conditions: Default::default(),
        }),
        seed: 1,
        ports: Default::default(),
        partitions: Vec::new(),
    };
    std::fs::create_dir_all(emulators.join("wan")).unwrap();
    state.save(&emulators.join("wan/state.json")).unwrap();
    let _stop = StopEmulator(rhyzome_linkemu::supervise::Supervisor::new(
        emulators.clone(),
        emulator_binary(),
        None,
    ));
    let mut events = d.client.events(None).unwrap();

    let answering = |not: Option<u32>| -> u32 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(stats) = supervisor.stats("wan") {
                if Some(stats.pid) != not {
                    return stats.pid;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no emulator answered\n{}",
                d.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let first = answering(None);
    let link = std::process::Command::new("ip")
        .args(["-n", &netns, "addr", "show", &tap])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains(&format!("10.232.{id}.1/24")), "{link}");

    // Killed: restarted within the supervision interval, with an event.
    unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    let killed = std::time::Instant::now();
    let second = answering(Some(first));
    eprintln!(
        "emulator {first} killed; {second} answering after {:?}",
        killed.elapsed()
    );
    // Bounded: a few supervision intervals (1 s each). The bound is loose on purpose: the
    // 2-core CI machine runs this next to builds, and a tight bound failed there once under
    // load. The outage itself is measured by crates/rhyzome-linkemu/tests/lab.rs.
    assert!(
        killed.elapsed() < std::time::Duration::from_secs(8),
        "the emulator came back only after {:?}",
        killed.elapsed()
    );
    let event = events
        .find(|e| {
            e.as_ref()
                .is_ok_and(|e| e.instance == "network:wan" && e.state == "emulator_restarted")
        })
        .expect("an event for the restart")
        .unwrap();
    assert!(event.reason.unwrap().contains("network wan"));
    assert_eq!(supervisor.state("wan").unwrap(), state);

    // The daemon restarts: the emulator keeps running and is adopted, not restarted. (Which
    // of the daemon's paths brought it back after the kill, supervision or a reconciler
    // pass's ensure, is a race under load; what matters is that the restart starts none.)
    let starts = |log: &str| log.matches("link emulator started").count();
    let before = starts(&d.log());
    assert!(before >= 2, "started at least twice before: {}", d.log());
    d.restart();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(supervisor.stats("wan").unwrap().pid, second);
    assert_eq!(starts(&d.log()), before, "{}", d.log());
}
