//! The daemon's side of an emulator's life, with the real binary: start, adopt by a second
//! supervisor (a restarted daemon), revive after SIGKILL with the state restored, stop.

use rhyzome_api::LinkConditions;
use rhyzome_linkemu::state::{NetworkState, PortSpec};
use rhyzome_linkemu::supervise::{Ensured, Supervisor};
use std::net::UdpSocket;
use std::path::PathBuf;

fn supervisor(dir: &std::path::Path) -> Supervisor {
    Supervisor::new(
        dir.to_path_buf(),
        PathBuf::from(env!("CARGO_BIN_EXE_rhyzome-linkemu")),
        None,
    )
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry: count only processes not in state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn an_emulator_outlives_its_supervisor_is_adopted_revived_and_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let listen = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut state = NetworkState {
        listen: format!("127.0.0.1:{listen}").parse().unwrap(),
        remote_listen: None,
        tap: None,
        seed: 5,
        ports: [(
            "n1".to_string(),
            PortSpec {
                peer_port: 1,
                peer_address: None,
                conditions: LinkConditions {
                    latency_ms: Some(20.0),
                    ..Default::default()
                },
            },
        )]
        .into(),
        partitions: Vec::new(),
    };
    let first = supervisor(dir.path());
    let started = first.ensure("wan", &state).unwrap();
    assert!(matches!(started, Ensured::Started { .. }));
    // Its own session: not in the test's process group.
    let pgid = unsafe { libc::getpgid(started.pid() as libc::pid_t) };
    assert_eq!(pgid, started.pid() as libc::pid_t);

    // A new supervisor (the daemon restarted) adopts the same process and changes it.
    drop(first);
    assert!(alive(started.pid()));
    let second = supervisor(dir.path());
    state.ports.get_mut("n1").unwrap().conditions.latency_ms = Some(80.0);
    assert_eq!(
        second.ensure("wan", &state).unwrap(),
        Ensured::Running { pid: started.pid() }
    );
    assert_eq!(second.known(), ["wan"]);

    // Killed: revive starts a new one, which restores the state from its file.
    unsafe { libc::kill(started.pid() as libc::pid_t, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while second.stats("wan").is_ok() {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let revived = second.revive("wan").unwrap().expect("restarted");
    assert_ne!(revived, started.pid());
    assert_eq!(second.state("wan").unwrap(), state);
    assert_eq!(second.revive("wan").unwrap(), None, "alive: left alone");

    second.stop("wan").unwrap();
    assert!(!alive(revived));
    assert!(!dir.path().join("wan").exists());
    assert!(second.stats("wan").is_err());
    second.stop("wan").unwrap();
    // A revival listed before the stop finds nothing to start, and leaves no directory.
    assert_eq!(second.revive("wan").unwrap(), None);
    assert!(!dir.path().join("wan").exists());
}
