//! Service logic against the fake backend: validation, rollback, conflicts, reconciliation.

use super::*;
use crate::backend::fake::FakeBackend;
use crate::backend::DomainStatus;
use crate::backend::{DomainDefinition, DomainMark};
use crate::console;
use crate::store::Desired;
use rhyzome_api::RestartMode;
use rhyzome_api::{Instance, InstanceSpec, NetworkMode};

struct Fixture {
    _dir: tempfile::TempDir,
    kernel: String,
    state_dir: std::path::PathBuf,
    backend: Arc<FakeBackend>,
    service: Arc<Service>,
}

fn fixture() -> Fixture {
    let (dir, config, kernel) = crate::testing::fake_setup(&serde_json::json!({
        "Hostname": "testhost",
        "DomainType": "test",
        "RestartBackoffMs": 20,
        "RestartBackoffMaxMs": 100,
        "ReconcileIntervalSeconds": 3600,
    }));
    let state_dir = config.state_dir.clone();
    let backend = Arc::new(FakeBackend::new());
    let service = Service::new(
        config,
        "test",
        Store::open(&state_dir).unwrap(),
        backend.clone(),
    );
    Fixture {
        kernel,
        _dir: dir,
        state_dir,
        backend,
        service,
    }
}

fn spec(f: &Fixture, name: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        kernel: f.kernel.clone(),
        kernel_parameters: "--ipv4 10.0.0.2/24".into(),
        memory_mib: None,
        vcpus: None,
        network: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn create_applies_defaults_and_runs() {
    let f = fixture();
    let i = f
        .service
        .create(spec(&f, "a"), &Caller::internal())
        .await
        .unwrap();
    assert_eq!(i.state, InstanceState::Running);
    assert_eq!(i.memory_mib, 32);
    assert_eq!(i.vcpus, 1);
    let net = i.network.clone().unwrap();
    assert_eq!(net.bridge, "br0");
    // 02 and the first five bytes of SHA-256("rhyzome-mac:a") (see mac_for_name).
    assert_eq!(net.mac, "02:43:3b:00:3f:b0");
    assert_eq!(net.ipv4.as_deref(), Some("10.0.0.2/24"));
    // `network` is the shorthand of a one-element list: the instance's only attachment.
    assert_eq!(
        i.attachments,
        [rhyzome_api::NicAttachment {
            device: None,
            bridge: "br0".into(),
            mac: "02:43:3b:00:3f:b0".into(),
            pci_slot: None,
            conditions: Default::default(),
            network: None,
            ipv4: None,
        }]
    );
    assert!(i.interfaces.is_empty());
    let def = f.backend.definition(&i.id).unwrap();
    assert_eq!(def.cmdline, "--ipv4 10.0.0.2/24");
    assert_eq!(
        def.kernel,
        f.state_dir
            .join("blobs")
            .join(format!("sha256-{}", i.kernel_sha256))
    );
    assert_eq!(f.service.list(&Caller::internal()).unwrap(), vec![i]);
}

#[test]
fn macs_are_derived_as_documented() {
    // Computed by hand, independently of the code: 02 (locally administered, unicast), then
    // the first five bytes of `printf 'rhyzome-mac:%s' NAME | sha256sum`.
    for (name, mac) in [
        ("a", "02:43:3b:00:3f:b0"),
        ("b", "02:c9:87:63:bc:d6"),
        ("node-1", "02:0f:5a:73:7f:cf"),
        // A NIC of a multi-NIC instance: instance `web`, device `admin`.
        ("web/admin", "02:25:8e:1c:e9:54"),
    ] {
        assert_eq!(mac_for_name(name), mac, "{name}");
    }
}

#[tokio::test]
async fn invalid_specs_create_nothing() {
    let f = fixture();
    let cases: Vec<(InstanceSpec, &str)> = vec![
        (
            InstanceSpec {
                name: "Bad_Name".into(),
                ..spec(&f, "x")
            },
            "name",
        ),
        (
            InstanceSpec {
                kernel_parameters: "a\nb".into(),
                ..spec(&f, "x")
            },
            "kernel_parameters",
        ),
        (
            InstanceSpec {
                memory_mib: Some(0),
                ..spec(&f, "x")
            },
            "memory_mib",
        ),
        (
            InstanceSpec {
                vcpus: Some(1000),
                ..spec(&f, "x")
            },
            "vcpus",
        ),
        (
            InstanceSpec {
                network: Some(rhyzome_api::NetworkSpec {
                    mode: NetworkMode::Bridge,
                    bridge: Some("br0\"/><x".into()),
                    mac: None,
                    ..Default::default()
                }),
                ..spec(&f, "x")
            },
            "network.bridge",
        ),
        (
            InstanceSpec {
                network: Some(rhyzome_api::NetworkSpec {
                    mode: NetworkMode::None,
                    bridge: Some("br0".into()),
                    mac: None,
                    ..Default::default()
                }),
                ..spec(&f, "x")
            },
            "network.mode",
        ),
    ];
    for (s, field) in cases {
        match f.service.create(s, &Caller::internal()).await {
            Err(ServiceError::Invalid(e)) => assert_eq!(e.field, field),
            other => panic!("{field}: expected a field error, got {other:?}"),
        }
    }
    for (kernel, why) in [
        ("/etc/passwd", "outside"),
        ("relative/k", "absolute"),
        ("/nonexistent/k.virtio", "does not exist"),
    ] {
        match f
            .service
            .create(
                InstanceSpec {
                    kernel: kernel.into(),
                    ..spec(&f, "x")
                },
                &Caller::internal(),
            )
            .await
        {
            Err(ServiceError::Kernel(e)) => assert!(e.to_string().contains(why), "{e}"),
            other => panic!("{kernel}: expected a kernel error, got {other:?}"),
        }
    }
    assert!(f.service.list(&Caller::internal()).unwrap().is_empty());
    assert_eq!(f.backend.creates(), 0);
}

#[tokio::test]
async fn a_refused_domain_is_rolled_back() {
    let f = fixture();
    f.backend.fail_next_create(BackendError::Rejected {
        message: "Cannot get interface MTU on 'br0': No such device".into(),
    });
    match f.service.create(spec(&f, "a"), &Caller::internal()).await {
        Err(ServiceError::Invalid(e)) => {
            assert_eq!(e.field, "network.bridge");
            assert!(e.message.contains("No such device"), "{}", e.message);
        }
        other => panic!("expected a bridge error, got {other:?}"),
    }
    assert!(f.service.list(&Caller::internal()).unwrap().is_empty());
    // No kernel blob is left behind either.
    let blobs = std::fs::read_dir(f.state_dir.join("blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
    // The name is free again.
    f.service
        .create(spec(&f, "a"), &Caller::internal())
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_creates_of_one_name_give_one_instance() {
    let f = fixture();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let svc = f.service.clone();
        let s = spec(&f, "same");
        tasks.push(tokio::spawn(async move {
            svc.create(s, &Caller::internal()).await
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ServiceError::Conflict { field, .. }) => {
                assert_eq!(field, Some("name"));
                conflicts += 1
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 7));
    assert_eq!(f.backend.list().unwrap().len(), 1);
}

#[tokio::test]
async fn duplicate_macs_conflict() {
    let f = fixture();
    let with_mac = |name: &str| InstanceSpec {
        network: Some(rhyzome_api::NetworkSpec {
            mode: NetworkMode::Bridge,
            bridge: None,
            mac: Some("02:00:00:00:00:AA".into()),
            ..Default::default()
        }),
        ..spec(&f, name)
    };
    let a = f
        .service
        .create(with_mac("a"), &Caller::internal())
        .await
        .unwrap();
    assert_eq!(a.network.unwrap().mac, "02:00:00:00:00:aa");
    match f.service.create(with_mac("b"), &Caller::internal()).await {
        Err(ServiceError::Conflict { field, .. }) => assert_eq!(field, Some("network.mac")),
        other => panic!("expected a MAC conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn lifecycle_verbs_change_desired_and_observed_state() {
    let f = fixture();
    let i = f
        .service
        .create(spec(&f, "a"), &Caller::internal())
        .await
        .unwrap();
    let s = f.service.stop(&Caller::internal(), "a").await.unwrap();
    assert_eq!(
        (s.state, s.desired_state),
        (InstanceState::Stopped, rhyzome_api::DesiredState::Stopped)
    );
    assert!(f.backend.status(&i.id).unwrap().is_none());
    let s = f.service.start(&Caller::internal(), "a").await.unwrap();
    assert_eq!(s.state, InstanceState::Running);
    // Starting a running instance changes nothing.
    f.service.start(&Caller::internal(), "a").await.unwrap();
    assert_eq!(f.backend.creates(), 2);
    f.service.restart(&Caller::internal(), "a").await.unwrap();
    assert_eq!(f.backend.creates(), 3);
    f.service.delete(&Caller::internal(), "a").await.unwrap();
    assert!(matches!(
        f.service.get(&Caller::internal(), "a"),
        Err(ServiceError::NotFound(_))
    ));
    assert!(f.backend.list().unwrap().is_empty());
    assert!(matches!(
        f.service.delete(&Caller::internal(), "a").await,
        Err(ServiceError::NotFound(_))
    ));
    assert!(matches!(
        f.service.start(&Caller::internal(), "nope").await,
        Err(ServiceError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_vanished_domain_is_recorded_with_its_exit_code() {
    let f = fixture();
    let i = f
        .service
        .create(spec(&f, "a"), &Caller::internal())
        .await
        .unwrap();
    let log = console::log_path(&f.state_dir, &i.id);
    std::fs::write(&log, "boot\nSolo5: solo5_exit(3) called\n").unwrap();
    f.backend.vanish(&i.id);
    let report = f.service.reconcile_once().await.unwrap();
    assert_eq!(report.ended, 1);
    let got = f.service.get(&Caller::internal(), "a").unwrap();
    assert_eq!((got.state, got.exit_code), (InstanceState::Exited, Some(3)));
    // A restart starts a new run: the old exit line no longer counts.
    f.service.restart(&Caller::internal(), "a").await.unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut file| std::io::Write::write_all(&mut file, b"Solo5: ABORT: x.c:1: crash\n"))
        .unwrap();
    f.backend.vanish(&i.id);
    f.service.reconcile_once().await.unwrap();
    let got = f.service.get(&Caller::internal(), "a").unwrap();
    assert_eq!((got.state, got.exit_code), (InstanceState::Crashed, None));
    // Settled instances cost nothing on the next pass.
    assert_eq!(
        f.service.reconcile_once().await.unwrap(),
        Default::default()
    );
}

#[tokio::test]
async fn reconcile_finishes_interrupted_work_and_removes_orphans() {
    let f = fixture();
    // A create accepted just before a crash: stored, no domain.
    let pending = crate::store::InstanceRecord {
        id: "11111111-1111-1111-1111-111111111111".into(),
        name: "pending".into(),
        kernel: f.kernel.clone(),
        kernel_sha256: "00".into(),
        kernel_parameters: String::new(),
        memory_mib: 32,
        vcpus: 1,
        attachments: Vec::new(),
        labels: Default::default(),
        desired: Desired::Running,
        state: InstanceState::Pending,
        exit_code: None,
        last_error: None,
        created_at: now_rfc3339(),
        started_at: None,
        console_offset: 0,
        console_inode: None,
        state_changed_at: now_rfc3339(),
        restart: Default::default(),
        restart_count: 0,
        next_restart_at_ms: None,
        startup_priority: 0,
        autostart: false,
        owner: "anonymous".into(),
        host: String::new(),
        placement: None,
        failover: false,
    };
    f.service.store.insert(&pending).unwrap();
    // A delete interrupted after it was recorded.
    let doomed = f
        .service
        .create(spec(&f, "doomed"), &Caller::internal())
        .await
        .unwrap();
    f.service
        .store
        .set_desired(&doomed.id, Desired::Deleted)
        .unwrap();
    // Domains nobody claims: one marked by this daemon, one by another, one unmarked.
    let mine = DomainDefinition {
        uuid: "22222222-2222-2222-2222-222222222222".into(),
        domain_name: "rhyzome-ghost".into(),
        ..f.service.definition(&pending).unwrap()
    }
    .mark();
    f.backend.inject(
        DomainStatus {
            uuid: "22222222-2222-2222-2222-222222222222".into(),
            name: "rhyzome-ghost".into(),
            active: true,
        },
        Some(mine.clone()),
    );
    f.backend.inject(
        DomainStatus {
            uuid: "33333333-3333-3333-3333-333333333333".into(),
            name: "rhyzome-other".into(),
            active: true,
        },
        // Same host, another daemon: the identity decides, not the host.
        Some(DomainMark {
            daemon: Some("another-daemon".into()),
            ..mine
        }),
    );
    f.backend.inject(
        DomainStatus {
            uuid: "44444444-4444-4444-4444-444444444444".into(),
            name: "rhyzome-unmarked".into(),
            active: true,
        },
        None,
    );
    let report = f.service.reconcile_once().await.unwrap();
    assert_eq!(report.started, 1, "{report:?}");
    assert_eq!(report.finished_deletes, 1, "{report:?}");
    assert_eq!(report.orphans_destroyed, 1, "{report:?}");
    assert_eq!(report.left_alone, 2, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    let names: Vec<String> = f
        .service
        .list(&Caller::internal())
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, vec!["pending"]);
    assert_eq!(
        f.service.get(&Caller::internal(), "pending").unwrap().state,
        InstanceState::Running
    );
    let mut left: Vec<String> = f
        .backend
        .list()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec!["rhyzome-other", "rhyzome-pending", "rhyzome-unmarked"]
    );
}

#[tokio::test]
async fn reconcile_adopts_running_domains_and_enforces_stops() {
    let f = fixture();
    let i = f
        .service
        .create(spec(&f, "a"), &Caller::internal())
        .await
        .unwrap();
    // Pretend the daemon had recorded a failure although the guest runs.
    f.service
        .store
        .set_observed(
            &i.id,
            &Observed {
                state: InstanceState::Failed,
                exit_code: None,
                last_error: Some("x".into()),
            },
            &now_rfc3339(),
        )
        .unwrap();
    assert_eq!(f.service.reconcile_once().await.unwrap().adopted, 1);
    assert_eq!(
        f.service.get(&Caller::internal(), "a").unwrap().state,
        InstanceState::Running
    );
    assert_eq!(f.backend.creates(), 1, "adoption does not reboot the guest");
    // A stopped instance whose domain was started behind the daemon's back is stopped again.
    f.service.stop(&Caller::internal(), "a").await.unwrap();
    let def = f
        .service
        .definition(&f.service.store.by_name("a").unwrap().unwrap())
        .unwrap();
    f.backend.create(&def).unwrap();
    assert_eq!(f.service.reconcile_once().await.unwrap().stopped, 1);
    assert!(f.backend.status(&i.id).unwrap().is_none());
}

fn with_restart(f: &Fixture, name: &str, policy: rhyzome_api::RestartPolicy) -> InstanceSpec {
    InstanceSpec {
        restart: Some(policy),
        ..spec(f, name)
    }
}

/// Makes the guest of `name` end with `console_tail` as its last words, as libvirt would
/// report a powered-off transient domain.
fn end_run(f: &Fixture, name: &str, console_tail: &str) {
    let i = f.service.get(&Caller::internal(), name).unwrap();
    let log = console::log_path(&f.state_dir, &i.id);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    std::io::Write::write_all(&mut file, console_tail.as_bytes()).unwrap();
    f.backend.vanish(&i.id);
}

async fn settle(f: &Fixture, name: &str, want: InstanceState) -> Instance {
    for _ in 0..200 {
        f.service.reconcile_once().await.unwrap();
        let i = f.service.get(&Caller::internal(), name).unwrap();
        if i.state == want {
            return i;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "{name} never became {want}: {:?}",
        f.service.get(&Caller::internal(), name)
    );
}

#[tokio::test]
async fn on_failure_restarts_after_a_back_off_and_gives_up_on_a_loop() {
    let f = fixture();
    let policy = rhyzome_api::RestartPolicy {
        policy: RestartMode::OnFailure,
        max_retries: Some(2),
        exit_codes: None,
    };
    f.service
        .create(with_restart(&f, "a", policy), &Caller::internal())
        .await
        .unwrap();
    end_run(&f, "a", "Solo5: solo5_exit(3) called\n");
    f.service.reconcile_once().await.unwrap();
    let ended = f.service.get(&Caller::internal(), "a").unwrap();
    assert_eq!(
        (ended.state, ended.exit_code, ended.restart_count),
        (InstanceState::Exited, Some(3), 1)
    );
    assert!(ended.next_restart_at.is_some());
    let back = settle(&f, "a", InstanceState::Running).await;
    assert_eq!(
        (back.restart_count, back.exit_code, back.next_restart_at),
        (1, None, None)
    );
    assert_eq!(f.backend.creates(), 2);

    end_run(&f, "a", "Solo5: ABORT: x.c:1: Fatal trap\n");
    settle(&f, "a", InstanceState::Running).await;
    assert_eq!(
        f.service
            .get(&Caller::internal(), "a")
            .unwrap()
            .restart_count,
        2
    );
    end_run(&f, "a", "Solo5: solo5_exit(1) called\n");
    let failed = settle(&f, "a", InstanceState::Failed).await;
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap()
            .contains("restart loop"),
        "{failed:?}"
    );
    assert_eq!(failed.exit_code, Some(1));
    assert_eq!(f.backend.creates(), 3, "no restart after giving up");
    // A person's start ends the loop's bookkeeping.
    let again = f.service.start(&Caller::internal(), "a").await.unwrap();
    assert_eq!(
        (again.state, again.restart_count),
        (InstanceState::Running, 0)
    );
}

#[tokio::test]
async fn exit_code_filters_and_clean_exits_are_respected() {
    let f = fixture();
    let only_7 = rhyzome_api::RestartPolicy {
        policy: RestartMode::OnFailure,
        max_retries: None,
        exit_codes: Some(vec![7]),
    };
    f.service
        .create(with_restart(&f, "filtered", only_7), &Caller::internal())
        .await
        .unwrap();
    end_run(&f, "filtered", "Solo5: solo5_exit(3) called\n");
    f.service.reconcile_once().await.unwrap();
    let i = f.service.get(&Caller::internal(), "filtered").unwrap();
    assert_eq!(
        (i.state, i.exit_code, i.next_restart_at),
        (InstanceState::Exited, Some(3), None)
    );

    let always = rhyzome_api::RestartPolicy {
        policy: RestartMode::Always,
        ..Default::default()
    };
    f.service
        .create(with_restart(&f, "always", always), &Caller::internal())
        .await
        .unwrap();
    end_run(&f, "always", "Solo5: solo5_exit(0) called\n");
    settle(&f, "always", InstanceState::Running).await;

    f.service
        .create(spec(&f, "never"), &Caller::internal())
        .await
        .unwrap();
    end_run(&f, "never", "Solo5: ABORT: x\n");
    f.service.reconcile_once().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    f.service.reconcile_once().await.unwrap();
    assert_eq!(
        f.service.get(&Caller::internal(), "never").unwrap().state,
        InstanceState::Crashed
    );
}

#[tokio::test]
async fn bad_restart_policies_are_refused() {
    let f = fixture();
    let codes_without_on_failure = rhyzome_api::RestartPolicy {
        policy: RestartMode::Always,
        max_retries: None,
        exit_codes: Some(vec![1]),
    };
    match f
        .service
        .create(
            with_restart(&f, "a", codes_without_on_failure),
            &Caller::internal(),
        )
        .await
    {
        Err(ServiceError::Invalid(e)) => assert_eq!(e.field, "restart.exit_codes"),
        other => panic!("{other:?}"),
    }
    let empty = rhyzome_api::RestartPolicy {
        policy: RestartMode::OnFailure,
        max_retries: Some(20_000),
        exit_codes: None,
    };
    match f
        .service
        .create(with_restart(&f, "a", empty), &Caller::internal())
        .await
    {
        Err(ServiceError::Invalid(e)) => assert_eq!(e.field, "restart.max_retries"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn state_changes_are_published_as_events() {
    let f = fixture();
    let log = f.service.events();
    let mut cursor = log.cursor(None).unwrap();
    f.service
        .create(spec(&f, "a"), &Caller::internal())
        .await
        .unwrap();
    end_run(&f, "a", "Solo5: solo5_exit(4) called\n");
    f.service.reconcile_once().await.unwrap();
    f.service.delete(&Caller::internal(), "a").await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match log.next(&mut cursor).await {
            crate::service::event_log::Item::Event { event, .. } => {
                assert_eq!(event.instance, "a");
                seen.push((event.state, event.exit_code));
            }
            other => panic!("{other:?}"),
        }
    }
    let more = tokio::time::timeout(std::time::Duration::from_millis(50), log.next(&mut cursor));
    assert!(more.await.is_err(), "no further events");
    assert_eq!(
        seen,
        vec![
            ("starting".to_string(), None),
            ("running".to_string(), None),
            ("exited".to_string(), Some(4)),
            ("deleted".to_string(), None),
        ]
    );
}

#[tokio::test]
async fn lifecycle_notices_wake_the_reconciler() {
    let f = fixture();
    // The periodic pass is an hour away: only the notice can bring the news.
    tokio::spawn(f.service.clone().run_reconciler());
    f.service
        .create(spec(&f, "a"), &Caller::internal())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    end_run(&f, "a", "Solo5: solo5_exit(9) called\n");
    let mut state = None;
    for _ in 0..100 {
        let i = f.service.get(&Caller::internal(), "a").unwrap();
        if i.state == InstanceState::Exited {
            state = i.exit_code;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(state, Some(9));
}

#[tokio::test]
async fn after_a_host_loss_autostart_instances_return_in_priority_order() {
    let f = fixture();
    for (name, priority, autostart) in [
        ("db", 1, true),
        ("web", 3, true),
        ("cache", 2, true),
        ("router", 1, true),
        ("scratch", 0, false),
    ] {
        f.service
            .create(
                InstanceSpec {
                    startup_priority: Some(priority),
                    autostart: Some(autostart),
                    ..spec(&f, name)
                },
                &Caller::internal(),
            )
            .await
            .unwrap();
    }
    // The host goes down: every guest vanishes, the daemon with them.
    for i in f.service.list(&Caller::internal()).unwrap() {
        f.backend.vanish(&i.id);
    }
    let before = f.backend.created_names().len();
    let report = f.service.recover().await.unwrap();
    assert_eq!(report.started, 4, "{report:?}");
    let order: Vec<String> = f.backend.created_names()[before..].to_vec();
    let pos = |n: &str| {
        order
            .iter()
            .position(|o| o == &format!("rhyzome-{n}"))
            .unwrap()
    };
    assert!(
        pos("db") < pos("cache") && pos("router") < pos("cache"),
        "{order:?}"
    );
    assert!(pos("cache") < pos("web"), "{order:?}");
    let scratch = f.service.get(&Caller::internal(), "scratch").unwrap();
    assert_eq!(scratch.state, InstanceState::Exited);
    assert!(scratch.last_error.unwrap().contains("vanished"));
    for n in ["db", "web", "cache", "router"] {
        assert_eq!(
            f.service.get(&Caller::internal(), n).unwrap().state,
            InstanceState::Running,
            "{n}"
        );
    }
}

#[tokio::test]
async fn the_cached_listing_follows_every_change() {
    let f = fixture();
    let decode = |b: bytes::Bytes| -> Vec<(String, InstanceState)> {
        let l: rhyzome_api::InstanceList = serde_json::from_slice(&b).unwrap();
        l.instances.into_iter().map(|i| (i.name, i.state)).collect()
    };
    assert!(decode(f.service.list_json(&Caller::internal(), None).unwrap()).is_empty());
    f.service
        .create(spec(&f, "a"), &Caller::internal())
        .await
        .unwrap();
    assert_eq!(
        decode(f.service.list_json(&Caller::internal(), None).unwrap()),
        vec![("a".into(), InstanceState::Running)]
    );
    // Unchanged store: the very same bytes.
    let (x, y) = (
        f.service.list_json(&Caller::internal(), None).unwrap(),
        f.service.list_json(&Caller::internal(), None).unwrap(),
    );
    assert_eq!(x.as_ptr(), y.as_ptr());
    end_run(&f, "a", "Solo5: solo5_exit(2) called\n");
    f.service.reconcile_once().await.unwrap();
    assert_eq!(
        decode(f.service.list_json(&Caller::internal(), None).unwrap()),
        vec![("a".into(), InstanceState::Exited)]
    );
    f.service.delete(&Caller::internal(), "a").await.unwrap();
    assert!(decode(f.service.list_json(&Caller::internal(), None).unwrap()).is_empty());
}

#[tokio::test]
async fn since_returns_the_output_written_after_a_time() {
    let f = fixture();
    let i = f
        .service
        .create(spec(&f, "a"), &Caller::internal())
        .await
        .unwrap();
    let log = console::log_path(&f.state_dir, &i.id);
    std::fs::write(&log, "old\n").unwrap();
    f.service.reconcile_once().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let t = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut file| std::io::Write::write_all(&mut file, b"new\n"))
        .unwrap();
    f.service.reconcile_once().await.unwrap();
    let q = |since: &str| rhyzome_api::ConsoleQuery {
        since: Some(since.into()),
        ..Default::default()
    };
    assert_eq!(
        f.service
            .console(&Caller::internal(), "a", &q(&t))
            .await
            .unwrap()
            .0,
        b"new\n"
    );
    assert_eq!(
        f.service
            .console(&Caller::internal(), "a", &q("1h"))
            .await
            .unwrap()
            .0,
        b"old\nnew\n"
    );
    match f
        .service
        .console(&Caller::internal(), "a", &q("last tuesday"))
        .await
    {
        Err(ServiceError::Invalid(e)) => assert_eq!(e.field, "since"),
        other => panic!("{other:?}"),
    }
}
