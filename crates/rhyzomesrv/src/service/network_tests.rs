//! Managed networks against the fake backend: validation and overlap refusals that leave
//! nothing, ownership between two daemons on one hypervisor, and start-up recovery.

use super::*;
use crate::backend::fake::FakeBackend;
use crate::backend::network::{libvirt_network_name, HostRoute, NetworkMark, NetworkStatus};
use rhyzome_api::networks::Ipv4Subnet;
use rhyzome_api::{ForwardMode, Instance, InstanceSpec, NetworkCreate};

struct Daemon {
    _dir: tempfile::TempDir,
    kernel: String,
    service: Arc<Service>,
}

fn daemon_on(backend: &Arc<FakeBackend>) -> Daemon {
    let (dir, config, kernel) = crate::testing::fake_setup(&serde_json::json!({
        "DomainType": "test",
        "ReconcileIntervalSeconds": 3600,
    }));
    let store = Store::open(&config.state_dir).unwrap();
    Daemon {
        _dir: dir,
        kernel,
        service: Service::new(config, "test", store, backend.clone()),
    }
}

impl Daemon {
    /// Creates the managed network `name` on `subnet` as the internal caller.
    async fn network(&self, name: &str, subnet: &str) -> rhyzome_api::Network {
        self.service
            .create_network(request(name, subnet), &Caller::internal())
            .await
            .unwrap()
    }
}

fn request(name: &str, subnet: &str) -> NetworkCreate {
    NetworkCreate {
        name: name.into(),
        subnet: subnet.into(),
        gateway: None,
        mode: None,
        dhcp: None,
        emulated: None,
        seed: None,
        link: None,
    }
}

fn invalid_field(e: ServiceError) -> String {
    match e {
        ServiceError::Invalid(f) => f.field.into_owned(),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_network_is_recorded_defined_started_and_removed() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    let caller = Caller::internal();
    let mut req = request("lab", "10.20.0.0/24");
    req.mode = Some(ForwardMode::Nat);
    let n = d.service.create_network(req, &caller).await.unwrap();
    assert_eq!(n.gateway, "10.20.0.1");
    assert_eq!(n.addresses_free, 253);
    assert!(n.active);
    assert!(
        n.bridge.len() <= 15 && n.bridge.starts_with("rzn-"),
        "{}",
        n.bridge
    );
    let (def, active) = backend.network_definition("rhyzome-lab").expect("defined");
    assert!(active);
    assert_eq!(def.mode, ForwardMode::Nat);
    assert_eq!(def.mark.daemon, d.service.daemon_id);
    assert_eq!(
        d.service.list_networks(&caller).await.unwrap(),
        vec![n.clone()]
    );
    // The same name again is a conflict.
    let again = d
        .service
        .create_network(request("lab", "10.30.0.0/24"), &caller)
        .await
        .unwrap_err();
    assert!(
        matches!(
            again,
            ServiceError::Conflict {
                field: Some("name"),
                ..
            }
        ),
        "{again:?}"
    );
    d.service.delete_network(&caller, "lab").await.unwrap();
    assert!(backend.network_definition("rhyzome-lab").is_none());
    assert!(d.service.list_networks(&caller).await.unwrap().is_empty());
    assert!(matches!(
        d.service.get_network(&caller, "lab").await,
        Err(ServiceError::NetworkNotFound(_))
    ));
}

#[tokio::test]
async fn refused_creates_name_their_field_and_leave_nothing() {
    let backend = Arc::new(FakeBackend::new());
    backend.set_host_routes(vec![HostRoute {
        interface: "rzbr0".into(),
        subnet: Ipv4Subnet::parse("192.168.100.0/24").unwrap(),
    }]);
    backend.inject_network(NetworkStatus {
        libvirt_name: "default".into(),
        active: false,
        mark: None,
        subnets: vec![Ipv4Subnet::parse("192.168.122.0/24").unwrap()],
        bridge: Some("virbr0".into()),
        hosts: Vec::new(),
    });
    let d = daemon_on(&backend);
    let caller = Caller::internal();
    d.network("first", "10.20.0.0/16").await;
    let mut bad_gateway = request("b", "10.50.0.0/24");
    bad_gateway.gateway = Some("10.51.0.1".into());
    for (req, field) in [
        // Inside a managed network.
        (request("a", "10.20.5.0/24"), "subnet"),
        // Around the host's own address (libvirt's check would miss a wider subnet).
        (request("a", "192.168.0.0/16"), "subnet"),
        // Another tool's libvirt network, even a stopped one.
        (request("a", "192.168.122.0/25"), "subnet"),
        (bad_gateway, "gateway"),
        (request("a", "10.60.0.0/31"), "subnet"),
        (request("Not_Valid", "10.60.0.0/24"), "name"),
    ] {
        let e = d.service.create_network(req, &caller).await.unwrap_err();
        assert_eq!(invalid_field(e), field);
    }
    // libvirt's own refusal at start is a 422 on the subnet too, and is undone.
    backend.fail_next_network_start(BackendError::Rejected {
        message: "internal error: Network is already in use by interface eth9".into(),
    });
    let e = d
        .service
        .create_network(request("late", "10.70.0.0/24"), &caller)
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "subnet");
    let left: Vec<String> = backend
        .networks()
        .unwrap()
        .into_iter()
        .map(|n| n.libvirt_name)
        .collect();
    assert_eq!(
        left,
        vec!["rhyzome-first".to_string(), "default".to_string()]
    );
    let names: Vec<String> = d
        .service
        .list_networks(&caller)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["first"]);
}

#[tokio::test]
async fn a_daemon_never_removes_another_daemon_s_network() {
    let backend = Arc::new(FakeBackend::new());
    let a = daemon_on(&backend);
    let b = daemon_on(&backend);
    let caller = Caller::internal();
    a.network("shared", "10.20.0.0/24").await;
    // b cannot take the name (libvirt's network names are shared by both daemons)...
    let e = b
        .service
        .create_network(request("shared", "10.30.0.0/24"), &caller)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ServiceError::Conflict {
                field: Some("name"),
                ..
            }
        ),
        "{e:?}"
    );
    // ...nor an overlapping subnet...
    let e = b
        .service
        .create_network(request("other", "10.20.0.128/25"), &caller)
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "subnet");
    // ...and its start-up and steady passes leave a's network alone, as does a's own pass.
    for d in [&b, &a, &b] {
        d.service.recover().await.unwrap();
        d.service.reconcile_once().await.unwrap();
    }
    let (def, active) = backend
        .network_definition("rhyzome-shared")
        .expect("still there");
    assert!(active);
    assert_eq!(def.mark.daemon, a.service.daemon_id);
    // A foreign network marked by a third daemon under rhyzome's prefix is not removed either.
    backend.inject_network(NetworkStatus {
        libvirt_name: libvirt_network_name("third"),
        active: true,
        mark: Some(NetworkMark {
            daemon: "another-daemon".into(),
            name: "third".into(),
        }),
        subnets: vec![Ipv4Subnet::parse("10.99.0.0/24").unwrap()],
        bridge: Some("rzn-x".into()),
        hosts: Vec::new(),
    });
    a.service.recover().await.unwrap();
    assert!(backend
        .network(&libvirt_network_name("third"))
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn start_up_brings_back_a_lost_network_and_removes_unclaimed_own_ones() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    let caller = Caller::internal();
    d.network("lab", "10.20.0.0/24").await;
    backend.lose_networks();
    assert!(!d.service.get_network(&caller, "lab").await.unwrap().active);
    d.service.recover().await.unwrap();
    let n = d.service.get_network(&caller, "lab").await.unwrap();
    assert!(n.active, "{n:?}");
    // One of this daemon's networks that no record claims (a delete cut short).
    let stray = d
        .service
        .network_definition(&crate::store::networks::NetworkRecord {
            name: "stray".into(),
            bridge: "rzn-stray".into(),
            subnet: Ipv4Subnet::parse("10.21.0.0/24").unwrap(),
            ..d.service.store.network_by_name("lab").unwrap().unwrap()
        });
    backend.define_network(&stray.unwrap()).unwrap();
    d.service.reconcile_once().await.unwrap();
    assert!(backend.network_definition("rhyzome-stray").is_none());
    assert!(backend.network_definition("rhyzome-lab").is_some());
}

#[tokio::test]
async fn tenants_see_and_change_only_their_own_networks() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    let mut alice = Caller::internal();
    alice.name = "alice".into();
    alice.prefix = Some("alice-".into());
    let mut mallory = alice.clone();
    mallory.name = "mallory".into();
    mallory.prefix = Some("mallory-".into());
    d.service
        .create_network(request("alice-net", "10.20.0.0/24"), &alice)
        .await
        .unwrap();
    assert!(matches!(
        d.service
            .create_network(request("alice-two", "10.30.0.0/24"), &mallory)
            .await,
        Err(ServiceError::Auth(_))
    ));
    assert!(d.service.list_networks(&mallory).await.unwrap().is_empty());
    assert!(matches!(
        d.service.get_network(&mallory, "alice-net").await,
        Err(ServiceError::NetworkNotFound(_))
    ));
    assert!(matches!(
        d.service.delete_network(&mallory, "alice-net").await,
        Err(ServiceError::NetworkNotFound(_))
    ));
    // An overlap with another tenant's network does not name it.
    let e = d
        .service
        .create_network(request("mallory-net", "10.20.0.0/25"), &mallory)
        .await
        .unwrap_err();
    match e {
        ServiceError::Invalid(f) => assert!(!f.message.contains("alice"), "{}", f.message),
        other => panic!("{other:?}"),
    }
}

/// An instance of the test kernel on the managed network `network`.
fn on_network(
    d: &Daemon,
    name: &str,
    network: &str,
    ip: Option<&str>,
    params: &str,
) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        kernel: d.kernel.clone(),
        kernel_parameters: params.into(),
        network: Some(rhyzome_api::NetworkSpec {
            name: Some(network.into()),
            ipv4: ip.map(str::to_string),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ipv4(i: &Instance) -> String {
    i.network
        .as_ref()
        .and_then(|n| n.ipv4.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn addresses_are_the_lowest_free_or_asked_for_and_never_shared() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    let caller = Caller::internal();
    d.network("lab", "10.20.0.0/24").await;
    let a = d
        .service
        .create(on_network(&d, "a", "lab", None, ""), &caller)
        .await
        .unwrap();
    let b = d
        .service
        .create(on_network(&d, "b", "lab", None, ""), &caller)
        .await
        .unwrap();
    let c = d
        .service
        .create(on_network(&d, "c", "lab", Some("10.20.0.10"), ""), &caller)
        .await
        .unwrap();
    assert_eq!(
        (ipv4(&a), ipv4(&b), ipv4(&c)),
        (
            "10.20.0.2/24".into(),
            "10.20.0.3/24".into(),
            "10.20.0.10/24".into()
        )
    );
    assert_eq!(a.network.as_ref().unwrap().network.as_deref(), Some("lab"));
    assert_eq!(
        a.network.as_ref().unwrap().bridge,
        d.service.get_network(&caller, "lab").await.unwrap().bridge
    );
    for (ip, conflict, field) in [
        ("10.20.0.10", true, "network.ipv4"),
        ("10.20.1.5", false, "network.ipv4"),
        ("10.20.0.1", false, "network.ipv4"),
        ("10.20.0.255", false, "network.ipv4"),
    ] {
        let e = d
            .service
            .create(on_network(&d, "x", "lab", Some(ip), ""), &caller)
            .await
            .unwrap_err();
        match (conflict, e) {
            (true, ServiceError::Conflict { field: Some(f), .. }) => assert_eq!(f, field),
            (false, ServiceError::Invalid(f)) => assert_eq!(f.field, field),
            (_, other) => panic!("{ip}: {other:?}"),
        }
        assert!(
            d.service.store.by_name("x").unwrap().is_none(),
            "{ip} left a record"
        );
    }
    let e = d
        .service
        .create(on_network(&d, "x", "nowhere", None, ""), &caller)
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "network.name");
    // Reused only after release: a's address goes to the next create once a is deleted.
    let e2 = d
        .service
        .create(on_network(&d, "e", "lab", None, ""), &caller)
        .await
        .unwrap();
    assert_eq!(ipv4(&e2), "10.20.0.4/24");
    d.service.delete(&caller, "a").await.unwrap();
    let f = d
        .service
        .create(on_network(&d, "f", "lab", None, ""), &caller)
        .await
        .unwrap();
    assert_eq!(ipv4(&f), "10.20.0.2/24");
    // Sticky across a restart.
    d.service.restart(&caller, "f").await.unwrap();
    assert_eq!(ipv4(&d.service.get(&caller, "f").unwrap()), "10.20.0.2/24");
    // In use: the network cannot go.
    let e = d.service.delete_network(&caller, "lab").await.unwrap_err();
    assert!(matches!(e, ServiceError::Conflict { .. }), "{e:?}");
    let shown = d.service.get_network(&caller, "lab").await.unwrap();
    assert_eq!(shown.addresses_in_use, 4);
    assert_eq!(shown.addresses_free, 253 - 4);
}

#[tokio::test]
async fn a_full_subnet_is_a_409_and_concurrent_creates_get_distinct_addresses() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    let caller = Caller::internal();
    d.network("tiny", "10.30.0.0/30").await;
    d.service
        .create(on_network(&d, "t1", "tiny", None, ""), &caller)
        .await
        .unwrap();
    let e = d
        .service
        .create(on_network(&d, "t2", "tiny", None, ""), &caller)
        .await
        .unwrap_err();
    match e {
        ServiceError::Conflict { message, .. } => {
            assert!(message.contains("no free address"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    d.network("wide", "10.31.0.0/24").await;
    let creates = (0..20).map(|i| {
        let service = d.service.clone();
        let spec = on_network(&d, &format!("w{i}"), "wide", None, "--ipv4={cidr}");
        tokio::spawn(async move { service.create(spec, &Caller::internal()).await })
    });
    let mut got: Vec<String> = Vec::new();
    for handle in creates {
        got.push(ipv4(&handle.await.unwrap().unwrap()));
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 20, "{got:?}");
}

#[tokio::test]
async fn placeholders_are_filled_in_from_the_instance_s_own_address() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    let caller = Caller::internal();
    let mut req = request("lab", "10.20.0.0/24");
    req.dhcp = Some(true);
    d.service.create_network(req, &caller).await.unwrap();
    let template = "--ipv4={cidr} --ipv4-gateway={gateway} --id={name} --mac={mac} {{x}}";
    let i = d
        .service
        .create(on_network(&d, "web", "lab", None, template), &caller)
        .await
        .unwrap();
    let mac = i.network.as_ref().unwrap().mac.clone();
    let expanded =
        format!("--ipv4=10.20.0.2/24 --ipv4-gateway=10.20.0.1 --id=web --mac={mac} {{x}}");
    assert_eq!(i.kernel_parameters, template);
    assert_eq!(i.kernel_parameters_expanded, expanded);
    // What the hypervisor is asked to run carries the expanded text.
    assert_eq!(backend.definition(&i.id).unwrap().cmdline, expanded);
    // The DHCP entry is in the network's definition, and goes with the instance.
    let (def, _) = backend.network_definition("rhyzome-lab").unwrap();
    assert_eq!(def.hosts.len(), 1);
    assert_eq!(
        (def.hosts[0].mac.as_str(), def.hosts[0].ip.to_string()),
        (mac.as_str(), "10.20.0.2".to_string())
    );
    d.service.delete(&caller, "web").await.unwrap();
    assert!(backend
        .network_definition("rhyzome-lab")
        .unwrap()
        .0
        .hosts
        .is_empty());

    // Unknown or valueless placeholders are 422s naming them, and leave nothing.
    for (spec, named) in [
        (
            on_network(&d, "bad", "lab", None, "--ipv4={ipv6}"),
            "{ipv6}",
        ),
        (
            InstanceSpec {
                name: "bad".into(),
                kernel: d.kernel.clone(),
                kernel_parameters: "--ipv4={cidr}".into(),
                ..Default::default()
            },
            "{cidr}",
        ),
        (
            on_network(&d, "bad", "lab", None, "{service.ip}"),
            "{service.ip}",
        ),
    ] {
        let e = d.service.create(spec, &caller).await.unwrap_err();
        match e {
            ServiceError::Invalid(f) => {
                assert_eq!(f.field, "kernel_parameters");
                assert!(f.message.contains(named), "{}", f.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(d.service.store.by_name("bad").unwrap().is_none());
    }
    assert!(backend
        .network_definition("rhyzome-lab")
        .unwrap()
        .0
        .hosts
        .is_empty());
    assert_eq!(
        d.service
            .get_network(&caller, "lab")
            .await
            .unwrap()
            .addresses_in_use,
        0
    );
}

#[tokio::test]
async fn a_token_limited_to_some_bridges_may_still_use_the_managed_networks_it_sees() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    d.network("alice-lab", "10.20.0.0/24").await;
    let mut alice = Caller::internal();
    alice.name = "alice".into();
    alice.prefix = Some("alice-".into());
    alice.quota.bridges = Some(vec!["br0".into()]);
    let i = d
        .service
        .create(on_network(&d, "alice-a", "alice-lab", None, ""), &alice)
        .await
        .unwrap();
    assert_eq!(ipv4(&i), "10.20.0.2/24");
    // Host bridges stay limited to the token's list.
    let mut elsewhere = on_network(&d, "alice-b", "alice-lab", None, "");
    elsewhere.network = Some(rhyzome_api::NetworkSpec {
        bridge: Some("br9".into()),
        ..Default::default()
    });
    assert!(matches!(
        d.service.create(elsewhere, &alice).await,
        Err(ServiceError::Auth(_))
    ));
}

/// The conditions verbs need an emulated network: on a plain one, conditions are a 422 and
/// the other verbs a 409, each naming its field; a bad selector or condition is a 422.
#[tokio::test]
async fn network_conditions_on_a_plain_network_are_refused_and_bad_input_is_a_422() {
    let backend = Arc::new(FakeBackend::new());
    let d = daemon_on(&backend);
    let caller = Caller::internal();
    d.network("lab", "10.20.0.0/24").await;
    let link = |text: &str| rhyzome_api::NetworkLink {
        conditions: rhyzome_api::validate::parse_conditions(text).unwrap(),
    };
    let between = |a: &str, b: &str| rhyzome_api::PartitionRequest {
        between: [a.to_string(), b.to_string()],
    };
    let s = &d.service;
    let fields = [
        s.set_network_link(&caller, "lab", link("latency=20ms"))
            .await
            .unwrap_err(),
        s.partition_network(&caller, "lab", between("group=eu", "group=us"))
            .await
            .unwrap_err(),
        s.heal_network(&caller, "lab").await.unwrap_err(),
        s.network_conditions(&caller, "lab").await.unwrap_err(),
        s.partition_network(&caller, "lab", between("group=eu", "no label"))
            .await
            .unwrap_err(),
    ]
    .map(|e| match e {
        ServiceError::Invalid(f) => format!("422 {}", f.field),
        ServiceError::Conflict { field, .. } => format!("409 {}", field.unwrap_or("-")),
        other => panic!("expected a 422 or a 409, got {other:?}"),
    });
    // Conditions it cannot honour are the request's fault; a sound request on a network of
    // the wrong kind is a conflict with its state.
    assert_eq!(
        fields,
        [
            "422 conditions",
            "409 between",
            "409 name",
            "409 name",
            "422 between"
        ]
    );
    let mut out_of_range = link("latency=20ms");
    out_of_range.conditions.loss_percent = Some(120.0);
    let e = s
        .set_network_link(&caller, "lab", out_of_range)
        .await
        .unwrap_err();
    assert_eq!(invalid_field(e), "conditions.loss_percent");
    assert!(matches!(
        s.network_conditions(&caller, "nope").await,
        Err(ServiceError::NetworkNotFound(_))
    ));
}
