//! Upgrades from real old databases: every schema ever released has a fixture database made
//! by that release's own store code (`tests/fixtures/databases`, see its README), and each one
//! must open, migrate to the current schema and serve its records with their values.

use super::attachments::{self, Attachment};
use super::tests::record;
use super::*;
use crate::auth::{tokens::TokenStore, Quota, Role};
use rhyzome_api::RestartMode;
use std::path::{Path, PathBuf};

/// The schemas released, oldest first; three of them were all marked version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Release {
    /// 6407704: the first release, without restart policies.
    V1First,
    /// ca69d2b: restart policies, priorities and autostart, still version 1.
    V1Restarts,
    /// a97e89b: owners and tokens, still version 1.
    V1Owners,
    /// 7064ff9: the console log's inode, version 2.
    V2ConsoleInode,
    /// 507f34f: the daemon's identity, version 3.
    V3Identity,
    /// ef5693a: the last version 3 (the release before 521474b), whose image tables were
    /// made outside the versioned schema, with `image_tags.tagged_at`; the first fixture with
    /// image rows.
    V3TaggedImages,
    /// 521474b: the image and token tables in the versioned schema, version 4. Its store code
    /// is that of every later commit until version 5.
    V4VersionedImages,
    /// 5a67253: the NICs of an instance as one ordered list (`instance_attachments`),
    /// version 5.
    V5Attachments,
    /// c9a9443: managed networks, and an attachment's network and address, version 6.
    V6Networks,
    /// The labels of instances (`instance_labels`) and link conditions on attachments,
    /// version 7 on this branch (issue 14); made by its own commit's store code,
    /// provisional name until it is merged.
    V7Labels,
    /// The volumes branch: volume tables, version 8 (provisional name: the fixture is renamed
    /// to its commit, and the version renumbered, when it is merged).
    V8Volumes,
    /// 200cb9b (branch `testbeds`): test beds, their members and networks, version 9.
    V9Testbeds,
    /// 26ba9ba: emulated networks (an emulator port and seed per network, a UDP port per NIC
    /// on one), version 10 (issue 14; version 8 on branch emunet, renumbered at its merge).
    V10Emulated,
    /// The images pushed for a test bed's `kernel_file`s (`testbeds.kernel_files`), version
    /// 11 (branch `tbfile`; provisional name until it is merged).
    V11KernelFiles,
    /// fd5d26f: the host of each instance, how it was placed, and failover
    /// (`instances.host`, `placement_*`, `failover`), version 12 (issue 20).
    V12Hosts,
}

impl Release {
    const ALL: [Release; 15] = [
        Release::V1First,
        Release::V1Restarts,
        Release::V1Owners,
        Release::V2ConsoleInode,
        Release::V3Identity,
        Release::V3TaggedImages,
        Release::V4VersionedImages,
        Release::V5Attachments,
        Release::V6Networks,
        Release::V7Labels,
        Release::V8Volumes,
        Release::V9Testbeds,
        Release::V10Emulated,
        Release::V11KernelFiles,
        Release::V12Hosts,
    ];

    fn fixture(self) -> &'static str {
        match self {
            Release::V1First => "v1-6407704.db",
            Release::V1Restarts => "v1-ca69d2b.db",
            Release::V1Owners => "v1-a97e89b.db",
            Release::V2ConsoleInode => "v2-7064ff9.db",
            Release::V3Identity => "v3-507f34f.db",
            Release::V3TaggedImages => "v3-ef5693a.db",
            Release::V4VersionedImages => "v4-521474b.db",
            Release::V5Attachments => "v5-5a67253.db",
            Release::V6Networks => "v6-c9a9443.db",
            Release::V7Labels => "v7-6dc4867.db",
            Release::V8Volumes => "v8-5da614b.db",
            Release::V9Testbeds => V9_FIXTURE,
            Release::V10Emulated => V10_FIXTURE,
            Release::V11KernelFiles => V11_FIXTURE,
            Release::V12Hosts => V12_FIXTURE,
        }
    }

    /// The secret of the token `alice` its generator printed, for the releases with tokens.
    fn alice_token(self) -> Option<&'static str> {
        match self {
            Release::V1First | Release::V1Restarts => None,
            Release::V1Owners => {
                Some("rhz_26745dd958ee5ec1f87c296291898aed3c5eba56c60d3c2dfc0df2e8512c6238")
            }
            Release::V2ConsoleInode => {
                Some("rhz_e94317937bedee9d58d7bf254a38368f779b70cd485171744112fb2ba85eb05b")
            }
            Release::V3Identity => {
                Some("rhz_0d8aec808e94ed31df2bbef917d5698e21dab86252ab6d6ba7dc83fbe97bcddf")
            }
            Release::V3TaggedImages => {
                Some("rhz_4c68740ec42d9bf3b4e3f147b0308001fb5db1648d67aa1c169f05c7e23007a8")
            }
            Release::V4VersionedImages => {
                Some("rhz_cd0c2594e6a866d7f3dabc883ee0788ae4a0704885a6fbc60fef3175f14eeb37")
            }
            Release::V5Attachments => {
                Some("rhz_157ef0f4ae305c7de9c6ebf88f54137e23d7dcc70990c950641d3a3b36a6d352")
            }
            Release::V6Networks => Some(V6_TOKEN),
            Release::V7Labels => Some(V7_TOKEN),
            Release::V8Volumes => {
                Some("rhz_ec8a8b2b8d9515a8137702c7653f2f67daafb8cadd3f7872001c1a0e0f146554")
            }
            Release::V9Testbeds => Some(V9_TOKEN),
            Release::V10Emulated => Some(V10_TOKEN),
            Release::V11KernelFiles => Some(V11_TOKEN),
            Release::V12Hosts => Some(V12_TOKEN),
        }
    }

    /// The daemon identity its generator printed, for the releases that have one; an older
    /// database gains a new one when it is migrated.
    fn daemon_id(self) -> Option<&'static str> {
        match self {
            Release::V3Identity => Some("8905d27a-6dc7-4efe-83c4-8fd875d6bc75"),
            Release::V3TaggedImages => Some("620a840e-25f6-4f84-b1cc-897d0110dc1b"),
            Release::V4VersionedImages => Some("fac7523b-f9f2-46a8-a987-43f060ff057d"),
            Release::V5Attachments => Some("d2617cd6-e047-4550-8ec5-f903d53d2da2"),
            Release::V6Networks => Some(V6_DAEMON),
            Release::V7Labels => Some(V7_DAEMON),
            Release::V8Volumes => Some("41a4b1b7-e7c2-44e4-87d9-bba77d7e6460"),
            Release::V9Testbeds => Some(V9_DAEMON),
            Release::V10Emulated => Some(V10_DAEMON),
            Release::V11KernelFiles => Some(V11_DAEMON),
            Release::V12Hosts => Some(V12_DAEMON),
            _ => None,
        }
    }
}

/// What the generator of version 6's fixture printed.
const V6_TOKEN: &str = "rhz_aa189016c00eaed88a616047a16e196373fec2c706d97fd3da6eed485b60a57c";
const V6_DAEMON: &str = "a22751c2-970a-46cd-9261-c25ce5ab75ef";
/// Printed by the generator of `v7-6dc4867.db` (generators/6dc4867.rs.txt).
const V7_TOKEN: &str = "rhz_3548362620002aa3282b8a9f7e7e30b510266d5878cd7801db50fb84ef97d099";
const V7_DAEMON: &str = "4417eedf-c621-488b-922a-41170e1247e7";

/// Version 9's fixture and what its generator printed.
const V9_FIXTURE: &str = "v9-200cb9b.db";
const V9_TOKEN: &str = "rhz_df5960cf846c30358376cc770423ff2bd1c383a55c1492b9ddb0937886dc3842";
const V9_DAEMON: &str = "bf8f8032-92f8-428b-8437-09289e9770a4";

/// Version 10's fixture and what its generator printed.
const V10_FIXTURE: &str = "v10-26ba9ba.db";
const V10_TOKEN: &str = "rhz_45b1e2f802c817b353eca20184fc70627b0775edeea35a6af6d4463b62abb030";
const V10_DAEMON: &str = "fb3db04f-ec62-481f-8967-ed6b66abec54";

/// Version 11's fixture (generators/7387530.rs.txt: 26ba9ba's plus the bed's
/// kernel file) and what its generator printed.
const V11_FIXTURE: &str = "v11-7387530.db";
const V11_TOKEN: &str = "rhz_7483439f8133b436ef4dfd54d73cf6d6c76857cac8e4da012747145c68b3ec95";
const V11_DAEMON: &str = "90d6f221-e25f-4fb4-a966-fc46a691329b";

/// Version 12's fixture (generators/fd5d26f.rs.txt: 7387530's with `web` pinned to host `b`
/// and `batch` failing over) and what its generator printed.
const V12_FIXTURE: &str = "v12-fd5d26f.db";
const V12_TOKEN: &str = "rhz_faface2fbcc5c0a5a3241d273814e39f01505fab3be16edc2bbbf6a77529923d";
const V12_DAEMON: &str = "31905fdd-0302-4b00-9232-a8ee490d1aa4";

/// The image pushed for the bed `exp`'s `kernel_file` in version 11's fixture; older
/// releases have none, and take it with today's code.
fn pushed_kernel_files() -> std::collections::BTreeMap<String, String> {
    [(
        "./node.virtio".to_string(),
        format!("sha256:{}", "cc".repeat(32)),
    )]
    .into()
}

fn check_kernel_files(store: &Store, release: Release) {
    if release < Release::V9Testbeds {
        // No bed yet: `check_testbeds` makes it with today's code, with its kernel files.
        assert!(store.testbed("exp").unwrap().is_none(), "{release:?}");
        return;
    }
    let mut exp = store.testbed("exp").unwrap().expect("the fixture's bed");
    if release < Release::V11KernelFiles {
        assert!(exp.kernel_files.is_empty(), "{release:?}");
        exp.kernel_files = pushed_kernel_files();
        store.put_testbed(&exp).unwrap();
    }
    assert_eq!(
        store.testbed("exp").unwrap().unwrap().kernel_files,
        pushed_kernel_files(),
        "{release:?}"
    );
}

/// The test bed `exp` of version 9's fixture, for the releases that made it; older ones
/// have none and take one with today's code.
fn check_testbeds(store: &Store, release: Release) {
    use super::testbeds::{MemberRecord, TestbedRecord};
    let exp = TestbedRecord {
        name: "exp".into(),
        owner: "alice".into(),
        owner_prefix: Some("a-".into()),
        file: "name = \"exp\"\n".into(),
        desired: "present".into(),
        overrides: Default::default(),
        applied_at: "2026-11-27T06:43:00Z".into(),
        applied_ms: 1_795_000_100_000,
        last_error: None,
        kernel_files: pushed_kernel_files(),
    };
    let web = MemberRecord {
        group: "g".into(),
        index: 0,
        instance: "web".into(),
        spec: "{}".into(),
        ready_ms: Some(1_795_000_100_500),
    };
    if release < Release::V9Testbeds {
        assert!(store.testbeds().unwrap().is_empty(), "{release:?}");
        store.put_testbed(&exp).unwrap();
        store.put_testbed_network("exp", "lab").unwrap();
        store.put_testbed_member("exp", &web).unwrap();
    }
    assert_eq!(store.testbeds().unwrap(), vec![exp], "{release:?}");
    assert_eq!(store.testbed_networks("exp").unwrap(), vec!["lab"]);
    assert_eq!(store.testbed_members("exp").unwrap(), vec![web]);
    // Removing the bed takes its rows with it.
    store.remove_testbed("exp").unwrap();
    assert!(store.testbed_members("exp").unwrap().is_empty());
    assert!(store.testbed_networks("exp").unwrap().is_empty());
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/databases")
}

/// A copy of the fixture as `rhyzome.db` in a fresh state directory: opening migrates in
/// place, and the committed file must stay as its release made it.
fn state_dir_with(release: Release) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures_dir().join(release.fixture()),
        dir.path().join("rhyzome.db"),
    )
    .unwrap();
    dir
}

/// The record `web` as each release wrote it (see the generators), read by today's code.
fn expected_web(release: Release) -> InstanceRecord {
    let mut web = InstanceRecord {
        id: "11111111-1111-4111-8111-111111111111".into(),
        name: "web".into(),
        kernel: "hello".into(),
        kernel_sha256: "aa".repeat(32),
        kernel_parameters: "--ipv4 10.0.0.2/24".into(),
        memory_mib: 32,
        vcpus: 1,
        attachments: vec![single_nic("02:00:00:00:00:01")],
        labels: Default::default(),
        desired: Desired::Running,
        state: InstanceState::Running,
        exit_code: None,
        last_error: None,
        created_at: "2026-11-27T06:40:00Z".into(),
        started_at: Some("2026-11-27T06:40:01Z".into()),
        console_offset: 120,
        console_inode: None,
        // The first release did not record it: the migration takes the start time.
        state_changed_at: "2026-11-27T06:40:01Z".into(),
        restart: RestartPolicy::default(),
        restart_count: 0,
        next_restart_at_ms: None,
        startup_priority: 0,
        autostart: false,
        owner: "anonymous".into(),
        host: String::new(),
        placement: None,
        failover: false,
    };
    if release >= Release::V1Restarts {
        web.state_changed_at = "2026-11-27T06:40:02Z".into();
        web.restart = RestartPolicy {
            policy: RestartMode::OnFailure,
            max_retries: Some(3),
            exit_codes: Some(vec![1, 2]),
        };
        web.restart_count = 2;
        web.next_restart_at_ms = Some(1_795_000_000_000);
        web.startup_priority = -2;
        web.autostart = true;
    }
    if release >= Release::V1Owners {
        web.owner = "alice".into();
    }
    if release >= Release::V2ConsoleInode {
        web.console_inode = Some(4242);
    }
    if release >= Release::V12Hosts {
        web.host = "b".into();
        web.placement = Some(super::PlacementRecord {
            how: "pinned".into(),
            reason: "the request named the host".into(),
            decided_at: "2026-12-01T23:00:00Z".into(),
        });
    }
    expected_web_nics(release, &mut web);
    if release >= Release::V6Networks {
        // Its `service` NIC is on the managed network `lab`, with the first address.
        web.attachments[0].bridge = "rzn-0123456789".into();
        web.attachments[0].network = Some(LAB_ID.into());
        web.attachments[0].address = Some(std::net::Ipv4Addr::new(10, 20, 0, 2));
    }
    if release >= Release::V7Labels {
        web.labels = [
            ("group".to_string(), "eu".to_string()),
            ("testbed".to_string(), "t1".to_string()),
        ]
        .into();
        web.attachments[0].conditions.rate_bps = Some(10_000_000);
    }
    web
}

/// The id of the managed network of version 6's fixture.
const LAB_ID: &str = "44444444-4444-4444-8444-444444444444";
const WAN_ID: &str = "55555555-5555-4555-8555-555555555555";

/// `web` before version 6 changed its first NIC.
fn expected_web_nics(release: Release, web: &mut InstanceRecord) {
    if release >= Release::V3TaggedImages {
        // It boots an image with two network devices: a NIC for each, at fixed slots.
        let nic = |device: &str, mac: &str, pci_slot| Attachment {
            conditions: Default::default(),
            device: Some(device.into()),
            bridge: "br0".into(),
            mac: mac.into(),
            pci_slot: Some(pci_slot),
            network: None,
            address: None,
            emulator_port: None,
        };
        web.attachments = vec![
            nic("service", "02:00:00:00:00:01", 3),
            nic("admin", "02:00:00:00:00:04", 4),
        ];
    }
}

/// The NIC of an instance with one: no manifest device, no fixed slot.
fn single_nic(mac: &str) -> Attachment {
    Attachment {
        device: None,
        bridge: "br0".into(),
        mac: mac.into(),
        pci_slot: None,
        network: None,
        address: None,
        emulator_port: None,
        conditions: Default::default(),
    }
}

/// The record `batch`, which exited with code 3.
fn expected_batch(release: Release) -> InstanceRecord {
    let mut batch = InstanceRecord {
        id: "22222222-2222-4222-8222-222222222222".into(),
        name: "batch".into(),
        kernel: "job".into(),
        kernel_sha256: "bb".repeat(32),
        kernel_parameters: String::new(),
        memory_mib: 64,
        vcpus: 2,
        attachments: Vec::new(),
        labels: Default::default(),
        desired: Desired::Stopped,
        state: InstanceState::Exited,
        exit_code: Some(3),
        last_error: Some("exited with code 3".into()),
        created_at: "2026-11-27T06:41:00Z".into(),
        started_at: Some("2026-11-27T06:41:01Z".into()),
        console_offset: 0,
        console_inode: None,
        state_changed_at: "2026-11-27T06:41:01Z".into(),
        restart: RestartPolicy::default(),
        restart_count: 0,
        next_restart_at_ms: None,
        startup_priority: 0,
        autostart: false,
        owner: "anonymous".into(),
        host: String::new(),
        placement: None,
        failover: false,
    };
    if release >= Release::V1Restarts {
        // Generated without a start, and with the policy `always` and priority 5.
        batch.started_at = None;
        batch.state_changed_at = "2026-11-27T06:41:05Z".into();
        batch.restart = RestartPolicy {
            policy: RestartMode::Always,
            max_retries: None,
            exit_codes: None,
        };
        batch.startup_priority = 5;
    }
    if release >= Release::V12Hosts {
        batch.failover = true;
    }
    batch
}

/// The image `web` boots and the rows that say so, for the releases whose generator made
/// them (none before ef5693a: their image tables are empty, or absent before a97e89b).
fn check_images(store: &Store, release: Release) {
    let web = "11111111-1111-4111-8111-111111111111";
    if release < Release::V3TaggedImages {
        assert!(store.images().unwrap().is_empty(), "{release:?}");
        assert_eq!(store.instance_image(web).unwrap(), None, "{release:?}");
        return;
    }
    let sha256 = "aa".repeat(32);
    let image = store.image(&sha256).unwrap().expect("the image of `web`");
    assert_eq!(
        (image.size, image.uploaded_at.as_str()),
        (4096, "2026-11-27T06:39:00Z"),
        "{release:?}"
    );
    assert_eq!(image.names, ["a-web:1.0", "a-web:latest"], "{release:?}");
    assert_eq!(
        image.tagged_at,
        [
            ("a-web:1.0".to_string(), "2026-11-27T06:39:01Z".to_string()),
            (
                "a-web:latest".to_string(),
                "2026-11-27T06:39:02Z".to_string()
            ),
        ]
        .into(),
        "{release:?}"
    );
    assert_eq!(
        image.inspection,
        rhyzome_api::ImageInspection {
            format: rhyzome_api::ImageFormat::Multiboot,
            elf_class: Some(64),
            multiboot_aout_kludge: Some(true),
            description: "64-bit ELF, multiboot v1 with a.out kludge".into(),
            solo5: Some(rhyzome_api::Solo5Info {
                abi_target: Some("virtio".into()),
                abi_version: Some(2),
                manifest: Some(rhyzome_api::Solo5Manifest {
                    version: 1,
                    devices: ["service", "admin"]
                        .map(|name| rhyzome_api::ManifestDevice {
                            name: name.into(),
                            kind: "NET_BASIC".into(),
                        })
                        .into(),
                }),
            }),
            problem: None,
        },
        "{release:?}"
    );
    assert_eq!(
        store.resolve_tag("a-web", "latest").unwrap(),
        Some(sha256.clone())
    );
    assert_eq!(
        store.instance_image(web).unwrap().as_deref(),
        Some("a-web:1.0"),
        "{release:?}"
    );
    assert_eq!(store.instances_booting(&sha256).unwrap(), ["gone", "web"]);
}

/// The managed network `lab`, for the releases that made it, and a network and an address
/// given out by today's code on the migrated tables.
fn check_networks(store: &Store, release: Release) {
    use super::networks::NetworkRecord;
    use rhyzome_api::networks::Ipv4Subnet;
    let lab = NetworkRecord {
        id: LAB_ID.into(),
        name: "lab".into(),
        subnet: Ipv4Subnet::parse("10.20.0.0/24").unwrap(),
        gateway: "10.20.0.1".parse().unwrap(),
        mode: rhyzome_api::ForwardMode::Nat,
        dhcp: true,
        bridge: "rzn-0123456789".into(),
        owner: "alice".into(),
        created_at: "2026-11-27T06:38:00Z".into(),
        emulator: None,
    };
    let mut wan = NetworkRecord {
        id: WAN_ID.into(),
        name: "wan".into(),
        subnet: Ipv4Subnet::parse("10.50.0.0/16").unwrap(),
        gateway: "10.50.0.1".parse().unwrap(),
        mode: rhyzome_api::ForwardMode::Isolated,
        dhcp: false,
        bridge: "rzn-9876543210".into(),
        owner: "alice".into(),
        created_at: "2026-11-27T06:38:30Z".into(),
        // The fixtures' port (today a daemon starts at its own place in the range); the
        // seed's top bit survives SQLite's signed integers.
        emulator: Some(super::networks::Emulator {
            port: 24000,
            seed: u64::MAX - 1,
        }),
    };
    if release < Release::V10Emulated {
        // Today's code on the migrated tables gives a port of the range.
        let given = store
            .insert_network(&NetworkRecord {
                emulator: Some(super::networks::Emulator {
                    port: 0,
                    seed: u64::MAX - 1,
                }),
                ..wan.clone()
            })
            .unwrap();
        let port = given.emulator.map(|e| e.port).unwrap_or_default();
        assert!(super::networks::EMULATOR_PORTS.contains(&port), "{port}");
        wan.emulator = Some(super::networks::Emulator {
            port,
            seed: u64::MAX - 1,
        });
        assert_eq!(given, wan, "{release:?}");
        assert_eq!(
            store.network_shaping(WAN_ID).unwrap(),
            Default::default(),
            "{release:?}"
        );
    } else {
        let shaping = store.network_shaping(WAN_ID).unwrap();
        assert_eq!(shaping.defaults.latency_ms, Some(20.0));
        assert_eq!(
            shaping.partitions,
            [["group=eu".to_string(), "group=us".to_string()]]
        );
    }
    let taken = if release < Release::V6Networks {
        assert_eq!(
            store.networks().unwrap(),
            std::slice::from_ref(&wan),
            "{release:?}"
        );
        store.insert_network(&lab).unwrap();
        0
    } else {
        assert_eq!(
            store.networks().unwrap(),
            [lab.clone(), wan.clone()],
            "{release:?}"
        );
        let given = store.network_addresses("lab").unwrap();
        assert_eq!(
            given
                .iter()
                .map(|a| (a.instance.as_str(), a.device.as_deref(), a.ip.to_string()))
                .collect::<Vec<_>>(),
            [("web", Some("service"), "10.20.0.2".to_string())],
            "{release:?}"
        );
        1
    };
    // Today's allocation on the migrated tables: the next free address.
    let mut on_lab = record("on-lab", "02:00:00:00:00:0a");
    on_lab.attachments[0].bridge = lab.bridge.clone();
    on_lab.attachments[0].network = Some(LAB_ID.into());
    let written = store.insert_with_addresses(&on_lab, None, &[]).unwrap();
    let expected = std::net::Ipv4Addr::new(10, 20, 0, 2 + taken);
    assert_eq!(written[0].address, Some(expected), "{release:?}");
    assert_eq!(
        store.by_name("on-lab").unwrap().unwrap().attachments[0].address,
        Some(expected)
    );
    assert_eq!(written[0].emulator_port, None, "lab is not emulated");
    // A NIC on the emulated network: its address, and the port after the emulator's.
    let mut on_wan = record("on-wan", "02:00:00:00:00:0b");
    on_wan.attachments[0].bridge = wan.bridge.clone();
    on_wan.attachments[0].network = Some(WAN_ID.into());
    let written = store.insert_with_addresses(&on_wan, None, &[]).unwrap();
    assert_eq!(
        written[0].address,
        Some(std::net::Ipv4Addr::new(10, 50, 0, 2)),
        "{release:?}"
    );
    let port = written[0].emulator_port.expect("a NIC port");
    assert!(
        super::networks::EMULATOR_PORTS.contains(&port)
            && Some(port) != wan.emulator.map(|e| e.port),
        "{port}: not the emulator's, in the range"
    );
    assert_eq!(
        store.by_name("on-wan").unwrap().unwrap().attachments[0].emulator_port,
        Some(port)
    );
}

fn user_version(store: &Store) -> i32 {
    store
        .conn()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

/// Tables, indexes and the columns of each (name, type, NOT NULL, primary key), sorted.
fn schema_of(store: &Store) -> Vec<String> {
    let conn = store.conn();
    let mut objects: Vec<(String, String)> = conn
        .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    objects.sort();
    let mut schema = Vec::new();
    for (kind, name) in objects {
        schema.push(format!("{kind} {name}"));
        if kind != "table" {
            continue;
        }
        let mut columns: Vec<String> = conn
            .prepare(&format!("PRAGMA table_info({name})"))
            .unwrap()
            .query_map([], |r| {
                Ok(format!(
                    "{name}.{} {} notnull={} pk={}",
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, i32>(5)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        columns.sort();
        schema.extend(columns);
    }
    schema
}

/// No release before volumes had any; every migrated database records new ones and their
/// pending libvirt volumes.
fn check_volumes(store: &Store, release: Release) {
    assert!(store.volumes().unwrap().is_empty(), "{release:?}");
    store
        .insert_pending_volume("pool", "rhyzome-vol-x")
        .unwrap();
    store
        .insert_volume(&crate::store::volumes::VolumeRow {
            id: "vol-1".into(),
            name: "data".into(),
            owner: "alice".into(),
            pool: "pool".into(),
            libvirt_name: "rhyzome-vol-x".into(),
            format: "raw".into(),
            capacity: 1 << 20,
            base_id: None,
            created_at: "2026-12-01T00:00:00Z".into(),
        })
        .unwrap();
    assert!(store.abandoned_volumes().unwrap().is_empty(), "{release:?}");
    assert_eq!(store.volumes().unwrap().len(), 1, "{release:?}");
}

#[test]
fn every_released_database_migrates_and_serves_its_records() {
    // What today's daemon creates: the store's tables and the tokens'.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path()).unwrap();
    TokenStore::open(fresh_dir.path()).unwrap();
    for release in Release::ALL {
        let dir = state_dir_with(release);
        let store = Store::open(dir.path())
            .unwrap_or_else(|e| panic!("{release:?}: the fixture does not open: {e}"));
        let tokens = TokenStore::open(dir.path()).unwrap();
        assert_eq!(user_version(&store), SCHEMA_VERSION, "{release:?}");
        let daemon_id = store.daemon_id().to_string();
        match release.daemon_id() {
            Some(kept) => assert_eq!(daemon_id, kept, "{release:?}: the identity is kept"),
            None => assert!(
                uuid::Uuid::parse_str(&daemon_id).is_ok(),
                "{release:?}: the migration gives the database an identity: {daemon_id:?}"
            ),
        }
        assert_eq!(
            schema_of(&store),
            schema_of(&fresh),
            "{release:?}: the migrated schema is the current one"
        );
        assert_eq!(
            store.by_name("web").unwrap(),
            Some(expected_web(release)),
            "{release:?}"
        );
        assert_eq!(
            store.by_name("batch").unwrap(),
            Some(expected_batch(release)),
            "{release:?}"
        );
        check_images(&store, release);
        check_volumes(&store, release);
        let visible: Vec<String> = store
            .visible()
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(visible, ["batch", "web"], "{release:?}: `gone` was deleted");
        let gone = store.all().unwrap().into_iter().find(|r| r.name == "gone");
        assert_eq!(
            gone.map(|r| (r.id, r.desired, r.attachments)),
            Some((
                "33333333-3333-4333-8333-333333333333".into(),
                Desired::Deleted,
                vec![single_nic("02:00:00:00:00:03")]
            )),
            "{release:?}"
        );
        // The migrated database takes today's writes: a new record, a start with every
        // column set, and the uniqueness of MACs across old and new records.
        let new = record("new", "02:00:00:00:00:09");
        store.insert(&new).unwrap();
        store
            .set_started(
                &new.id,
                "2026-12-01T00:00:00Z",
                crate::console::LogPosition {
                    len: 7,
                    inode: Some(9),
                },
            )
            .unwrap();
        let got = store.by_name("new").unwrap().unwrap();
        assert_eq!((got.console_offset, got.console_inode), (7, Some(9)));
        assert_eq!(got.owner, "alice");
        // Every old NIC's MAC is taken: a single NIC's, a deleted instance's, and a NIC of
        // a multi-NIC instance (from the releases with images).
        for taken in [
            "02:00:00:00:00:01",
            "02:00:00:00:00:03",
            "02:00:00:00:00:04",
        ] {
            let clash = store.insert(&record("clash", taken));
            if taken.ends_with('4') && release < Release::V3TaggedImages {
                clash.unwrap();
                store.remove("id-clash").unwrap();
                continue;
            }
            assert!(
                matches!(clash, Err(StoreError::MacTaken(ref m)) if m == taken),
                "{release:?}: {taken}: {clash:?}"
            );
        }
        assert_eq!(store.by_name("clash").unwrap(), None, "{release:?}");
        // A tag given today keeps its time on the migrated image tables.
        store
            .insert_image("cc", 1, "2026-12-01T00:00:00Z", &new_inspection())
            .unwrap();
        store
            .tag_image("a-new", "1", "cc", "2026-12-01T00:00:01Z")
            .unwrap();
        assert_eq!(
            store.image("cc").unwrap().unwrap().tagged_at,
            [("a-new:1".to_string(), "2026-12-01T00:00:01Z".to_string())].into(),
            "{release:?}"
        );
        check_networks(&store, release);
        check_kernel_files(&store, release);
        check_testbeds(&store, release);
        drop(store);
        // Opening again finds the current version and changes nothing.
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.by_name("web").unwrap(), Some(expected_web(release)));
        assert_eq!(
            again.daemon_id(),
            daemon_id,
            "{release:?}: the identity lasts"
        );
        // The rebuilt tables still refer to the instances: rows go with their instance.
        let web = expected_web(release);
        again.remove(&web.id).unwrap();
        assert_eq!(
            attachments::of_instance(&again.conn(), &web.id).unwrap(),
            [],
            "{release:?}"
        );
        assert_eq!(again.instance_image(&web.id).unwrap(), None, "{release:?}");

        match release.alice_token() {
            None => assert!(!tokens.any().unwrap(), "{release:?} had no tokens"),
            Some(secret) => {
                let alice = tokens.authenticate(secret).unwrap().expect("alice's token");
                assert_eq!(
                    (alice.name.as_str(), alice.role, alice.prefix.as_deref()),
                    ("alice", Role::Operator, Some("a-")),
                    "{release:?}"
                );
                assert_eq!(
                    alice.quota,
                    Quota {
                        max_instances: Some(4),
                        max_total_memory_mib: Some(256),
                        max_instance_memory_mib: None,
                        bridges: Some(vec!["br0".into()]),
                    },
                    "{release:?}"
                );
                assert!(tokens.authenticate("rhz_wrong").unwrap().is_none());
            }
        }
    }
}

fn new_inspection() -> rhyzome_api::ImageInspection {
    rhyzome_api::ImageInspection {
        format: rhyzome_api::ImageFormat::Elf,
        elf_class: Some(32),
        multiboot_aout_kludge: None,
        description: "32-bit ELF".into(),
        solo5: None,
        problem: Some("no multiboot header".into()),
    }
}

/// Before version 4, `rhyzomesrv token create` run before the daemon's first start made the
/// tokens table in a database still at version 0; the daemon must adopt it, token and all.
#[test]
fn a_version_0_database_with_only_tokens_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = open_database(dir.path()).unwrap();
        conn.execute_batch(TOKENS_TABLE).unwrap();
        conn.execute(
            "INSERT INTO tokens (name, hash, role, prefix, quota, created_at) \
             VALUES ('alice', 'h', 'operator', NULL, '{}', 't')",
            [],
        )
        .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(user_version(&store), SCHEMA_VERSION);
    let fresh = Store::in_memory().unwrap();
    assert_eq!(schema_of(&store), schema_of(&fresh));
    let names: Vec<String> = store
        .conn()
        .prepare("SELECT name FROM tokens")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["alice"]);
}

/// From now on each schema change adds the fixture its release makes (see the README).
#[test]
fn every_schema_version_has_a_fixture() {
    let mut versions: Vec<i32> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            let version = name.strip_prefix('v')?.split('-').next()?.parse().ok()?;
            name.ends_with(".db").then_some(version)
        })
        .collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    for release in Release::ALL {
        assert!(fixtures_dir().join(release.fixture()).is_file());
    }
}

#[test]
fn a_version_1_database_of_unknown_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = Connection::open(dir.path().join("rhyzome.db")).unwrap();
        conn.execute_batch("CREATE TABLE instances (id TEXT PRIMARY KEY, name TEXT);")
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(
        matches!(err, StoreError::UnknownVersion1 { ref columns } if columns == "id, name"),
        "{err}"
    );
}
