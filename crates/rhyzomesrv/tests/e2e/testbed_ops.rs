//! The test-bed operations after apply on real libvirt (issue 15): scale 30 -> 40 -> 20 by
//! the highest indices with no orphan domain, a changed group replaced alone, `fault kill`
//! picking alike on beds built alike with the restart policy bringing nodes back, and a
//! daemon SIGKILLed during an apply converging with no duplicate and no orphan.
//!
//! One bed is reused across the steps of a test to keep the suite short.

use crate::harness::{lab_domains, Daemon};
use rhyzome_api::{InstanceState, TestbedFault};
use rhyzome_testkernel::READY_LINE;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A bed `name` of one seed and `nodes` nodes (restarted on failure) on `subnet`;
/// `seed_params` is appended to the seed's kernel parameters.
fn bed_file(kernel: &str, name: &str, subnet: &str, nodes: u32, seed_params: &str) -> String {
    format!(
        r#"name = "{name}"
seed = 7

[[networks]]
name = "{name}-net"
subnet = "{subnet}"

[[groups]]
name = "seed"
count = 1
kernel = "{kernel}"
network = "{name}-net"
kernel_parameters = "--ipv4={{cidr}} --name=seed{seed_params}"
memory_mib = 16
ready = {{ console = "{READY_LINE}" }}

[[groups]]
name = "nodes"
count = {nodes}
after = ["seed"]
kernel = "{kernel}"
network = "{name}-net"
kernel_parameters = "--ipv4={{cidr}} --name=node{{i}} --peers={{peers:nodes:3}},{{group.seed.ip}}"
memory_mib = 16
restart = "on-failure:3"
ready = {{ console = "{READY_LINE}" }}
"#
    )
}

/// Instance name to (id, creation time), of every instance of `bed`.
fn instances(d: &Daemon, bed: &str) -> BTreeMap<String, (String, String)> {
    d.client
        .list_instances()
        .unwrap()
        .into_iter()
        .filter(|i| i.labels.get("testbed").map(String::as_str) == Some(bed))
        .map(|i| (i.name, (i.id, i.created_at)))
        .collect()
}

/// The instances of `bed` that have a domain in the lab's libvirt, now.
fn bed_domains(bed: &str) -> BTreeSet<String> {
    let prefix = format!("{bed}-");
    lab_domains()
        .into_keys()
        .filter_map(|n| n.strip_prefix("rhyzome-").map(str::to_string))
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// [`bed_domains`] once their number is `count`, or after 30 s (libvirt may list a destroyed
/// domain for a moment).
fn domains(bed: &str, count: usize) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = bed_domains(bed);
        if found.len() == count || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn names(bed: &str, group: &str, indices: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    indices
        .into_iter()
        .map(|i| format!("{bed}-{group}-{i}"))
        .collect()
}

fn wait(d: &Daemon, bed: &str) {
    d.ctl_ok(&["testbed", "wait", bed, "--timeout", "4m"]);
}

fn kill(count: i64, seed: Option<u64>) -> TestbedFault {
    TestbedFault::Kill {
        group: "nodes".into(),
        count,
        seed,
    }
}

#[test]
fn a_bed_scales_by_its_highest_indices_replaces_a_changed_group_alone_and_survives_kills() {
    let mut d = Daemon::start("tbops");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bed.toml");
    let path = file.to_str().unwrap();
    let bed = "tbo";
    std::fs::write(&file, bed_file(&d.kernel(), bed, "10.78.0.0/24", 29, "")).unwrap();
    let started = Instant::now();
    d.apply_bed_and_wait(std::path::Path::new(path), "4m");
    eprintln!("30 nodes ready in {:.1}s", started.elapsed().as_secs_f64());
    let base = instances(&d, bed);
    assert_eq!(base.len(), 30);

    // (a) 30 -> 40: nodes 29..=38 added, nobody else touched.
    let out = d.ctl_ok(&["testbed", "scale", bed, "nodes=39"]);
    assert!(
        out.contains("10 to create, 0 to replace, 0 to update, 0 to delete"),
        "{out}"
    );
    assert!(out.contains("next `testbed apply`"), "{out}");
    wait(&d, bed);
    let up = instances(&d, bed);
    assert_eq!(up.len(), 40);
    let added: BTreeSet<String> = up
        .keys()
        .filter(|n| !base.contains_key(*n))
        .cloned()
        .collect();
    assert_eq!(added, names(bed, "nodes", 29..39));
    for (name, id) in &base {
        assert_eq!(&up[name], id, "{name} kept");
    }
    let all: BTreeSet<String> = up.keys().cloned().collect();
    assert_eq!(domains(bed, 40), all, "one domain per instance");
    let status = d.client.get_testbed(bed).unwrap();
    assert_eq!(
        (status.groups[1].desired, status.groups[1].file_count),
        (39, 29)
    );
    assert_eq!(status.groups[1].ready, 39);
    // The scale is desired state: a restarted daemon keeps it, and an extra that vanishes
    // comes back from the scaled plan.
    d.restart();
    d.client.delete_instance("tbo-nodes-38").unwrap();
    wait(&d, bed);
    let status = d.client.get_testbed(bed).unwrap();
    assert_eq!((status.groups[1].desired, status.groups[1].ready), (39, 39));
    let again = instances(&d, bed);
    assert_ne!(again["tbo-nodes-38"].0, up["tbo-nodes-38"].0, "recreated");

    // 40 -> 20: nodes 19..=38 removed, their domains gone, the rest kept.
    let out = d.ctl_ok(&["testbed", "scale", bed, "nodes=19"]);
    assert!(
        out.contains("0 to create, 0 to replace, 0 to update, 20 to delete"),
        "{out}"
    );
    wait(&d, bed);
    let down = instances(&d, bed);
    let kept: BTreeSet<String> = down.keys().cloned().collect();
    let mut expected = names(bed, "nodes", 0..19);
    expected.insert(format!("{bed}-seed-0"));
    assert_eq!(kept, expected);
    for name in &kept {
        assert_eq!(down[name], base[name], "{name} kept");
    }
    assert_eq!(domains(bed, 20), kept, "no orphan domain of a removed node");

    // (b) The seed group's parameters change: the apply resets the scale (and says so),
    // replaces the seed alone and brings the nodes back to the file's 29.
    std::fs::write(
        &file,
        bed_file(&d.kernel(), bed, "10.78.0.0/24", 29, " --verbose"),
    )
    .unwrap();
    let out = d.apply_bed_and_wait(std::path::Path::new(path), "4m");
    assert!(
        out.contains("10 to create, 1 to replace, 0 to update, 0 to delete"),
        "{out}"
    );
    assert!(out.contains("will replace tbo-seed-0"), "{out}");
    assert!(out.contains("(nodes=19) are reset to the file's"), "{out}");
    let after = instances(&d, bed);
    assert_eq!(after.len(), 30);
    assert_ne!(
        after["tbo-seed-0"].0, base["tbo-seed-0"].0,
        "the seed was replaced"
    );
    for name in names(bed, "nodes", 0..19) {
        assert_eq!(
            after[&name], base[&name],
            "{name} of the unchanged group kept"
        );
    }
    let seed = d.client.get_instance("tbo-seed-0").unwrap();
    assert!(seed.kernel_parameters.ends_with("--verbose"), "{seed:?}");
    assert_eq!(domains(bed, 30).len(), 30);

    // (c) Kills: the same explicit seed picks the same nodes twice, and each time the
    // restart policy brings them back.
    let domain_ids: BTreeMap<String, String> = lab_domains().into_iter().collect();
    let first = d.client.testbed_fault(bed, &kill(3, Some(42))).unwrap();
    assert_eq!(first.instances.len(), 3, "{first:?}");
    assert_eq!((first.action.as_str(), first.seed), ("kill", Some(42)));
    for name in &first.instances {
        let back = d.wait_for_state(name, InstanceState::Running);
        assert!(back.restart_count >= 1, "{back:?}");
        let domain = format!("rhyzome-{name}");
        let id = d.domain_id(name).expect("running again");
        assert_ne!(domain_ids[&domain], id, "{name} runs in a new QEMU");
    }
    wait(&d, bed);
    let second = d.client.testbed_fault(bed, &kill(3, Some(42))).unwrap();
    assert_eq!(
        second.instances, first.instances,
        "the same seed picks the same nodes"
    );
    assert_eq!(second.sequence, first.sequence + 1);
    wait(&d, bed);
    let status = d.client.get_testbed(bed).unwrap();
    assert!(status.groups[1].restarts >= 3, "{status:?}");
    assert_eq!(status.groups[1].ready, 29);
    let shown = d.ctl_ok(&["testbed", "status", bed]);
    assert!(shown.contains("RESTARTS"), "{shown}");
    assert_eq!(domains(bed, 30).len(), 30, "a kill leaves no extra domain");

    d.ctl_ok(&["testbed", "destroy", bed]);
    assert!(domains(bed, 0).is_empty());
}

#[test]
fn beds_built_alike_pick_alike() {
    let d = Daemon::start("tbpick");
    let dir = tempfile::tempdir().unwrap();
    let mut picks = Vec::new();
    for (bed, subnet) in [("tbpa", "10.73.0.0/24"), ("tbpb", "10.74.0.0/24")] {
        let file = dir.path().join(format!("{bed}.toml"));
        std::fs::write(&file, bed_file(&d.kernel(), bed, subnet, 6, "")).unwrap();
        d.apply_bed_and_wait(&file, "4m");
        let out = d.ctl_ok(&[
            "testbed", "fault", bed, "kill", "--group", "nodes", "--count", "2",
        ]);
        assert!(out.contains("fault 0 (kill, seed 7)"), "{out}");
        let killed: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("kill "))
            .map(|n| n.trim_start_matches(bed).to_string())
            .collect();
        assert_eq!(killed.len(), 2, "{out}");
        picks.push(killed);
    }
    assert_eq!(
        picks[0], picks[1],
        "the n-th fault of beds built alike picks alike"
    );
    for bed in ["tbpa", "tbpb"] {
        wait(&d, bed);
        let status = d.client.get_testbed(bed).unwrap();
        assert_eq!(status.groups[1].restarts, 2, "{status:?}");
        d.ctl_ok(&["testbed", "destroy", bed]);
    }
}

#[test]
fn a_daemon_killed_during_an_apply_converges_with_no_duplicate_and_no_orphan() {
    let mut d = Daemon::start("tbkill");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bed.toml");
    let bed = "tbk";
    std::fs::write(&file, bed_file(&d.kernel(), bed, "10.75.0.0/24", 19, "")).unwrap();
    d.ctl_ok(&["testbed", "apply", "-f", file.to_str().unwrap()]);
    // SIGKILL once the nodes are accepted but not all run yet.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = d.client.list_instances().unwrap();
        let running = list
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count();
        if list.len() > 1 && running < 20 {
            eprintln!("killed with {} instances, {running} running", list.len());
            break;
        }
        assert!(
            running < 20,
            "the apply finished before the daemon could be killed"
        );
        assert!(
            Instant::now() < deadline,
            "no node was created:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill();
    let at_kill = bed_domains(bed).len();
    d.start_again();
    wait(&d, bed);
    let all = instances(&d, bed);
    let mut expected = names(bed, "nodes", 0..19);
    expected.insert(format!("{bed}-seed-0"));
    assert_eq!(all.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let ids: BTreeSet<&String> = all.values().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 20, "no duplicate instance");
    assert_eq!(
        domains(bed, 20),
        expected,
        "one domain per instance, no orphan ({at_kill} domains when the daemon was killed)"
    );
    let status = d.client.get_testbed(bed).unwrap();
    assert!(status.ready, "{status:?}");
    assert_eq!(status.groups[1].created, 19);
    d.ctl_ok(&["testbed", "destroy", bed]);
    assert!(domains(bed, 0).is_empty());
}
