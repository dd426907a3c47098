//! Test beds against the fake backend: apply, idempotence, replacement of one group only,
//! scaling by the highest indices, destroy leaving nothing, and refusals creating nothing.
//! The same behaviour on real libvirt: tests/e2e/testbeds.rs and tests/e2e/testbed_ops.rs.

use super::*;
use crate::backend::fake::FakeBackend;
use crate::backend::Hypervisor;
use crate::store::Store;

struct Daemon {
    _dir: tempfile::TempDir,
    kernel: String,
    service: Arc<Service>,
    backend: Arc<FakeBackend>,
}

fn daemon() -> Daemon {
    let backend = Arc::new(FakeBackend::new());
    let (dir, config, kernel) = crate::testing::fake_setup(&serde_json::json!({
        "DomainType": "test",
        "ReconcileIntervalSeconds": 3600,
    }));
    let store = Store::open(&config.state_dir).unwrap();
    Daemon {
        _dir: dir,
        kernel,
        service: Service::new(config, "test", store, backend.clone()),
        backend,
    }
}

/// A bed of a seed and `nodes` nodes after it, on its own network.
fn file(kernel: &str, nodes: u32, node_params: &str) -> String {
    format!(
        r#"name = "bed"
seed = 7

[[networks]]
name = "bed-net"
subnet = "10.62.0.0/24"

[[groups]]
name = "seed"
count = 1
kernel = "{kernel}"
network = "bed-net"
kernel_parameters = "--ipv4={{cidr}} --role=seed"

[[groups]]
name = "nodes"
count = {nodes}
after = ["seed"]
kernel = "{kernel}"
network = "bed-net"
kernel_parameters = "--ipv4={{cidr}} --peers={{peers:nodes:1}},{{group.seed.ip}} {node_params}"
"#
    )
}

impl Daemon {
    async fn apply(&self, text: &str, dry_run: bool) -> Result<TestbedPlan, ServiceError> {
        self.service
            .apply_testbed(
                &Caller::internal(),
                TestbedApply {
                    file: text.into(),
                    dry_run: Some(dry_run),
                    kernel_files: None,
                },
            )
            .await
    }

    async fn converge(&self) -> Testbed {
        for _ in 0..50 {
            if self.service.converge_testbed("bed").await.unwrap() {
                return self
                    .service
                    .get_testbed(&Caller::internal(), "bed")
                    .unwrap();
            }
        }
        panic!("the bed did not converge in 50 passes");
    }

    /// Instance name to id, of every instance.
    fn ids(&self) -> BTreeMap<String, String> {
        self.service
            .list(&Caller::internal())
            .unwrap()
            .into_iter()
            .map(|i| (i.name, i.id))
            .collect()
    }
}

fn count(plan: &TestbedPlan, action: ChangeKind) -> usize {
    plan.changes.iter().filter(|c| c.action == action).count()
}

#[tokio::test]
async fn apply_converges_and_the_same_file_again_changes_nothing() {
    let d = daemon();
    let text = file(&d.kernel, 4, "");
    let dry = d.apply(&text, true).await.unwrap();
    assert!(dry.changed && dry.dry_run);
    assert_eq!(count(&dry, ChangeKind::Create), 5);
    assert_eq!(dry.networks_created, vec!["bed-net"]);
    assert!(d.ids().is_empty(), "a dry run creates nothing");
    assert!(d
        .service
        .list_testbeds(&Caller::internal())
        .unwrap()
        .is_empty());

    let plan = d.apply(&text, false).await.unwrap();
    assert_eq!(plan.changes, dry.changes);
    let bed = d.converge().await;
    assert!(bed.ready, "{bed:?}");
    assert_eq!(bed.networks, vec!["bed-net"]);
    let counts: Vec<(String, u32, u32, u32, u32)> = bed
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.desired, g.created, g.running, g.ready))
        .collect();
    assert_eq!(
        counts,
        vec![("seed".into(), 1, 1, 1, 1), ("nodes".into(), 4, 4, 4, 4)]
    );
    let seed = d.service.get(&Caller::internal(), "bed-seed-0").unwrap();
    assert_eq!(
        seed.kernel_parameters_expanded,
        "--ipv4=10.62.0.2/24 --role=seed"
    );
    let node = d.service.get(&Caller::internal(), "bed-nodes-0").unwrap();
    assert_eq!(node.labels["testbed"], "bed");
    assert_eq!(node.labels["group"], "nodes");
    assert!(
        node.kernel_parameters_expanded
            .starts_with("--ipv4=10.62.0.3/24 --peers=10.62.0.4,10.62.0.2"),
        "{}",
        node.kernel_parameters_expanded
    );

    let before = d.ids();
    let again = d.apply(&text, false).await.unwrap();
    assert!(!again.changed, "{again:?}");
    assert!(again.changes.is_empty());
    d.converge().await;
    assert_eq!(d.ids(), before, "nothing was recreated");
}

#[tokio::test]
async fn a_changed_group_is_replaced_and_only_it() {
    let d = daemon();
    d.apply(&file(&d.kernel, 3, ""), false).await.unwrap();
    d.converge().await;
    let before = d.ids();
    let plan = d
        .apply(&file(&d.kernel, 3, "--verbose"), false)
        .await
        .unwrap();
    assert!(plan.changed);
    assert_eq!(count(&plan, ChangeKind::Replace), 3, "{plan:?}");
    assert!(plan.changes.iter().all(|c| c.group == "nodes"), "{plan:?}");
    d.converge().await;
    let after = d.ids();
    assert_eq!(after["bed-seed-0"], before["bed-seed-0"], "the seed stays");
    for i in 0..3 {
        let name = format!("bed-nodes-{i}");
        assert_ne!(after[&name], before[&name], "{name} was replaced");
        let params = d.service.get(&Caller::internal(), &name).unwrap();
        assert!(params.kernel_parameters.ends_with("--verbose"));
    }
}

#[tokio::test]
async fn scaling_adds_and_removes_the_highest_indices() {
    let d = daemon();
    d.apply(&file(&d.kernel, 3, ""), false).await.unwrap();
    d.converge().await;
    let before = d.ids();
    // Peers depend on the group's size, so scaling a group with {peers} replaces the rest of
    // it; a group without placeholders that depend on it keeps its instances.
    let plain = |n: u32| file(&d.kernel, n, "").replace(" --peers={peers:nodes:1}", "");
    d.apply(&plain(3), false).await.unwrap();
    d.converge().await;
    let base = d.ids();
    let up = d.apply(&plain(5), false).await.unwrap();
    let created: Vec<&str> = up
        .changes
        .iter()
        .filter(|c| c.action == ChangeKind::Create)
        .map(|c| c.instance.as_str())
        .collect();
    assert_eq!(created, vec!["bed-nodes-3", "bed-nodes-4"]);
    assert_eq!(count(&up, ChangeKind::Replace), 0, "{up:?}");
    d.converge().await;
    assert_eq!(d.ids().len(), 6);
    let down = d.apply(&plain(2), false).await.unwrap();
    let deleted: Vec<&str> = down
        .changes
        .iter()
        .map(|c| {
            assert_eq!(c.action, ChangeKind::Delete);
            c.instance.as_str()
        })
        .collect();
    assert_eq!(deleted, vec!["bed-nodes-4", "bed-nodes-3", "bed-nodes-2"]);
    let bed = d.converge().await;
    let ids = d.ids();
    assert_eq!(ids.len(), 3);
    for name in ["bed-seed-0", "bed-nodes-0", "bed-nodes-1"] {
        assert_eq!(ids[name], base[name], "{name} kept");
    }
    assert_eq!(bed.groups[1].desired, 2);
    assert_eq!(bed.groups[1].ready, 2);
    assert_ne!(before["bed-nodes-0"], base["bed-nodes-0"]);
}

#[tokio::test]
async fn a_vanished_member_is_recreated() {
    let d = daemon();
    d.apply(&file(&d.kernel, 2, ""), false).await.unwrap();
    d.converge().await;
    d.service
        .delete(&Caller::internal(), "bed-nodes-1")
        .await
        .unwrap();
    let bed = d.converge().await;
    assert!(bed.ready);
    assert!(d.ids().contains_key("bed-nodes-1"));
}

#[tokio::test]
async fn destroy_leaves_no_instance_network_or_domain() {
    let d = daemon();
    d.apply(&file(&d.kernel, 3, ""), false).await.unwrap();
    d.converge().await;
    assert_eq!(d.backend.list().unwrap().len(), 4);
    d.service
        .destroy_testbed(&Caller::internal(), "bed")
        .await
        .unwrap();
    assert!(d.ids().is_empty());
    assert!(d.backend.list().unwrap().is_empty());
    assert!(d.backend.network_definition("rhyzome-bed-net").is_none());
    assert!(d
        .service
        .list_networks(&Caller::internal())
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        d.service.get_testbed(&Caller::internal(), "bed"),
        Err(ServiceError::TestbedNotFound(_))
    ));
}

#[tokio::test]
async fn a_bad_file_is_refused_with_its_position_and_creates_nothing() {
    let d = daemon();
    let text = file(&d.kernel, 3, "").replace("seed = 7", "seed = 7\ncolour = \"red\"");
    let e = d.apply(&text, false).await.unwrap_err();
    match e {
        ServiceError::Invalid(f) => {
            assert_eq!(f.field, "file");
            assert!(f.message.contains("line 3, column 1"), "{}", f.message);
            assert!(f.message.contains("colour"), "{}", f.message);
        }
        other => panic!("expected a field error, got {other:?}"),
    }
    let cycle = file(&d.kernel, 3, "").replace("count = 1\n", "count = 1\nafter = [\"nodes\"]\n");
    assert!(matches!(
        d.apply(&cycle, false).await,
        Err(ServiceError::Invalid(_))
    ));
    assert!(d.ids().is_empty());
    assert!(d
        .service
        .list_testbeds(&Caller::internal())
        .unwrap()
        .is_empty());
    assert!(d
        .service
        .list_networks(&Caller::internal())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_network_the_bed_does_not_own_is_refused_and_left_alone() {
    let d = daemon();
    d.service
        .create_network(
            rhyzome_api::NetworkCreate {
                name: "bed-net".into(),
                subnet: "10.63.0.0/24".into(),
                gateway: None,
                mode: None,
                dhcp: None,
                emulated: None,
                seed: None,
                link: None,
            },
            &Caller::internal(),
        )
        .await
        .unwrap();
    let e = d.apply(&file(&d.kernel, 2, ""), false).await.unwrap_err();
    assert!(matches!(e, ServiceError::Conflict { .. }), "{e:?}");
    assert!(d.ids().is_empty());
    assert!(d
        .service
        .list_testbeds(&Caller::internal())
        .unwrap()
        .is_empty());
    assert_eq!(
        d.service
            .list_networks(&Caller::internal())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_beds() {
    let d = daemon();
    d.apply(&file(&d.kernel, 2, ""), false).await.unwrap();
    let tenant = Caller {
        name: "alice".into(),
        role: Role::Operator,
        prefix: Some("alice-".into()),
        quota: Default::default(),
    };
    assert!(d.service.list_testbeds(&tenant).unwrap().is_empty());
    assert!(matches!(
        d.service.get_testbed(&tenant, "bed"),
        Err(ServiceError::TestbedNotFound(_))
    ));
    assert!(matches!(
        d.service.destroy_testbed(&tenant, "bed").await,
        Err(ServiceError::TestbedNotFound(_))
    ));
    let viewer = Caller {
        role: Role::Viewer,
        prefix: None,
        ..tenant
    };
    assert!(d.service.get_testbed(&viewer, "bed").is_ok());
    assert!(matches!(
        d.service.destroy_testbed(&viewer, "bed").await,
        Err(ServiceError::Auth(_))
    ));
}

/// `file` with `link = {...}` on the nodes group (a rate: the only condition a plain network
/// honours, which the fake backend has).
fn with_node_link(text: &str, link: &str) -> String {
    format!("{text}link = {{ {link} }}\n")
}

#[tokio::test]
async fn a_changed_group_link_is_updated_in_place() {
    let d = daemon();
    let first = with_node_link(&file(&d.kernel, 3, ""), "rate = \"10mbit\"");
    d.apply(&first, false).await.unwrap();
    d.converge().await;
    let before = d.ids();
    let nic_rate = |name: &str| {
        d.service.store.by_name(name).unwrap().unwrap().attachments[0]
            .conditions
            .rate_bps
    };
    assert_eq!(nic_rate("bed-nodes-1"), Some(10_000_000));

    let second = with_node_link(&file(&d.kernel, 3, ""), "rate = \"20mbit\"");
    let plan = d.apply(&second, false).await.unwrap();
    assert!(plan.changed);
    assert_eq!(count(&plan, ChangeKind::Update), 3, "{plan:?}");
    assert_eq!(count(&plan, ChangeKind::Replace), 0, "{plan:?}");
    d.converge().await;
    assert_eq!(d.ids(), before, "updated in place, nothing recreated");
    assert_eq!(nic_rate("bed-nodes-1"), Some(20_000_000));
    assert_eq!(nic_rate("bed-seed-0"), None, "the seed group has no link");
    // And then the same file is no change.
    assert!(!d.apply(&second, false).await.unwrap().changed);
}

#[tokio::test]
async fn a_changed_subnet_makes_the_network_and_its_instances_again() {
    let d = daemon();
    d.apply(&file(&d.kernel, 2, ""), false).await.unwrap();
    d.converge().await;
    let before = d.ids();
    let moved = file(&d.kernel, 2, "").replace("10.62.0.0/24", "10.64.0.0/24");
    let plan = d.apply(&moved, true).await.unwrap();
    assert_eq!(plan.networks_replaced, vec!["bed-net"], "{plan:?}");
    assert_eq!(count(&plan, ChangeKind::Replace), 3, "{plan:?}");
    d.apply(&moved, false).await.unwrap();
    d.converge().await;
    let after = d.ids();
    assert_eq!(after.len(), 3);
    for (name, id) in &before {
        assert_ne!(&after[name], id, "{name} was made again");
    }
    let net = d
        .service
        .get_network(&Caller::internal(), "bed-net")
        .await
        .unwrap();
    assert_eq!(net.subnet, "10.64.0.0/24");
    assert_eq!(net.addresses_in_use, 3);
}

#[tokio::test]
async fn a_network_replacement_is_refused_while_others_use_it() {
    let d = daemon();
    d.apply(&file(&d.kernel, 2, ""), false).await.unwrap();
    d.converge().await;
    let stranger = rhyzome_api::InstanceSpec {
        name: "stranger".into(),
        kernel: d.kernel.clone(),
        network: Some(rhyzome_api::NetworkSpec {
            name: Some("bed-net".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    d.service
        .create(stranger, &Caller::internal())
        .await
        .unwrap();
    let before = d.ids();
    let moved = file(&d.kernel, 2, "").replace("10.62.0.0/24", "10.64.0.0/24");
    let e = d.apply(&moved, false).await.unwrap_err();
    match e {
        ServiceError::Conflict { message, .. } => {
            assert!(message.contains("stranger"), "{message}")
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(d.ids(), before, "nothing changed");
}

#[tokio::test]
async fn a_kernel_file_needs_the_image_pushed_for_it() {
    let d = daemon();
    let text = file(&d.kernel, 2, "").replace(
        &format!("kernel = \"{}\"\nnetwork = \"bed-net\"\nkernel_parameters = \"--ipv4={{cidr}} --role=seed\"", d.kernel),
        "kernel_file = \"./node.virtio\"\nnetwork = \"bed-net\"\nkernel_parameters = \"--ipv4={cidr} --role=seed\"",
    );
    assert!(text.contains("kernel_file"), "{text}");
    match d.apply(&text, true).await.unwrap_err() {
        ServiceError::Invalid(f) => {
            assert_eq!(f.field, "kernel_files", "{}", f.message);
            assert!(f.message.contains("./node.virtio"), "{}", f.message);
        }
        e => panic!("{e:?}"),
    }
    let bad = d
        .service
        .apply_testbed(
            &Caller::internal(),
            TestbedApply {
                file: text.clone(),
                dry_run: Some(true),
                kernel_files: Some([("./node.virtio".to_string(), "node:1.0".to_string())].into()),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad, ServiceError::Invalid(ref f) if f.field == "kernel_files"),
        "{bad:?}"
    );
}

#[path = "ops_tests.rs"]
mod ops;
