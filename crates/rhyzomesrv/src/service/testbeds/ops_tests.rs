//! The operations after apply against the fake backend: `scale` (highest indices only, the
//! counts kept with the desired state until the next apply) and `fault` (deterministic
//! picks, kills as crashes under the restart policy, partitions refused off emulated
//! networks).

use super::super::faults::pick_members;
use super::*;
use rhyzome_api::{TestbedFault, TestbedFaultResult, TestbedScale};

impl Daemon {
    async fn scale(&self, counts: &[(&str, i64)]) -> Result<TestbedPlan, ServiceError> {
        self.service
            .scale_testbed(
                &Caller::internal(),
                "bed",
                TestbedScale {
                    counts: counts.iter().map(|(g, c)| (g.to_string(), *c)).collect(),
                    dry_run: None,
                },
            )
            .await
    }

    async fn fault(&self, fault: TestbedFault) -> Result<TestbedFaultResult, ServiceError> {
        self.service
            .testbed_fault(&Caller::internal(), "bed", fault)
            .await
    }

    fn state(&self, name: &str) -> InstanceState {
        self.service.store.by_name(name).unwrap().unwrap().state
    }
}

fn field_of(e: ServiceError) -> String {
    match e {
        ServiceError::Invalid(f) => f.field.into_owned(),
        other => panic!("expected a field error, got {other:?}"),
    }
}

fn kill(count: i64, seed: Option<u64>) -> TestbedFault {
    TestbedFault::Kill {
        group: "nodes".into(),
        count,
        seed,
    }
}

#[tokio::test]
async fn scale_adds_and_removes_only_the_highest_indices_even_with_peers() {
    let d = daemon();
    // {peers:nodes:1} depends on the group's size: a scale must still keep every node.
    d.apply(&file(&d.kernel, 4, ""), false).await.unwrap();
    d.converge().await;
    let base = d.ids();

    let up = d.scale(&[("nodes", 7)]).await.unwrap();
    let created: Vec<&str> = up.changes.iter().map(|c| c.instance.as_str()).collect();
    assert_eq!(created, ["bed-nodes-4", "bed-nodes-5", "bed-nodes-6"]);
    assert!(up.changes.iter().all(|c| c.action == ChangeKind::Create));
    assert!(
        up.notes[0].contains("next `testbed apply`"),
        "{:?}",
        up.notes
    );
    let bed = d.converge().await;
    assert_eq!((bed.groups[1].desired, bed.groups[1].file_count), (7, 4));
    assert_eq!(bed.groups[1].ready, 7);
    let ids = d.ids();
    for (name, id) in &base {
        assert_eq!(&ids[name], id, "{name} kept");
    }
    // Kept with the desired state: what a restarted daemon's driver reads.
    let stored = d.service.store.testbed("bed").unwrap().unwrap();
    assert_eq!(stored.overrides.scale, [("nodes".to_string(), 7)].into());
    assert_eq!(stored.desired, "present");

    let down = d.scale(&[("nodes", 2)]).await.unwrap();
    let deleted: Vec<&str> = down.changes.iter().map(|c| c.instance.as_str()).collect();
    assert_eq!(
        deleted,
        [
            "bed-nodes-6",
            "bed-nodes-5",
            "bed-nodes-4",
            "bed-nodes-3",
            "bed-nodes-2"
        ]
    );
    d.converge().await;
    let ids = d.ids();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids["bed-nodes-1"], base["bed-nodes-1"]);
    assert_eq!(d.backend.list().unwrap().len(), 3, "no orphan domain");

    // The same counts again change nothing.
    assert!(!d.scale(&[("nodes", 2)]).await.unwrap().changed);
}

#[tokio::test]
async fn an_apply_of_the_file_resets_scaled_counts_and_says_so() {
    let d = daemon();
    let text = file(&d.kernel, 3, "");
    d.apply(&text, false).await.unwrap();
    d.converge().await;
    d.scale(&[("nodes", 5)]).await.unwrap();
    d.converge().await;
    let again = d.apply(&text, false).await.unwrap();
    assert!(again.changed);
    assert!(again.notes[0].contains("nodes=5"), "{:?}", again.notes);
    let deleted: Vec<&str> = again.changes.iter().map(|c| c.instance.as_str()).collect();
    assert_eq!(deleted, ["bed-nodes-4", "bed-nodes-3"]);
    let bed = d.converge().await;
    assert_eq!(bed.groups[1].desired, 3);
    assert!(d
        .service
        .store
        .testbed("bed")
        .unwrap()
        .unwrap()
        .overrides
        .scale
        .is_empty());
    // Once reset, the same file again is "no changes".
    assert!(!d.apply(&text, false).await.unwrap().changed);
}

#[tokio::test]
async fn bad_scales_name_their_field_and_change_nothing() {
    let d = daemon();
    d.apply(&file(&d.kernel, 2, ""), false).await.unwrap();
    d.converge().await;
    let before = d.ids();
    assert_eq!(
        field_of(d.scale(&[("nodez", 3)]).await.unwrap_err()),
        "counts.nodez"
    );
    assert_eq!(
        field_of(d.scale(&[("nodes", -1)]).await.unwrap_err()),
        "counts.nodes"
    );
    assert_eq!(
        field_of(d.scale(&[("nodes", 1 << 40)]).await.unwrap_err()),
        "counts.nodes"
    );
    // A /24 holds 253 besides the gateway; the file takes 3, and nodes gets every second.
    assert_eq!(
        field_of(d.scale(&[("nodes", 200)]).await.unwrap_err()),
        "counts.nodes"
    );
    assert_eq!(field_of(d.scale(&[]).await.unwrap_err()), "counts");
    assert!(matches!(
        d.service
            .scale_testbed(
                &Caller::internal(),
                "nobed",
                TestbedScale {
                    counts: [("nodes".to_string(), 1)].into(),
                    dry_run: None
                }
            )
            .await,
        Err(ServiceError::TestbedNotFound(_))
    ));
    assert_eq!(d.ids(), before);
    assert!(d
        .service
        .store
        .testbed("bed")
        .unwrap()
        .unwrap()
        .overrides
        .scale
        .is_empty());
}

#[test]
fn picks_are_deterministic_distinct_and_in_index_order() {
    let members: Vec<MemberRecord> = (0..30)
        .map(|i| MemberRecord {
            group: "nodes".into(),
            index: i,
            instance: format!("b-nodes-{i}"),
            spec: String::new(),
            ready_ms: None,
        })
        .collect();
    let indices = |explicit, sequence| -> Vec<u32> {
        pick_members(7, explicit, sequence, "nodes", &members, 5)
            .iter()
            .map(|m| m.index)
            .collect()
    };
    let first = indices(None, 0);
    assert_eq!(
        first,
        indices(None, 0),
        "same seed and sequence, same picks"
    );
    assert_eq!(first.len(), 5);
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "distinct, in index order: {first:?}"
    );
    assert_ne!(first, indices(None, 1), "the next fault picks others");
    assert_eq!(
        indices(Some(99), 0),
        indices(Some(99), 4),
        "an explicit seed ignores the sequence"
    );
    assert_ne!(
        pick_members(8, None, 0, "nodes", &members, 5)
            .iter()
            .map(|m| m.index)
            .collect::<Vec<_>>(),
        first,
        "another bed seed, other picks"
    );
}

#[tokio::test]
async fn a_kill_picks_alike_on_beds_built_alike_and_the_restart_policy_applies() {
    let restart_on_failure = |d: &Daemon| {
        file(&d.kernel, 6, "").replace(
            "after = [\"seed\"]",
            "after = [\"seed\"]\nrestart = \"on-failure:3\"",
        )
    };
    let (a, b) = (daemon(), daemon());
    for d in [&a, &b] {
        d.apply(&restart_on_failure(d), false).await.unwrap();
        d.converge().await;
    }
    let ka = a.fault(kill(2, None)).await.unwrap();
    let kb = b.fault(kill(2, None)).await.unwrap();
    assert_eq!(ka.instances, kb.instances, "beds built alike pick alike");
    assert_eq!(
        (ka.sequence, ka.seed, ka.action.as_str()),
        (0, Some(7), "kill")
    );
    assert_eq!(ka.instances.len(), 2);
    for name in &ka.instances {
        assert_eq!(a.state(name), InstanceState::Crashed, "{name}");
        let r = a.service.store.by_name(name).unwrap().unwrap();
        assert_eq!(r.restart_count, 1, "the policy scheduled a restart");
        assert!(r.next_restart_at_ms.is_some());
    }
    let bed = a.service.get_testbed(&Caller::internal(), "bed").unwrap();
    assert_eq!(bed.groups[1].failed, 2);
    assert_eq!(bed.groups[1].restarts, 2);
    // The next fault is the bed's second: its own picks, unless the seed is given.
    let second = a.fault(kill(2, None)).await.unwrap();
    assert_eq!(second.sequence, 1);
    let x = a.fault(kill(2, Some(5))).await.unwrap();
    let y = b.fault(kill(2, Some(5))).await.unwrap();
    assert_eq!(x.instances, y.instances);
    assert_eq!(x.seed, Some(5));
    let stored = a.service.store.testbed("bed").unwrap().unwrap();
    assert_eq!(stored.overrides.faults, 3, "every fault counted");
    assert_eq!(stored.desired, "present");
}

#[tokio::test]
async fn a_restart_fault_restarts_the_picked_and_bad_faults_name_their_field() {
    let d = daemon();
    d.apply(&file(&d.kernel, 3, ""), false).await.unwrap();
    d.converge().await;
    let ids = d.ids();
    let mut events = d.service.events().cursor(None).unwrap();
    let r = d
        .fault(TestbedFault::Restart {
            group: "nodes".into(),
            count: 3,
            seed: None,
        })
        .await
        .unwrap();
    assert_eq!(r.instances, ["bed-nodes-0", "bed-nodes-1", "bed-nodes-2"]);
    for name in &r.instances {
        assert_eq!(d.state(name), InstanceState::Running);
    }
    assert_eq!(d.ids(), ids, "restarted, not replaced");
    // The fault is an event of the bed, after the instances' own.
    let fault = loop {
        match tokio::time::timeout(
            std::time::Duration::from_secs(5),
            d.service.events().next(&mut events),
        )
        .await
        .expect("the fault's event")
        {
            crate::service::event_log::Item::Event { event, .. }
                if event.instance == "testbed:bed" =>
            {
                break event
            }
            _ => {}
        }
    };
    assert_eq!(fault.state, "fault");
    let reason = fault.reason.unwrap();
    assert!(
        reason.contains("fault 0: restart (seed 7) bed-nodes-0, bed-nodes-1, bed-nodes-2"),
        "{reason}"
    );
    assert_eq!(field_of(d.fault(kill(4, None)).await.unwrap_err()), "count");
    assert_eq!(field_of(d.fault(kill(0, None)).await.unwrap_err()), "count");
    let nogroup = TestbedFault::Kill {
        group: "nodez".into(),
        count: 1,
        seed: None,
    };
    assert_eq!(field_of(d.fault(nogroup).await.unwrap_err()), "group");
    // Refusals are not counted as faults.
    assert_eq!(
        d.service
            .store
            .testbed("bed")
            .unwrap()
            .unwrap()
            .overrides
            .faults,
        1
    );
}

#[tokio::test]
async fn a_partition_off_an_emulated_network_is_refused() {
    let d = daemon();
    d.apply(&file(&d.kernel, 2, ""), false).await.unwrap();
    d.converge().await;
    let partition = |a: &str, b: &str| TestbedFault::Partition {
        between: [a.to_string(), b.to_string()],
    };
    match d.fault(partition("group=seed", "group=nodes")).await {
        Err(ServiceError::Conflict { field, message }) => {
            assert_eq!(field, Some("between"));
            assert!(message.contains("share no emulated network"), "{message}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        field_of(
            d.fault(partition("group=seed", "group=nodez"))
                .await
                .unwrap_err()
        ),
        "between"
    );
    assert!(matches!(
        d.fault(TestbedFault::Heal { between: None }).await,
        Err(ServiceError::Conflict { .. })
    ));
}
