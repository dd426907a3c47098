//! Several hosts against fake backends: placement by name and by policy, the scheduler's
//! recorded reason, a host that goes away (its instances `unknown`, never `exited`) and comes
//! back (adopted), and a stale copy left on a host that was down destroyed when it returns.

use super::*;
use crate::backend::fake::FakeBackend;
use rhyzome_api::{InstanceSpec, PlacementPolicy};
use std::time::Instant;

struct Lab {
    _dir: tempfile::TempDir,
    kernel: String,
    service: Arc<Service>,
    a: Arc<FakeBackend>,
    b: Arc<FakeBackend>,
}

/// A daemon on hosts `a` (primary) and `b`, with `b`'s settings merged in.
async fn lab(b_settings: serde_json::Value) -> Lab {
    // `b` names a server: a remote host, reached only through libvirt (kernels uploaded,
    // consoles read back).
    let mut b_host =
        serde_json::json!({"Name": "b", "URI": "test://b/default", "Labels": {"rack": "2"}});
    for (k, v) in b_settings.as_object().unwrap() {
        b_host[k] = v.clone();
    }
    let (dir, config, kernel) = crate::testing::fake_setup(&serde_json::json!({
        "DomainType": "test",
        "ReconcileIntervalSeconds": 3600,
        // Each scrape reads the hosts afresh.
        "MetricsMaxAgeMillis": 0,
        "Hosts": [{"Name": "a", "URI": "test:///a"}, b_host],
    }));
    let store = Store::open(&config.state_dir).unwrap();
    let (a, b) = (Arc::new(FakeBackend::new()), Arc::new(FakeBackend::new()));
    let b_for_connector = b.clone();
    let connector: hosts::Connector = Arc::new(move |h: &crate::config::HostConfig| {
        assert_eq!(h.name, "b");
        Ok((b_for_connector.clone() as Arc<dyn Hypervisor>, "test"))
    });
    let service = Service::with_hosts(config, "test", store, a.clone(), connector);
    service.connect_hosts().await;
    Lab {
        _dir: dir,
        kernel,
        service,
        a,
        b,
    }
}

impl Lab {
    fn spec(&self, name: &str) -> InstanceSpec {
        InstanceSpec {
            name: name.into(),
            kernel: self.kernel.clone(),
            ..Default::default()
        }
    }

    async fn create(&self, spec: InstanceSpec) -> Result<rhyzome_api::Instance, ServiceError> {
        self.service.create(spec, &Caller::internal()).await
    }

    fn host_of(&self, name: &str) -> String {
        self.service
            .get(&Caller::internal(), name)
            .unwrap()
            .placement
            .unwrap()
            .host
    }
}

#[tokio::test]
async fn a_pinned_instance_runs_on_its_host_and_says_so() {
    let lab = lab(serde_json::json!({})).await;
    let i = lab
        .create(InstanceSpec {
            host: Some("b".into()),
            ..lab.spec("web")
        })
        .await
        .unwrap();
    let placement = i.placement.unwrap();
    assert_eq!(
        (placement.host.as_str(), placement.how.as_str()),
        ("b", "pinned")
    );
    assert!(lab.b.definition(&i.id).is_some(), "the domain is on b");
    assert!(lab.a.definition(&i.id).is_none(), "and not on a");
    let hosts = lab.service.list_hosts(&Caller::internal()).unwrap();
    let counts: Vec<(String, u32, bool)> = hosts
        .iter()
        .map(|h| (h.name.clone(), h.instances, h.reachable))
        .collect();
    assert_eq!(counts, [("a".into(), 0, true), ("b".into(), 1, true)]);
    assert_eq!(hosts[1].labels.get("rack").map(String::as_str), Some("2"));
    // Deleting it destroys its domain on b.
    lab.service
        .delete(&Caller::internal(), "web")
        .await
        .unwrap();
    assert!(lab.b.definition(&i.id).is_none());
}

#[tokio::test]
async fn an_unknown_host_is_the_request_s_fault_and_names_the_field() {
    let lab = lab(serde_json::json!({})).await;
    let e = lab
        .create(InstanceSpec {
            host: Some("nosuch".into()),
            ..lab.spec("web")
        })
        .await
        .unwrap_err();
    match e {
        ServiceError::Invalid(f) => {
            assert_eq!(f.field, "host");
            assert!(f.message.contains("a, b"), "{}", f.message);
        }
        other => panic!("expected a field error, got {other:?}"),
    }
    assert!(
        lab.service.store.by_name("web").unwrap().is_none(),
        "nothing left behind"
    );
    assert!(matches!(
        lab.service.get_host(&Caller::internal(), "nosuch"),
        Err(ServiceError::HostNotFound(_))
    ));
}

#[tokio::test]
async fn spread_alternates_and_binpack_fills_the_first_host_up_to_its_limit() {
    let lab = lab(serde_json::json!({})).await;
    for n in 0..4 {
        lab.create(lab.spec(&format!("s{n}"))).await.unwrap();
    }
    let on_b = (0..4)
        .filter(|n| lab.host_of(&format!("s{n}")) == "b")
        .count();
    assert_eq!(on_b, 2, "spread puts half on each host");
    let reason = lab
        .service
        .get(&Caller::internal(), "s1")
        .unwrap()
        .placement
        .unwrap()
        .reason;
    assert!(reason.starts_with("fewest instances"), "{reason}");

    let lab = lab_with_limit().await;
    for n in 0..3 {
        lab.create(InstanceSpec {
            placement: Some(PlacementPolicy::Binpack),
            ..lab.spec(&format!("p{n}"))
        })
        .await
        .unwrap();
    }
    let hosts: Vec<String> = (0..3).map(|n| lab.host_of(&format!("p{n}"))).collect();
    assert_eq!(
        hosts,
        ["a", "a", "b"],
        "binpack fills a (MaxInstances 2) first"
    );
    let reason = lab
        .service
        .get(&Caller::internal(), "p2")
        .unwrap()
        .placement
        .unwrap()
        .reason;
    assert!(
        reason.contains("a (full (2 of MaxInstances 2))"),
        "{reason}"
    );
}

async fn lab_with_limit() -> Lab {
    let l = lab(serde_json::json!({})).await;
    // Same lab, but `a` limited to two: rebuilt with the setting.
    let (dir, config, kernel) = crate::testing::fake_setup(&serde_json::json!({
        "DomainType": "test",
        "ReconcileIntervalSeconds": 3600,
        "Hosts": [
            {"Name": "a", "URI": "test:///a", "MaxInstances": 2},
            {"Name": "b", "URI": "test://b/default"}
        ],
    }));
    let store = Store::open(&config.state_dir).unwrap();
    let b = l.b.clone();
    let connector: hosts::Connector = Arc::new(move |_h: &crate::config::HostConfig| {
        Ok((b.clone() as Arc<dyn Hypervisor>, "test"))
    });
    let service = Service::with_hosts(config, "test", store, l.a.clone(), connector);
    service.connect_hosts().await;
    Lab {
        _dir: dir,
        kernel,
        service,
        a: l.a.clone(),
        b: l.b.clone(),
    }
}

#[tokio::test]
async fn the_selector_and_concurrent_creates_are_honoured() {
    let lab = lab(serde_json::json!({})).await;
    let selector: std::collections::BTreeMap<String, String> =
        [("rack".to_string(), "2".to_string())].into();
    let i = lab
        .create(InstanceSpec {
            host_selector: Some(selector.clone()),
            ..lab.spec("r2")
        })
        .await
        .unwrap();
    assert_eq!(i.placement.unwrap().host, "b");
    let none: std::collections::BTreeMap<String, String> =
        [("rack".to_string(), "9".to_string())].into();
    let e = lab
        .create(InstanceSpec {
            host_selector: Some(none),
            ..lab.spec("r9")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ServiceError::Conflict { field: Some("host_selector"), message } if message.contains("no label rack=9")),
        "{e:?}"
    );
    // Ten at once: the reservations keep spread even.
    let creates = (0..10).map(|n| lab.create(lab.spec(&format!("c{n}"))));
    for r in futures_util::future::join_all(creates).await {
        r.unwrap();
    }
    let on_a = (0..10)
        .filter(|n| lab.host_of(&format!("c{n}")) == "a")
        .count();
    // b already has r2: spread gives a six and b five of the eleven.
    assert_eq!(on_a, 6);
}

#[tokio::test]
async fn an_unreachable_host_makes_its_instances_unknown_and_its_return_adopts_them() {
    let lab = lab(serde_json::json!({})).await;
    let remote = lab
        .create(InstanceSpec {
            host: Some("b".into()),
            ..lab.spec("remote")
        })
        .await
        .unwrap();
    lab.create(InstanceSpec {
        host: Some("a".into()),
        ..lab.spec("local")
    })
    .await
    .unwrap();
    lab.b.set_down(true);
    lab.service.reconcile_once().await.unwrap();
    let i = lab.service.get(&Caller::internal(), "remote").unwrap();
    assert_eq!(i.state, InstanceState::Unknown, "never exited");
    assert!(i.last_error.unwrap().contains("unreachable"));
    let local = lab.service.get(&Caller::internal(), "local").unwrap();
    assert_eq!(
        local.state,
        InstanceState::Running,
        "the other host serves on"
    );
    let b = lab.service.get_host(&Caller::internal(), "b").unwrap();
    assert!(!b.reachable && b.unreachable_since.is_some());
    // Calls for b fail at once, as 503s, and the scheduler passes it over.
    let e = lab
        .create(InstanceSpec {
            host: Some("b".into()),
            ..lab.spec("more")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, ServiceError::Backend(BackendError::Unavailable(_))),
        "{e:?}"
    );
    let placed = lab.create(lab.spec("elsewhere")).await.unwrap();
    let placement = placed.placement.unwrap();
    assert_eq!(placement.host, "a");
    assert!(
        placement.reason.contains("b (unreachable"),
        "{}",
        placement.reason
    );
    // Still down: a check changes nothing.
    let retry_at = Instant::now() + std::time::Duration::from_secs(2);
    assert!(lab.service.hosts().check(retry_at, true).is_empty());
    // Back: the next due check reconnects, and the next pass adopts the guest.
    lab.b.set_down(false);
    let changes = lab
        .service
        .hosts()
        .check(Instant::now() + std::time::Duration::from_secs(10), true);
    assert_eq!(changes, [hosts::HostChange::Reachable { host: "b".into() }]);
    let report = lab.service.reconcile_once().await.unwrap();
    assert_eq!(report.adopted, 1, "{report:?}");
    let i = lab.service.get(&Caller::internal(), "remote").unwrap();
    assert_eq!(i.state, InstanceState::Running);
    assert!(lab.b.definition(&remote.id).is_some());
}

#[tokio::test]
async fn a_guest_lost_with_its_host_is_not_an_exit_of_its_own() {
    let lab = lab(serde_json::json!({})).await;
    let remote = lab
        .create(InstanceSpec {
            host: Some("b".into()),
            autostart: Some(true),
            ..lab.spec("remote")
        })
        .await
        .unwrap();
    lab.b.set_down(true);
    lab.service.reconcile_once().await.unwrap();
    // The host rebooted meanwhile: the guest is gone, without an exit line.
    lab.b.vanish(&remote.id);
    lab.b.set_down(false);
    lab.service
        .hosts()
        .check(Instant::now() + std::time::Duration::from_secs(10), true);
    let report = lab.service.reconcile_once().await.unwrap();
    assert_eq!(report.started, 1, "autostart brings it back: {report:?}");
    assert_eq!(
        lab.service
            .get(&Caller::internal(), "remote")
            .unwrap()
            .state,
        InstanceState::Running
    );
}

#[tokio::test]
async fn a_failover_instance_moves_after_its_host_stays_down_and_the_stale_copy_is_destroyed() {
    let lab = lab(serde_json::json!({})).await;
    // Spread puts the first on a, the second on b.
    let stays = lab.create(lab.spec("stays")).await.unwrap();
    let moves = lab
        .create(InstanceSpec {
            failover: Some(true),
            ..lab.spec("moves")
        })
        .await
        .unwrap();
    let pinned = lab
        .create(InstanceSpec {
            host: Some("b".into()),
            ..lab.spec("pinned")
        })
        .await
        .unwrap();
    assert_eq!(stays.placement.unwrap().host, "a");
    assert_eq!(moves.placement.as_ref().unwrap().host, "b");
    lab.b.set_down(true);
    lab.service.reconcile_once().await.unwrap();
    let since = lab
        .service
        .hosts()
        .get("b")
        .unwrap()
        .unreachable_since()
        .unwrap();
    // Not yet: down for less than FailoverAfterSeconds (300 by default).
    let early = since + std::time::Duration::from_secs(299);
    assert_eq!(lab.service.fail_over_due(early).await, 0);
    let late = since + std::time::Duration::from_secs(301);
    assert_eq!(
        lab.service.fail_over_due(late).await,
        1,
        "only the failover instance"
    );
    let moved = lab.service.get(&Caller::internal(), "moves").unwrap();
    let placement = moved.placement.unwrap();
    assert_eq!(
        (placement.host.as_str(), placement.how.as_str()),
        ("a", "failover")
    );
    assert!(
        placement.reason.contains("\"b\" stayed unreachable"),
        "{}",
        placement.reason
    );
    assert_eq!(moved.state, InstanceState::Running);
    assert_eq!(moved.id, moves.id, "the same identity");
    assert!(lab.a.definition(&moves.id).is_some());
    let pinned_now = lab.service.get(&Caller::internal(), "pinned").unwrap();
    assert_eq!(
        pinned_now.state,
        InstanceState::Unknown,
        "a pinned instance waits"
    );
    // b returns with the old guest still running: the record wins, the copy goes.
    assert!(lab.b.definition(&moves.id).is_some());
    lab.b.set_down(false);
    lab.service
        .hosts()
        .check(Instant::now() + std::time::Duration::from_secs(10), true);
    let mut cursor = lab.service.events().cursor(None).unwrap();
    let report = lab.service.reconcile_once().await.unwrap();
    assert_eq!(report.orphans_destroyed, 1, "{report:?}");
    assert!(
        lab.b.definition(&moves.id).is_none(),
        "stale copy destroyed"
    );
    assert!(
        lab.a.definition(&moves.id).is_some(),
        "the moved guest runs on"
    );
    assert!(
        lab.b.definition(&pinned.id).is_some(),
        "the pinned one is adopted"
    );
    assert_eq!(
        lab.service
            .get(&Caller::internal(), "pinned")
            .unwrap()
            .state,
        InstanceState::Running
    );
    let mut stale = None;
    while stale.is_none() {
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            lab.service.events().next(&mut cursor),
        )
        .await
        .expect("an event says the stale copy was destroyed");
        if let event_log::Item::Event { event, .. } = next {
            stale = (event.state == "stale_destroyed").then_some(event);
        }
    }
    let reason = stale.unwrap().reason.unwrap();
    assert!(reason.contains("record of its host wins"), "{reason}");
}

#[tokio::test]
async fn a_test_bed_spreads_its_groups_by_their_policy_and_shows_nodes_per_host() {
    let lab = lab(serde_json::json!({})).await;
    let file = format!(
        r#"name = "bed"

[[groups]]
name = "spread"
count = 6
kernel = "{k}"

[[groups]]
name = "packed"
count = 3
kernel = "{k}"
placement = "binpack"
host_selector = {{ rack = "2" }}
failover = true
"#,
        k = lab.kernel
    );
    lab.service
        .apply_testbed(
            &Caller::internal(),
            rhyzome_api::TestbedApply {
                file,
                dry_run: Some(false),
                kernel_files: None,
            },
        )
        .await
        .unwrap();
    let mut converged = false;
    for _ in 0..50 {
        if lab.service.converge_testbed("bed").await.unwrap() {
            converged = true;
            break;
        }
    }
    assert!(converged, "the bed did not converge");
    let bed = lab.service.get_testbed(&Caller::internal(), "bed").unwrap();
    let hosts = |g: &str| {
        bed.groups
            .iter()
            .find(|s| s.name == g)
            .unwrap()
            .hosts
            .clone()
    };
    // The file's order: the spread group halves itself over the two hosts, then the packed
    // one (only b has rack=2) goes to b whole.
    assert_eq!(hosts("packed"), [("b".to_string(), 3)].into());
    assert_eq!(
        hosts("spread"),
        [("a".to_string(), 3), ("b".to_string(), 3)].into()
    );
    let member = lab
        .service
        .get(&Caller::internal(), "bed-packed-0")
        .unwrap();
    assert!(member.failover);
    assert_eq!(member.placement.unwrap().how, "binpack");
}

#[tokio::test]
async fn metrics_name_each_guest_s_host_and_say_which_hosts_answer() {
    let lab = lab(serde_json::json!({})).await;
    for (name, host) in [("on-a", "a"), ("on-b", "b")] {
        lab.create(InstanceSpec {
            host: Some(host.into()),
            ..lab.spec(name)
        })
        .await
        .unwrap();
    }
    let text = lab.service.scrape(&Caller::internal()).await.unwrap();
    let cpu_line = |instance: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("libvirt_domain_info_cpu_time_seconds_total{")
                    && l.contains(&format!("instance=\"{instance}\""))
            })
            .unwrap_or_else(|| panic!("no CPU sample of {instance} in\n{text}"))
            .to_string()
    };
    assert!(
        cpu_line("on-a").contains("host=\"a\""),
        "{}",
        cpu_line("on-a")
    );
    assert!(
        cpu_line("on-b").contains("host=\"b\""),
        "{}",
        cpu_line("on-b")
    );
    assert!(text.contains("rhyzome_host_up{host=\"a\"} 1"), "{text}");
    assert!(text.contains("rhyzome_host_up{host=\"b\"} 1"), "{text}");

    // b goes away: its guest leaves the exposition, and b says it is down.
    lab.b.set_down(true);
    lab.service.reconcile_once().await.unwrap();
    let text = lab.service.scrape(&Caller::internal()).await.unwrap();
    assert!(text.contains("rhyzome_host_up{host=\"b\"} 0"), "{text}");
    assert!(text.contains("rhyzome_host_up{host=\"a\"} 1"), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("libvirt_") && l.contains("instance=\"on-b\"")),
        "{text}"
    );
    assert!(
        text.contains("rhyzome_instances{state=\"unknown\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_host_names_its_own_bridge_and_the_create_checks_it_there() {
    let lab = lab(serde_json::json!({"Bridges": {"br0": "br-lan"}})).await;
    let on_a = lab
        .create(InstanceSpec {
            host: Some("a".into()),
            ..lab.spec("on-a")
        })
        .await
        .unwrap();
    let on_b = lab
        .create(InstanceSpec {
            host: Some("b".into()),
            ..lab.spec("on-b")
        })
        .await
        .unwrap();
    // The record keeps the bridge the instance names; each host's domain joins its own.
    assert_eq!(on_b.network.as_ref().unwrap().bridge, "br0");
    assert_eq!(lab.a.definition(&on_a.id).unwrap().nics[0].bridge, "br0");
    assert_eq!(lab.b.definition(&on_b.id).unwrap().nics[0].bridge, "br-lan");

    // b has no br-lan: a create there is refused, naming the field, the host and both names.
    lab.b
        .set_interface("br-lan", crate::backend::InterfaceKind::Missing);
    let e = lab
        .create(InstanceSpec {
            host: Some("b".into()),
            ..lab.spec("on-b-again")
        })
        .await
        .unwrap_err();
    let ServiceError::Invalid(e) = e else {
        panic!("{e:?}")
    };
    assert!(
        e.message.contains("\"br0\"")
            && e.message.contains("\"br-lan\"")
            && e.message.contains("\"b\""),
        "{}",
        e.message
    );
    assert!(lab.service.get(&Caller::internal(), "on-b-again").is_err());
}

#[test]
fn a_host_that_never_answers_does_not_hold_up_the_others() {
    let config = |name: &str| crate::config::HostConfig {
        name: name.into(),
        uri: format!("test://{name}/default"),
        labels: Default::default(),
        max_instances: None,
        insecure: false,
        frame_address: None,
        bridges: Default::default(),
    };
    let configs = [config("a"), config("blackholed"), config("c")];
    // The connection to "blackholed" hangs until the test lets it go (as a SYN to a host
    // that is off waits for TCP's timeout).
    let (release, hang) = std::sync::mpsc::channel::<()>();
    let hang = std::sync::Mutex::new(hang);
    let connector: hosts::Connector = Arc::new(move |h: &crate::config::HostConfig| {
        if h.name == "blackholed" {
            let _ = hang.lock().unwrap().recv();
            return Err(BackendError::Unavailable("no route".into()));
        }
        Ok((Arc::new(FakeBackend::new()) as Arc<dyn Hypervisor>, "test"))
    });
    let registry =
        hosts::HostRegistry::new(&configs, Arc::new(FakeBackend::new()), "test", connector);
    let started = Instant::now();
    let changes = registry.check(Instant::now(), false);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(changes, [hosts::HostChange::Reachable { host: "c".into() }]);
    assert!(registry.get("c").unwrap().reachable());
    // The hung check is not started twice; once it gives up, its outcome is reported.
    let later = Instant::now() + std::time::Duration::from_secs(120);
    assert!(registry.check(later, false).is_empty());
    release.send(()).unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let error = || {
        registry
            .get("blackholed")
            .unwrap()
            .error()
            .unwrap_or_default()
    };
    while !error().contains("no route") {
        assert!(Instant::now() < deadline, "the hung check never finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!registry.get("blackholed").unwrap().reachable());
}

fn lan_request() -> rhyzome_api::NetworkCreate {
    rhyzome_api::NetworkCreate {
        name: "lan".into(),
        subnet: "10.90.0.0/24".into(),
        gateway: None,
        mode: Some(rhyzome_api::ForwardMode::Isolated),
        dhcp: None,
        emulated: None,
        seed: None,
        link: None,
    }
}

fn on_lan(lab: &Lab, name: &str, host: &str) -> InstanceSpec {
    InstanceSpec {
        host: Some(host.into()),
        network: Some(rhyzome_api::NetworkSpec {
            name: Some("lan".into()),
            ..Default::default()
        }),
        ..lab.spec(name)
    }
}

#[tokio::test]
async fn a_managed_network_reaches_a_host_with_its_first_guest_and_leaves_after_its_last() {
    let lab = lab(serde_json::json!({})).await;
    lab.service
        .create_network(lan_request(), &Caller::internal())
        .await
        .unwrap();
    assert!(lab.b.network_definition("rhyzome-lan").is_none());
    let one = lab.create(on_lan(&lab, "one", "b")).await.unwrap();
    let two = lab.create(on_lan(&lab, "two", "b")).await.unwrap();
    let (def, active) = lab.b.network_definition("rhyzome-lan").expect("made on b");
    assert!(active);
    assert_eq!(def.subnet.to_string(), "10.90.0.0/24");
    assert_eq!(def.mark.daemon, lab.service.daemon_id);
    // One address space: b's guests got the next addresses of the controller's pool.
    let ip = |i: &rhyzome_api::Instance| i.network.as_ref().unwrap().ipv4.clone().unwrap();
    assert_eq!(
        (ip(&one), ip(&two)),
        ("10.90.0.2/24".into(), "10.90.0.3/24".into())
    );
    lab.service
        .delete(&Caller::internal(), "one")
        .await
        .unwrap();
    lab.service.reconcile_once().await.unwrap();
    assert!(
        lab.b.network_definition("rhyzome-lan").is_some(),
        "two needs it"
    );
    lab.service
        .delete(&Caller::internal(), "two")
        .await
        .unwrap();
    lab.service.reconcile_once().await.unwrap();
    assert!(
        lab.b.network_definition("rhyzome-lan").is_none(),
        "gone with its last guest"
    );
}

#[tokio::test]
async fn another_owner_s_network_of_that_name_on_a_host_is_a_conflict_and_left_alone() {
    let lab = lab(serde_json::json!({})).await;
    lab.service
        .create_network(lan_request(), &Caller::internal())
        .await
        .unwrap();
    let foreign = crate::backend::network::NetworkStatus {
        libvirt_name: "rhyzome-lan".into(),
        active: true,
        mark: None,
        subnets: vec![rhyzome_api::networks::Ipv4Subnet::parse("10.91.0.0/24").unwrap()],
        bridge: Some("virbr9".into()),
        hosts: Vec::new(),
    };
    lab.b.inject_network(foreign.clone());
    let e = lab.create(on_lan(&lab, "blocked", "b")).await.unwrap_err();
    assert!(
        matches!(&e, ServiceError::Conflict { field: Some("network"), message } if message.contains("\"b\"")),
        "{e:?}"
    );
    lab.service.reconcile_once().await.unwrap();
    let listed = lab.b.networks().unwrap();
    assert_eq!(listed, [foreign], "never redefined nor removed");
}
