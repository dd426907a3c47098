//! Daemon ownership against the fake backend: two daemons on one hypervisor, with the same
//! `Hostname`, each adopt, reconcile and destroy only their own domains.

use super::*;
use crate::backend::fake::FakeBackend;
use crate::console;
use rhyzome_api::{Instance, InstanceSpec};

/// One daemon: its own state directory (so its own store and identity), on a shared backend.
struct Daemon {
    _dir: tempfile::TempDir,
    kernel: String,
    service: Arc<Service>,
}

fn daemon_on(backend: &Arc<FakeBackend>) -> Daemon {
    let (dir, config, kernel) = crate::testing::fake_setup(&serde_json::json!({
        "Hostname": "localhost",
        "DomainType": "test",
        "ReconcileIntervalSeconds": 3600,
    }));
    let store = Store::open(&config.state_dir).unwrap();
    let service = Service::new(config, "test", store, backend.clone());
    Daemon {
        _dir: dir,
        kernel,
        service,
    }
}

impl Daemon {
    /// Creates instance `name` of the test kernel, as the daemon itself would.
    async fn create(&self, name: &str) -> Instance {
        self.service
            .create(spec(self, name), &Caller::internal())
            .await
            .unwrap()
    }
}

fn spec(d: &Daemon, name: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        kernel: d.kernel.clone(),
        kernel_parameters: String::new(),
        ..Default::default()
    }
}

#[tokio::test]
async fn two_daemons_with_one_hostname_leave_each_other_s_guests_alone() {
    let backend = Arc::new(FakeBackend::new());
    let a = daemon_on(&backend);
    let b = daemon_on(&backend);
    let guest_a = a.create("web-a").await;
    let guest_b = b.create("web-b").await;
    // Each daemon's start-up pass, then a steady one.
    for d in [&a, &b, &a, &b] {
        let report = d.service.recover().await.unwrap();
        assert_eq!(report.orphans_destroyed, 0, "{report:?}");
        d.service.reconcile_once().await.unwrap();
    }
    for (d, guest) in [(&a, &guest_a), (&b, &guest_b)] {
        assert!(
            backend.status(&guest.id).unwrap().is_some(),
            "{} was destroyed",
            guest.name
        );
        assert_eq!(
            d.service
                .get(&Caller::internal(), &guest.name)
                .unwrap()
                .state,
            InstanceState::Running
        );
    }
}

/// The mark a release before identities would have put on a domain of this daemon's: its
/// host, no daemon identity (how libvirt's metadata gives it back is tested with the XML, in
/// `backend/libvirt/domain_xml.rs`).
fn legacy(d: &Daemon, uuid: &str) -> crate::backend::DomainMark {
    let mark = d.service.backend.mark(uuid).unwrap().unwrap();
    assert_eq!(mark.daemon.as_deref(), Some(d.service.daemon_id.as_str()));
    crate::backend::DomainMark {
        daemon: None,
        ..mark
    }
}

#[tokio::test]
async fn an_old_style_domain_is_adopted_by_its_owner_and_ignored_by_a_stranger() {
    let backend = Arc::new(FakeBackend::new());
    let owner = daemon_on(&backend);
    let stranger = daemon_on(&backend);
    let i = owner.create("old").await;
    // As if the domain had been made before the upgrade, and the daemon had died meanwhile.
    let old = legacy(&owner, &i.id);
    backend.inject(backend.status(&i.id).unwrap().unwrap(), Some(old.clone()));
    owner
        .service
        .store
        .set_observed(
            &i.id,
            &Observed {
                state: InstanceState::Starting,
                exit_code: None,
                last_error: None,
            },
            &now_rfc3339(),
        )
        .unwrap();
    let report = stranger.service.recover().await.unwrap();
    assert_eq!(
        (report.orphans_destroyed, report.left_alone),
        (0, 1),
        "{report:?}"
    );
    // Seen once, not again on every pass.
    assert_eq!(
        stranger.service.reconcile_once().await.unwrap().left_alone,
        0
    );
    let report = owner.service.recover().await.unwrap();
    assert_eq!((report.adopted, report.started), (1, 0), "{report:?}");
    assert_eq!(backend.creates(), 1, "adopted, not rebooted");
    assert_eq!(
        owner.service.get(&Caller::internal(), "old").unwrap().state,
        InstanceState::Running
    );
    // The owner leaves alone an old-style domain its database does not have, too.
    let mut stray = backend.status(&i.id).unwrap().unwrap();
    stray.uuid = "55555555-5555-5555-5555-555555555555".into();
    stray.name = "rhyzome-stray".into();
    backend.inject(stray.clone(), Some(old));
    let report = owner.service.reconcile_once().await.unwrap();
    assert_eq!(
        (report.orphans_destroyed, report.left_alone),
        (0, 1),
        "{report:?}"
    );
    assert!(backend.status(&stray.uuid).unwrap().is_some());
}

#[tokio::test]
async fn a_name_held_by_another_daemon_is_a_409_that_names_it() {
    let backend = Arc::new(FakeBackend::new());
    let a = daemon_on(&backend);
    let b = daemon_on(&backend);
    let held = a.create("web").await;
    let err = b
        .service
        .create(spec(&b, "web"), &Caller::internal())
        .await
        .unwrap_err();
    let ServiceError::Conflict { field, message } = &err else {
        panic!("not a conflict: {err:?}");
    };
    assert_eq!(*field, Some("name"));
    assert!(message.contains(&a.service.daemon_id), "{message}");
    assert!(message.contains("rhyzome-web"), "{message}");
    assert!(
        b.service.list(&Caller::internal()).unwrap().is_empty(),
        "nothing left behind"
    );
    assert!(backend.status(&held.id).unwrap().is_some(), "{}", held.name);
    // Another tool's domain with that name is named too.
    backend.inject(
        crate::backend::DomainStatus {
            uuid: "66666666-6666-6666-6666-666666666666".into(),
            name: "rhyzome-db".into(),
            active: true,
        },
        None,
    );
    let err = b
        .service
        .create(spec(&b, "db"), &Caller::internal())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another tool"), "{err}");
}

#[tokio::test]
async fn a_guest_destroyed_by_someone_else_says_so_and_the_daemon_s_own_destroys_do_not() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    let i = d.create("a").await;
    backend.destroy_outside(&i.id);
    let report = d.service.reconcile_once().await.unwrap();
    assert_eq!(report.destroyed_outside, 1, "{report:?}");
    let got = d.service.get(&Caller::internal(), "a").unwrap();
    assert_eq!(got.state, InstanceState::Stopped);
    assert_eq!(
        got.last_error.as_deref(),
        Some(ownership::DESTROYED_OUTSIDE)
    );
    assert_eq!(
        d.service.reconcile_once().await.unwrap(),
        Default::default(),
        "it is not restarted behind the back of whoever stopped it"
    );
    // A restart destroys the domain too; the run after it ends by itself.
    d.service.start(&Caller::internal(), "a").await.unwrap();
    d.service.restart(&Caller::internal(), "a").await.unwrap();
    let log = console::log_path(&d.service.config.state_dir, &i.id);
    std::fs::write(&log, "Solo5: solo5_exit(0) called\n").unwrap();
    backend.vanish(&i.id);
    d.service.reconcile_once().await.unwrap();
    let got = d.service.get(&Caller::internal(), "a").unwrap();
    assert_eq!((got.state, got.exit_code), (InstanceState::Exited, Some(0)));
    assert_eq!(got.last_error, None);
    // Stopping and deleting are the daemon's own destroys as well.
    d.service.start(&Caller::internal(), "a").await.unwrap();
    d.service.stop(&Caller::internal(), "a").await.unwrap();
    d.service.start(&Caller::internal(), "a").await.unwrap();
    backend.vanish(&i.id);
    d.service.reconcile_once().await.unwrap();
    assert_ne!(
        d.service
            .get(&Caller::internal(), "a")
            .unwrap()
            .last_error
            .as_deref(),
        Some(ownership::DESTROYED_OUTSIDE)
    );
}

#[tokio::test]
async fn the_event_of_the_daemon_s_own_destroy_may_arrive_after_the_next_start() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    let i = d.create("a").await;
    backend.defer_notices();
    d.service.restart(&Caller::internal(), "a").await.unwrap();
    // The restart's destroy is announced only now, after the new run started.
    backend.deliver_notices();
    let log = console::log_path(&d.service.config.state_dir, &i.id);
    std::fs::write(&log, "Solo5: solo5_exit(4) called\n").unwrap();
    backend.vanish(&i.id);
    d.service.reconcile_once().await.unwrap();
    let got = d.service.get(&Caller::internal(), "a").unwrap();
    assert_eq!(
        (got.state, got.exit_code, got.last_error),
        (InstanceState::Exited, Some(4), None)
    );
}
