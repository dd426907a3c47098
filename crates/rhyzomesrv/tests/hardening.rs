//! What an adversarial review of the API found (issue 11), each point driven over HTTP on the
//! real server loop with the fake hypervisor: JSON bodies that are not exactly one object,
//! refused creates that left kernel copies behind, tenants probing the server's file system or
//! other tenants' images, and small validation gaps. `scripts/probe.sh` repeats the hostile
//! inputs against a real daemon on real libvirt.

use rhyzome_api::client::{Client, ClientError, ClientOptions};
use rhyzome_api::{InstanceSpec, NetworkMode, NetworkSpec, RestartMode, RestartPolicy};
use rhyzomesrv::auth::{Quota, Role};
use rhyzomesrv::backend::{BackendError, Hypervisor};
use rhyzomesrv::images::inspect::testdata::virtio_image;
use rhyzomesrv::testing::{TestServer, TestServerOptions};

fn serve(auth: bool) -> TestServer {
    TestServer::start_with(TestServerOptions {
        config: serde_json::json!({"CreateRateLimit": 1000.0, "CreateBurst": 1000}),
        auth,
        ..Default::default()
    })
}

fn client(s: &TestServer, token: Option<String>) -> Client {
    Client::with_options(
        &s.url,
        ClientOptions {
            token,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A token of `role`, scoped to `prefix` when given, without a quota.
fn token(s: &TestServer, name: &str, role: Role, prefix: Option<&str>) -> String {
    token_with(s, name, role, prefix, &Quota::default())
}

fn token_with(
    s: &TestServer,
    name: &str,
    role: Role,
    prefix: Option<&str>,
    quota: &Quota,
) -> String {
    s.tokens().create(name, role, prefix, quota).unwrap()
}

fn api_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, rhyzome_api::ErrorBody) {
    match r.unwrap_err() {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

fn spec(s: &TestServer, name: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        kernel: s.kernel.clone(),
        ..Default::default()
    }
}

/// POSTs `body` as JSON to /v1/instances; returns the status and the decoded body.
fn post_json(s: &TestServer, body: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/instances", s.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(serde_json::Value::Null))
}

/// Uploads an image with NICs `service0` and `service1` and tries to create an instance of it
/// with `service0` on br0 and `service1` on `bridge1`; returns the refusal.
fn create_two_nics(c: &Client, bridge1: &str, salt: u8) -> (u16, rhyzome_api::ErrorBody) {
    let img = virtio_image(&["service0", "service1"], salt);
    c.upload_image(
        std::io::Cursor::new(img.clone()),
        img.len() as u64,
        None,
        Some("two:1"),
    )
    .unwrap();
    api_error(
        c.create_instance(&InstanceSpec {
            name: "two".into(),
            image: Some("two:1".into()),
            nets: Some(
                [
                    ("service0".to_string(), "br0".to_string()),
                    ("service1".to_string(), bridge1.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        }),
    )
}

#[test]
fn a_json_body_is_exactly_one_object() {
    let s = serve(false);
    let k = &s.kernel;
    let refused = [
        // Trailing data after the value.
        format!(r#"{{"name": "a", "kernel": "{k}"}}garbage"#),
        format!(r#"{{"name": "a", "kernel": "{k}"}} {{"name": "b", "kernel": "{k}"}}"#),
        // Sequences where an object is expected, at the top and inside.
        format!(r#"["a", "{k}"]"#),
        format!(r#"{{"name": "a", "kernel": "{k}", "network": ["bridge", "br0"]}}"#),
        format!(r#"{{"name": "a", "kernel": "{k}", "restart": ["always"]}}"#),
        // Anything else that is not an object.
        r#""a""#.to_string(),
        "42".to_string(),
        "null".to_string(),
    ];
    for body in &refused {
        let (status, err) = post_json(&s, body);
        assert_eq!(status, 400, "{body}: {err}");
        assert!(!err["message"].as_str().unwrap_or("").is_empty(), "{err}");
    }
    let (_, err) = post_json(
        &s,
        &format!(r#"{{"name": "a", "kernel": "{k}", "network": ["bridge", "br0"]}}"#),
    );
    assert_eq!(err["field"], "network", "{err}");
    assert!(s.backend.list().unwrap().is_empty());
    // Whitespace around the object is not trailing data.
    let (status, err) = post_json(
        &s,
        &format!("\n {{\"name\": \"a\", \"kernel\": \"{k}\"}} \n"),
    );
    assert_eq!(status, 201, "{err}");
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let s = serve(true);
    let admin = token(&s, "admin", Role::Admin, None);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let status = reqwest::blocking::Client::new()
            .get(format!("{}/v1/instances", s.url))
            .header("authorization", format!("{scheme} {admin}"))
            .send()
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200, "{scheme}");
    }
    let status = reqwest::blocking::Client::new()
        .get(format!("{}/v1/instances", s.url))
        .header("authorization", format!("Basic {admin}"))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 401);
}

#[test]
fn the_all_zero_mac_is_refused() {
    let s = serve(false);
    let c = client(&s, None);
    let (status, body) = api_error(c.create_instance(&InstanceSpec {
        network: Some(NetworkSpec {
            mode: NetworkMode::Bridge,
            bridge: None,
            mac: Some("00:00:00:00:00:00".into()),
            ..Default::default()
        }),
        ..spec(&s, "zero")
    }));
    assert_eq!((status, body.field.as_deref()), (422, Some("network.mac")));
    assert!(s.backend.list().unwrap().is_empty());
}

#[test]
fn retries_are_refused_with_the_never_policy() {
    let s = serve(false);
    let c = client(&s, None);
    let (status, body) = api_error(c.create_instance(&InstanceSpec {
        restart: Some(RestartPolicy {
            policy: RestartMode::Never,
            max_retries: Some(3),
            exit_codes: None,
        }),
        ..spec(&s, "never")
    }));
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("restart.max_retries"))
    );
    assert!(s.backend.list().unwrap().is_empty());
}

#[test]
fn a_bridge_libvirt_cannot_use_is_named_by_its_nets_device() {
    let s = serve(false);
    let c = client(&s, None);
    // libvirt's own words for a missing bridge.
    s.backend.fail_next_create(BackendError::Rejected {
        message: "Cannot get interface MTU on 'nonexistbr': No such device".into(),
    });
    let (status, body) = create_two_nics(&c, "nonexistbr", 1);
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("nets.service1")),
        "{body:?}"
    );
    assert!(body.message.contains("nonexistbr"), "{body:?}");
    assert!(!body.message.contains("\"br0\""), "{body:?}");
}

/// The files of `dir` (sorted names), empty when it does not exist.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A kernel in `KernelDirs` with content of its own, so that importing it would add a blob.
fn distinct_kernel(s: &TestServer, name: &str, content: &[u8]) -> String {
    let path = s.dir.path().join("kernels").join(name);
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn no_refused_create_leaves_a_file_behind() {
    use rhyzomesrv::images::inspect::testdata::{abi_note, elf64};
    let s = serve(true);
    let admin = client(&s, Some(token(&s, "admin", Role::Admin, None)));
    let quota = Quota {
        max_instances: Some(2),
        bridges: Some(vec!["br0".into()]),
        ..Default::default()
    };
    let alice = client(
        &s,
        Some(token_with(
            &s,
            "alice",
            Role::Operator,
            Some("alice-"),
            &quota,
        )),
    );
    let existing = alice.create_instance(&spec(&s, "alice-base")).unwrap();
    let existing_mac = existing.network.as_ref().unwrap().mac.clone();
    let blobs = s.state_dir.join("blobs");
    let consoles = s.state_dir.join("consoles");
    let (blobs_before, consoles_before) = (files_in(&blobs), files_in(&consoles));
    assert_eq!(blobs_before.len(), 1, "{blobs_before:?}");

    let mut n = 0u8;
    let mut fresh = |s: &TestServer| {
        n += 1;
        distinct_kernel(
            s,
            &format!("k{n}.virtio"),
            &[b"\x7fELF kernel ".as_slice(), &[n]].concat(),
        )
    };
    let hvt = distinct_kernel(&s, "hvt.elf", &elf64(&abi_note(1), false));
    let not_a_kernel = distinct_kernel(&s, "text.virtio", b"just some text");
    let mac = |m: &str| NetworkSpec {
        mode: NetworkMode::Bridge,
        bridge: None,
        mac: Some(m.into()),
        ..Default::default()
    };
    // (who, spec, expected status, expected field): one of every kind of refusal.
    let cases: Vec<(&Client, InstanceSpec, u16, &str)> = vec![
        (
            &alice,
            InstanceSpec {
                name: "Alice!".into(),
                kernel: fresh(&s),
                ..Default::default()
            },
            422,
            "name",
        ),
        (
            &alice,
            InstanceSpec {
                name: "bob-x".into(),
                kernel: fresh(&s),
                ..Default::default()
            },
            403,
            "name",
        ),
        (
            &alice,
            InstanceSpec {
                name: "alice-base".into(),
                kernel: fresh(&s),
                ..Default::default()
            },
            409,
            "name",
        ),
        (
            &alice,
            InstanceSpec {
                memory_mib: Some(1 << 30),
                kernel: fresh(&s),
                ..spec(&s, "alice-a")
            },
            422,
            "memory_mib",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: "/etc/passwd".into(),
                ..spec(&s, "alice-a")
            },
            422,
            "kernel",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: format!("{}/missing", s.dir.path().display()),
                ..spec(&s, "alice-a")
            },
            422,
            "kernel",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: s.dir.path().join("kernels").display().to_string(),
                ..spec(&s, "alice-a")
            },
            422,
            "kernel",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: not_a_kernel.clone(),
                ..spec(&s, "alice-a")
            },
            422,
            "kernel",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: hvt.clone(),
                ..spec(&s, "alice-a")
            },
            422,
            "kernel",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: fresh(&s),
                image: Some("x:1".into()),
                ..spec(&s, "alice-a")
            },
            422,
            "image",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: fresh(&s),
                nets: Some([("net0".to_string(), "br0".to_string())].into()),
                ..spec(&s, "alice-a")
            },
            422,
            "nets",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: fresh(&s),
                network: Some(NetworkSpec {
                    mode: NetworkMode::Bridge,
                    bridge: Some("br7".into()),
                    mac: None,
                    ..Default::default()
                }),
                ..spec(&s, "alice-a")
            },
            403,
            "network.bridge",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: fresh(&s),
                network: Some(mac(&existing_mac)),
                ..spec(&s, "alice-a")
            },
            409,
            "network.mac",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: fresh(&s),
                network: Some(mac("01:00:00:00:00:01")),
                ..spec(&s, "alice-a")
            },
            422,
            "network.mac",
        ),
        (
            &alice,
            InstanceSpec {
                kernel: fresh(&s),
                restart: Some(RestartPolicy {
                    policy: RestartMode::Always,
                    max_retries: None,
                    exit_codes: Some(vec![1]),
                }),
                ..spec(&s, "alice-a")
            },
            422,
            "restart.exit_codes",
        ),
        (
            &admin,
            InstanceSpec {
                kernel: fresh(&s),
                ..spec(&s, "libvirt-says-no")
            },
            502,
            "",
        ),
    ];
    for (i, (who, spec, status, field)) in cases.into_iter().enumerate() {
        if status == 502 {
            s.backend.fail_next_create(BackendError::Rejected {
                message: "internal error: process exited while connecting to monitor".into(),
            });
        }
        let (got, body) = api_error(who.create_instance(&spec));
        assert_eq!(got, status, "case {i}: {spec:?}: {body:?}");
        if !field.is_empty() {
            assert_eq!(body.field.as_deref(), Some(field), "case {i}: {body:?}");
        }
        assert_eq!(
            files_in(&blobs),
            blobs_before,
            "case {i}: {spec:?}: {body:?}"
        );
        assert_eq!(files_in(&consoles), consoles_before, "case {i}: {spec:?}");
    }
    // Over the tenant's quota (alice-base is one of two).
    alice.create_instance(&spec(&s, "alice-second")).unwrap();
    let blobs_before = files_in(&blobs);
    let (got, body) = api_error(alice.create_instance(&InstanceSpec {
        kernel: fresh(&s),
        ..spec(&s, "alice-third")
    }));
    assert_eq!((got, body.field.as_deref()), (403, Some("max_instances")));
    assert_eq!(files_in(&blobs), blobs_before);
    // And a body that is not JSON at all.
    let (got, _) = post_json(&s, "{");
    assert!(got == 400 || got == 401, "{got}");
    assert_eq!(files_in(&blobs), blobs_before);
    assert_eq!(admin.list_instances().unwrap().len(), 2);
    assert_eq!(s.backend.list().unwrap().len(), 2);
}

#[test]
fn tenants_learn_nothing_about_paths_outside_the_kernel_dirs() {
    let s = serve(true);
    let alice = client(&s, Some(token(&s, "alice", Role::Operator, Some("alice-"))));
    let admin = client(&s, Some(token(&s, "admin", Role::Admin, None)));
    let kernels = s.dir.path().join("kernels");
    std::os::unix::fs::symlink("/etc/hostname", kernels.join("x.virtio")).unwrap();
    let secret = s.dir.path().join("secret");
    std::fs::write(&secret, b"s").unwrap();
    let probes = [
        secret.display().to_string(),                         // exists, outside
        s.dir.path().join("missing").display().to_string(),   // missing, outside
        kernels.join("missing.virtio").display().to_string(), // missing, inside
        kernels.join("x.virtio").display().to_string(),       // symlink out
        format!("{}/../secret", kernels.display()),           // `..` out
        secret.join("x").display().to_string(), // unreadable (ENOTDIR; root reads all)
    ];
    let mut messages = std::collections::BTreeSet::new();
    for path in &probes {
        let (status, body) = api_error(alice.create_instance(&InstanceSpec {
            kernel: path.clone(),
            ..spec(&s, "alice-probe")
        }));
        assert_eq!(
            (status, body.field.as_deref()),
            (422, Some("kernel")),
            "{path}"
        );
        assert!(!body.message.contains("/etc"), "{path}: {}", body.message);
        assert!(
            !body.message.contains(&*kernels.to_string_lossy()),
            "{path}: {}",
            body.message
        );
        messages.insert(body.message);
    }
    assert_eq!(
        messages.len(),
        1,
        "one message for every probe: {messages:?}"
    );
    assert!(
        messages
            .first()
            .unwrap()
            .contains("not an allowed kernel path"),
        "{messages:?}"
    );
    // Admins keep the detail, and the audit log always records it.
    let (_, body) = api_error(admin.create_instance(&InstanceSpec {
        kernel: probes[3].clone(),
        ..spec(&s, "probe")
    }));
    assert!(body.message.contains("/etc/hostname"), "{}", body.message);
    let audit = std::fs::read_to_string(s.state_dir.join("audit.log")).unwrap();
    let alice_lines: Vec<&str> = audit.lines().filter(|l| l.contains("\"alice\"")).collect();
    assert_eq!(alice_lines.len(), probes.len(), "{audit}");
    assert!(
        alice_lines[3].contains("/etc/hostname"),
        "{}",
        alice_lines[3]
    );
    assert!(
        alice_lines[1].contains("does not exist"),
        "{}",
        alice_lines[1]
    );
}

#[test]
fn storage_is_shared_between_tenants_but_image_existence_is_not() {
    let s = serve(true);
    let alice = client(&s, Some(token(&s, "alice", Role::Operator, Some("alice-"))));
    let bob_token = token(&s, "bob", Role::Operator, Some("bob-"));
    let bob = client(&s, Some(bob_token.clone()));
    let img = virtio_image(&[], 42);
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&img)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let push = |c: &Client, name: &str| {
        c.upload_image(
            std::io::Cursor::new(img.clone()),
            img.len() as u64,
            None,
            Some(name),
        )
        .unwrap()
    };
    let a = push(&alice, "alice-web:1");
    assert!(a.created);
    assert!(!bob.image_exists(&digest).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Bob's upload of the same bytes answers as for new content, with his own metadata.
    let b = push(&bob, "bob-web:1");
    assert!(b.created, "bob learns that someone stored these bytes");
    assert_eq!(b.image.names, vec!["bob-web:1"]);
    assert!(
        b.image.uploaded_at > a.image.uploaded_at,
        "bob sees alice's upload time: {} vs {}",
        b.image.uploaded_at,
        a.image.uploaded_at
    );
    // And over HTTP the status says so.
    let status = reqwest::blocking::Client::new()
        .post(format!("{}/v1/images?name=bob-web:2", s.url))
        .bearer_auth(&bob_token)
        .header("content-type", "application/octet-stream")
        .body(img.clone())
        .send()
        .unwrap()
        .status();
    assert_eq!(
        status.as_u16(),
        200,
        "bob's own image again: not new to bob"
    );
    // A second push by Bob is not new to Bob; nothing Alice sees changes.
    assert!(!push(&bob, "bob-web:3").created);
    let a_view = alice.get_image("alice-web:1").unwrap();
    assert_eq!(a_view.names, vec!["alice-web:1"]);
    assert_eq!(a_view.uploaded_at, a.image.uploaded_at);
    let b_view = bob.get_image(&format!("sha256:{digest}")).unwrap();
    assert_eq!(b_view.uploaded_at, b.image.uploaded_at);
    // One blob for both.
    assert_eq!(files_in(&s.state_dir.join("blobs")).len(), 1);
    // Bob's delete removes his names (all of them) only; Alice's image stays.
    bob.delete_image("bob-web:1").unwrap();
    assert!(!bob.image_exists(&digest).unwrap());
    assert!(alice.image_exists(&digest).unwrap());
}

#[test]
fn an_interface_that_is_not_a_bridge_is_refused_before_libvirt_is_asked() {
    use rhyzomesrv::backend::InterfaceKind;
    let s = serve(false);
    let c = client(&s, None);
    s.backend.set_interface("br0", InterfaceKind::Bridge);
    s.backend
        .set_interface("lo", InterfaceKind::Other("ethernet".into()));
    s.backend
        .set_interface("nonexistbr", InterfaceKind::Missing);
    let (status, body) = api_error(c.create_instance(&InstanceSpec {
        network: Some(NetworkSpec {
            mode: NetworkMode::Bridge,
            bridge: Some("lo".into()),
            mac: None,
            ..Default::default()
        }),
        ..spec(&s, "on-lo")
    }));
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("network.bridge")),
        "{body:?}"
    );
    assert!(body.message.contains("\"lo\"") && body.message.contains("not a bridge"));
    let (status, body) = create_two_nics(&c, "nonexistbr", 2);
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("nets.service1")),
        "{body:?}"
    );
    assert!(body.message.contains("nonexistbr") && body.message.contains("does not exist"));
    assert_eq!(s.backend.creates(), 0, "libvirt was asked to start a guest");
    c.create_instance(&spec(&s, "on-br0")).unwrap();
}

#[test]
fn a_domain_name_taken_by_someone_else_is_a_conflict_not_a_libvirt_failure() {
    let s = serve(false);
    let c = client(&s, None);
    // Another tool (or another daemon) runs a domain of the name this instance would get.
    s.backend.inject(
        rhyzomesrv::backend::DomainStatus {
            uuid: "5b2c7a6e-0000-4000-8000-000000000001".into(),
            name: "rhyzome-taken".into(),
            active: true,
        },
        None,
    );
    let (status, body) = api_error(c.create_instance(&spec(&s, "taken")));
    assert_eq!(
        (status, body.field.as_deref()),
        (409, Some("name")),
        "{body:?}"
    );
    assert!(body.message.contains("rhyzome-taken"), "{body:?}");
    assert!(c.list_instances().unwrap().is_empty());
    assert_eq!(files_in(&s.state_dir.join("blobs")).len(), 0);
}
