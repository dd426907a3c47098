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

/// A token of `role`, scoped to `prefix` when given, allowed onto `bridges` when given.
fn token(s: &TestServer, name: &str, role: Role, prefix: Option<&str>) -> String {
    s.tokens()
        .create(name, role, prefix, &Quota::default())
        .unwrap()
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
    let img = virtio_image(&["service0", "service1"], 1);
    c.upload_image(
        std::io::Cursor::new(img.clone()),
        img.len() as u64,
        None,
        Some("two:1"),
    )
    .unwrap();
    // libvirt's own words for a missing bridge.
    s.backend.fail_next_create(BackendError::Rejected {
        message: "Cannot get interface MTU on 'nonexistbr': No such device".into(),
    });
    let (status, body) = api_error(
        c.create_instance(&InstanceSpec {
            name: "two".into(),
            image: Some("two:1".into()),
            nets: Some(
                [
                    ("service0".to_string(), "br0".to_string()),
                    ("service1".to_string(), "nonexistbr".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        }),
    );
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("nets.service1")),
        "{body:?}"
    );
    assert!(body.message.contains("nonexistbr"), "{body:?}");
    assert!(!body.message.contains("\"br0\""), "{body:?}");
}
