//! SIGKILL of the daemon in the middle of a batch of creates and of deletes.

use crate::harness::{lab_domains, Daemon};
use crate::serial;
use rhyzome_api::InstanceState;
use rhyzomesrv::store::{Desired, Store};
use std::collections::BTreeSet;
use std::time::Duration;

/// The instances named `prefix*` whose rhyzome domains the lab's libvirt runs (it panics when
/// libvirt cannot be asked, rather than report none).
fn domains(prefix: &str) -> BTreeSet<String> {
    lab_domains()
        .into_iter()
        .filter(|(_, id)| id != "-")
        .filter_map(|(n, _)| n.strip_prefix("rhyzome-").map(str::to_string))
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn a_daemon_killed_during_a_batch_of_twenty_creates_loses_and_duplicates_nothing() {
    let _serial = serial();
    let mut d = Daemon::start("kb");
    let kernel = d.kernel();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for n in 0..20 {
        let client = d.client.clone();
        let kernel = kernel.clone();
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let spec = rhyzome_api::InstanceSpec {
                name: format!("kb-{n:02}"),
                kernel,
                network: Some(rhyzome_api::NetworkSpec {
                    mode: rhyzome_api::NetworkMode::None,
                    bridge: None,
                    mac: None,
                    ..Default::default()
                }),
                memory_mib: Some(8),
                ..Default::default()
            };
            let _ = tx.send((n, client.create_instance(&spec).is_ok()));
        }));
    }
    drop(tx);
    // Kill as soon as the first create is answered, while the rest are in flight.
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("no create was answered");
    d.kill();
    for t in threads {
        t.join().unwrap();
    }
    let acknowledged: BTreeSet<String> = std::iter::once(first)
        .chain(rx.iter())
        .filter(|(_, ok)| *ok)
        .map(|(n, _)| format!("kb-{n:02}"))
        .collect();
    println!(
        "{} of 20 creates were acknowledged before SIGKILL",
        acknowledged.len()
    );
    assert!(
        !acknowledged.is_empty(),
        "no create succeeded before the kill"
    );
    assert!(
        acknowledged.len() < 20,
        "the kill came too late to test anything"
    );

    d.start_again();
    // Every instance the daemon knows runs, exactly once, and every acknowledged one is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = d.client.list_instances().unwrap();
        let names: BTreeSet<String> = list.iter().map(|i| i.name.clone()).collect();
        let all_running = list.iter().all(|i| i.state == InstanceState::Running);
        if all_running && domains("kb-") == names {
            assert!(
                acknowledged.is_subset(&names),
                "lost: {:?}",
                acknowledged.difference(&names)
            );
            println!(
                "after restart: {} instances, {} domains",
                names.len(),
                domains("kb-").len()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reconciled: instances {names:?} (all running: {all_running}), domains {:?}",
            domains("kb-")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // No half-imported kernel is left, and every instance shares one kernel copy.
    let blobs: Vec<_> = std::fs::read_dir(d.dir.path().join("state/blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert!(blobs[0].starts_with("sha256-"));

    // Now kill it during a batch of deletes.
    let names: Vec<String> = d
        .client
        .list_instances()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    // Kill as soon as the first delete is answered: the others are then in flight, and each
    // is either finished or recorded as deleted with its domain possibly still there.
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for name in names.clone() {
        let client = d.client.clone();
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let _ = tx.send(client.delete_instance(&name).is_ok());
        }));
    }
    drop(tx);
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no delete was answered");
    d.kill();
    for t in threads {
        t.join().unwrap();
    }
    let deleted = usize::from(first) + rx.iter().filter(|ok| *ok).count();
    println!(
        "{deleted} of {} deletes were acknowledged before SIGKILL",
        names.len()
    );
    assert!(deleted >= 1, "no delete succeeded before the kill");
    assert!(
        deleted < names.len(),
        "the kill came too late to test anything: every delete was answered"
    );
    // What the crash left: records the daemon had marked deleted but not yet removed.
    let interrupted: Vec<String> = Store::open(&d.dir.path().join("state"))
        .unwrap()
        .all()
        .unwrap()
        .into_iter()
        .filter(|r| r.desired == Desired::Deleted)
        .map(|r| r.name)
        .collect();
    println!("{} deletes were interrupted mid-way", interrupted.len());
    assert!(
        !interrupted.is_empty(),
        "no delete was in flight at the kill, so the restart has nothing to finish"
    );

    d.start_again();
    let list = d.client.list_instances().unwrap();
    let left: BTreeSet<String> = list.iter().map(|i| i.name.clone()).collect();
    assert!(left.len() <= names.len() - deleted);
    // Whatever is left is whole: a record with a running guest, and nothing else runs.
    assert_eq!(domains("kb-"), left);
    for i in &list {
        assert_eq!(i.state, InstanceState::Running, "{i:?}");
    }
}
