//! The HTTP API, served for real on loopback, with the fake hypervisor behind it: status codes,
//! error bodies, hostile input, and the committed OpenAPI document.

use rhyzome_api::client::{Client, ClientError};
use rhyzome_api::{InstanceSpec, InstanceState};
use rhyzomesrv::backend::Hypervisor;
use rhyzomesrv::testing::TestServer;
use std::path::{Path, PathBuf};

struct Server {
    srv: TestServer,
    base: String,
    client: Client,
    http: reqwest::blocking::Client,
}

impl std::ops::Deref for Server {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.srv
    }
}

fn serve() -> Server {
    let srv = TestServer::start();
    Server {
        base: srv.url.clone(),
        client: Client::new(&srv.url).unwrap(),
        http: reqwest::blocking::Client::new(),
        srv,
    }
}

impl Server {
    fn spec(&self, name: &str) -> InstanceSpec {
        InstanceSpec {
            name: name.into(),
            kernel: self.kernel.clone(),
            kernel_parameters: "--ipv4 10.0.0.2/24".into(),
            memory_mib: None,
            vcpus: None,
            network: None,
            ..Default::default()
        }
    }

    /// POSTs a raw body; returns the status and the decoded error body.
    fn post_raw(
        &self,
        body: impl Into<reqwest::blocking::Body>,
        ctype: &str,
    ) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(format!("{}/v1/instances", self.base))
            .header("content-type", ctype)
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(serde_json::Value::Null))
    }

    fn assert_nothing_created(&self) {
        assert!(self.client.list_instances().unwrap().is_empty());
        assert!(self.backend.list().unwrap().is_empty());
    }
}

fn api_error(e: ClientError) -> (u16, rhyzome_api::ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_openapi_document_matches_the_code() {
    let committed = std::fs::read_to_string(repo_root().join("openapi/rhyzome.json"))
        .expect("openapi/rhyzome.json is committed");
    let generated = rhyzomesrv::http::openapi_json();
    assert!(
        committed == generated,
        "openapi/rhyzome.json is out of date; regenerate it with\n  cargo run -p rhyzomesrv -- openapi > openapi/rhyzome.json"
    );
    let s = serve();
    let served = s.client.openapi().unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(served, parsed);
    // A parameter is where the document says: a path parameter is in the path's template, and
    // a query struct's fields are query parameters (a derive without `parameter_in = Query`
    // makes them "path" parameters, which clients and schemathesis then never send).
    for (path, ops) in parsed["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let (name, place) = (p["name"].as_str().unwrap(), p["in"].as_str().unwrap());
                let templated = path.contains(&format!("{{{name}}}"));
                assert_eq!(
                    place == "path",
                    templated,
                    "{method} {path}: parameter {name} is documented in {place}"
                );
            }
        }
    }
    // Every operation the client uses is documented.
    let paths = parsed["paths"].as_object().unwrap();
    for p in [
        "/v1/instances",
        "/v1/instances/{name}",
        "/v1/instances/{name}/start",
        "/v1/instances/{name}/stop",
        "/v1/instances/{name}/restart",
        "/v1/instances/{name}/console",
        "/v1/info",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
}

#[test]
fn lifecycle_over_http() {
    let s = serve();
    let created = s.client.create_instance(&s.spec("msgrouter")).unwrap();
    assert_eq!(created.state, InstanceState::Running);
    assert_eq!(s.client.get_instance("msgrouter").unwrap(), created);
    assert_eq!(s.client.list_instances().unwrap(), vec![created.clone()]);
    assert_eq!(
        s.client.stop_instance("msgrouter").unwrap().state,
        InstanceState::Stopped
    );
    assert_eq!(
        s.client.start_instance("msgrouter").unwrap().state,
        InstanceState::Running
    );
    assert_eq!(
        s.client.restart_instance("msgrouter").unwrap().state,
        InstanceState::Running
    );
    let log = s
        .dir
        .path()
        .join(format!("state/consoles/{}.log", created.id));
    std::fs::write(&log, b"hello console\n").unwrap();
    assert_eq!(
        s.client.console("msgrouter", None).unwrap(),
        b"hello console\n"
    );
    assert_eq!(
        s.client.console("msgrouter", Some(8)).unwrap(),
        b"console\n"
    );
    s.client.delete_instance("msgrouter").unwrap();
    let (status, body) = api_error(s.client.get_instance("msgrouter").unwrap_err());
    assert_eq!((status, body.code.as_str()), (404, "not_found"));
    assert!(!log.exists(), "delete removes the console log");
    s.assert_nothing_created();
}

#[test]
fn bad_input_gets_a_clear_4xx_and_creates_nothing() {
    let s = serve();
    let cases: Vec<(InstanceSpec, u16, &str)> = vec![
        (
            InstanceSpec {
                name: "../../etc".into(),
                ..s.spec("x")
            },
            422,
            "name",
        ),
        (
            InstanceSpec {
                name: "<a href=x>".into(),
                ..s.spec("x")
            },
            422,
            "name",
        ),
        (
            InstanceSpec {
                name: "x".repeat(64),
                ..s.spec("x")
            },
            422,
            "name",
        ),
        (
            InstanceSpec {
                kernel: "/etc/passwd".into(),
                ..s.spec("x")
            },
            422,
            "kernel",
        ),
        (
            InstanceSpec {
                kernel: format!(
                    "{}/../../../etc/passwd",
                    s.dir.path().join("kernels").display()
                ),
                ..s.spec("x")
            },
            422,
            "kernel",
        ),
        (
            InstanceSpec {
                kernel: s
                    .dir
                    .path()
                    .join("kernels/missing.virtio")
                    .display()
                    .to_string(),
                ..s.spec("x")
            },
            422,
            "kernel",
        ),
        (
            InstanceSpec {
                kernel_parameters: "x".repeat(8192),
                ..s.spec("x")
            },
            422,
            "kernel_parameters",
        ),
        (
            InstanceSpec {
                kernel_parameters: "a\u{0}b".into(),
                ..s.spec("x")
            },
            422,
            "kernel_parameters",
        ),
        (
            InstanceSpec {
                memory_mib: Some(1 << 30),
                ..s.spec("x")
            },
            422,
            "memory_mib",
        ),
    ];
    for (spec, status, field) in cases {
        let (got, body) = api_error(s.client.create_instance(&spec).unwrap_err());
        assert_eq!(got, status, "{spec:?}: {body:?}");
        assert_eq!(body.field.as_deref(), Some(field), "{spec:?}: {body:?}");
        assert!(!body.message.is_empty());
    }

    let (status, body) = s.post_raw("{\"name\": \"a\", ", "application/json");
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_json")));
    let (status, body) = s.post_raw(
        r#"{"name": "a", "kernel": "/k", "kernel_params": "typo"}"#,
        "application/json",
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("kernel_params"))
    );
    let (status, body) = s.post_raw(r#"{"name": "a"}"#, "text/plain");
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    // Over the limit by up to 1 MiB: read and refused with a clean answer. (A far larger body
    // is refused without being read, and the client may then see the connection reset.)
    let huge = format!(r#"{{"name": "a", "kernel": "{}"}}"#, "k".repeat(1 << 20));
    let (status, body) = s.post_raw(huge, "application/json");
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("body_too_large"))
    );

    let resp = s.http.get(format!("{}/nope", s.base)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(
        resp.json::<serde_json::Value>().unwrap()["code"],
        "not_found"
    );
    let resp = s
        .http
        .put(format!("{}/v1/instances", s.base))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.json::<serde_json::Value>().unwrap()["code"],
        "method_not_allowed"
    );
    let resp = s
        .http
        .get(format!("{}/v1/instances/x/console?tail_bytes=-1", s.base))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    s.assert_nothing_created();
}

#[test]
fn xml_metacharacters_in_parameters_stay_text() {
    let s = serve();
    let params = "--name=</cmdline><devices><disk/></devices> & \"quoted\" 'x'";
    let i = s
        .client
        .create_instance(&InstanceSpec {
            kernel_parameters: params.into(),
            ..s.spec("meta")
        })
        .unwrap();
    assert_eq!(i.kernel_parameters, params);
    // The backend gets the parameters as they were sent; libvirt's XML keeps them text.
    let def = s.backend.definition(&i.id).unwrap();
    assert_eq!(def.cmdline, params);
    let xml = rhyzomesrv::backend::libvirt::domain_xml::render(&def).unwrap();
    assert!(!xml.contains("<disk"), "{xml}");
    assert!(xml.contains("&lt;/cmdline&gt;&lt;devices&gt;"), "{xml}");
}

#[test]
fn a_duplicate_name_is_a_conflict() {
    let s = serve();
    s.client.create_instance(&s.spec("a")).unwrap();
    let (status, body) = api_error(s.client.create_instance(&s.spec("a")).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (409, Some("name")));
    assert_eq!(s.client.list_instances().unwrap().len(), 1);
}

#[test]
fn a_domain_name_held_by_another_daemon_is_a_409_naming_it() {
    let s = serve();
    let info = s.client.info().unwrap();
    assert!(
        uuid::Uuid::parse_str(&info.daemon_id).is_ok(),
        "{:?}",
        info.daemon_id
    );
    // What another daemon with the same Hostname made on the shared libvirt.
    let other = "7d0c5a4e-0000-4000-8000-000000000001";
    s.backend.inject(
        rhyzomesrv::backend::DomainStatus {
            uuid: "8e1d6b5f-0000-4000-8000-000000000002".into(),
            name: "rhyzome-a".into(),
            active: true,
        },
        Some(rhyzomesrv::backend::DomainMark {
            daemon: Some(other.into()),
            host: info.hostname.clone(),
        }),
    );
    let (status, body) = api_error(s.client.create_instance(&s.spec("a")).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (409, Some("name")));
    assert!(body.message.contains(other), "{}", body.message);
    assert!(s.client.list_instances().unwrap().is_empty());
}

#[test]
fn stats_of_a_running_instance_and_a_clear_refusal_otherwise() {
    let s = serve();
    let i = s.client.create_instance(&s.spec("busy")).unwrap();
    let stats = s.client.instance_stats("busy").unwrap();
    assert_eq!(stats.name, "busy");
    // The fake backend's figures, and one counter set per NIC, named by its MAC.
    assert_eq!((stats.cpu_time_ns, stats.memory_kib), (1_000_000, 32 << 10));
    let macs: Vec<&str> = stats.nics.iter().map(|n| n.mac.as_str()).collect();
    assert_eq!(macs, vec![i.network.unwrap().mac.as_str()]);

    s.client.stop_instance("busy").unwrap();
    let (code, body) = api_error(s.client.instance_stats("busy").unwrap_err());
    assert_eq!(code, 409);
    assert!(body.message.contains("is stopped"), "{}", body.message);
    let (code, _) = api_error(s.client.instance_stats("nope").unwrap_err());
    assert_eq!(code, 404);
}

/// Reads server-sent events from `body` until `last` accepts one: each as (event name, data).
fn read_events(
    body: impl std::io::Read,
    last: impl Fn(&str, &serde_json::Value) -> bool,
) -> Vec<(String, serde_json::Value)> {
    use std::io::BufRead;
    let mut events = Vec::new();
    let (mut name, mut data) = (String::new(), String::new());
    for line in std::io::BufReader::new(body).lines() {
        let line = line.expect("the stream ended or timed out before the expected event");
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim());
        } else if line.is_empty() && !data.is_empty() {
            let value: serde_json::Value = serde_json::from_str(&data).unwrap();
            let done = last(&name, &value);
            events.push((std::mem::take(&mut name), value));
            data.clear();
            if done {
                break;
            }
        }
    }
    events
}

/// `/v1/events`, which schemathesis cannot test because it streams: bounded by a client
/// timeout, it must answer as the document says (status, content type, `Event` data), apply
/// its filter, refuse a bad query with a JSON error, and require the token when auth is on.
#[test]
fn the_event_stream_answers_as_documented() {
    let s = TestServer::start_with(rhyzomesrv::testing::TestServerOptions {
        auth: true,
        ..Default::default()
    });
    let http = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    let events_url = format!("{}/v1/events", s.url);

    let bad = http.get(format!("{events_url}?bogus=1")).send().unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().unwrap();
    assert_eq!(body["code"], "invalid_query", "{body}");

    // Events are not stored: subscribe first, then change things.
    let stream = http
        .get(format!("{events_url}?instance=ev-a"))
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    let content_type = stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let client = Client::new(&s.url).unwrap();
    let spec = |name: &str| InstanceSpec {
        name: name.into(),
        kernel: s.kernel.clone(),
        ..Default::default()
    };
    client.create_instance(&spec("ev-b")).unwrap();
    client.create_instance(&spec("ev-a")).unwrap();
    client.stop_instance("ev-a").unwrap();
    client.delete_instance("ev-b").unwrap();
    client.delete_instance("ev-a").unwrap();
    let events = read_events(stream, |_, data| data["state"] == "deleted");

    let document: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("openapi/rhyzome.json")).unwrap(),
    )
    .unwrap();
    let event_schema = &document["components"]["schemas"]["Event"];
    let documented: std::collections::BTreeSet<&str> = event_schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for (name, data) in &events {
        assert_eq!(name, "instance");
        assert_eq!(data["instance"], "ev-a", "the filter let through {data}");
        let keys: std::collections::BTreeSet<&str> = data
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, documented, "{data}");
        for required in event_schema["required"].as_array().unwrap() {
            assert!(!data[required.as_str().unwrap()].is_null(), "{data}");
        }
    }
    let states: Vec<&str> = events
        .iter()
        .map(|(_, d)| d["state"].as_str().unwrap())
        .collect();
    let stopped = states.iter().position(|s| *s == "stopped");
    assert!(
        stopped.is_some_and(|i| i + 1 < states.len()) && states.last() == Some(&"deleted"),
        "{states:?}"
    );

    // Once a token exists, the stream needs it.
    let token = rhyzomesrv::auth::tokens::TokenStore::open(&s.state_dir)
        .unwrap()
        .create(
            "watcher",
            rhyzomesrv::auth::Role::Viewer,
            None,
            &Default::default(),
        )
        .unwrap();
    let refused = http.get(&events_url).send().unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().unwrap();
    assert_eq!(body["code"], "unauthorized", "{body}");
    let allowed = http.get(&events_url).bearer_auth(&token).send().unwrap();
    assert_eq!(allowed.status(), 200);
}

/// `since` over HTTP: output after an RFC 3339 time, or a duration back from now; anything
/// else is refused naming the parameter.
#[test]
fn console_since_over_http() {
    let s = serve();
    s.client.create_instance(&s.spec("con")).unwrap();
    let between = s.console_output_around_a_time("con");
    let console = |since: &str| {
        let resp = s
            .http
            .get(format!("{}/v1/instances/con/console", s.base))
            .query(&[("since", since)])
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };
    assert_eq!(console(&between), (200, "new\n".to_string()));
    assert_eq!(console("1h"), (200, "old\nnew\n".to_string()));
    let (status, body) = console("last tuesday");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, &body["field"]),
        (422, &serde_json::json!("since")),
        "{body}"
    );
}

/// Console counts and offsets are `int64` in the document; a larger value is refused with a
/// 400 naming it, not quietly accepted (schemathesis found this once the parameters were
/// documented as query parameters).
#[test]
fn console_counts_beyond_the_documented_range_are_refused() {
    let s = serve();
    s.client.create_instance(&s.spec("big")).unwrap();
    for param in ["tail", "tail_bytes", "after"] {
        let ok = s
            .http
            .get(format!(
                "{}/v1/instances/big/console?{param}=9223372036854775807",
                s.base
            ))
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200, "{param} at the maximum");
        let res = s
            .http
            .get(format!(
                "{}/v1/instances/big/console?{param}=9223372036854775808",
                s.base
            ))
            .send()
            .unwrap();
        assert_eq!(res.status(), 400, "{param} beyond the maximum");
        let body: serde_json::Value = res.json().unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("9223372036854775808"),
            "{param}: {body}"
        );
    }
}

/// Labels are stored, shown, and select instances through `?selector=`; a bad label is a 422
/// naming it and creates nothing, a bad selector a 422 naming `selector`.
#[test]
fn labels_are_kept_and_select_instances() {
    let s = serve();
    let labelled = |name: &str, group: &str| InstanceSpec {
        labels: [
            ("group".to_string(), group.to_string()),
            ("testbed".to_string(), "t1".to_string()),
        ]
        .into(),
        ..s.spec(name)
    };
    s.client.create_instance(&labelled("eu1", "eu")).unwrap();
    s.client.create_instance(&labelled("eu2", "eu")).unwrap();
    s.client.create_instance(&labelled("us1", "us")).unwrap();
    s.client.create_instance(&s.spec("plain")).unwrap();

    let got = s.client.get_instance("eu1").unwrap();
    assert_eq!(got.labels.get("group").map(String::as_str), Some("eu"));
    let names = |selector: Option<&str>| -> Vec<String> {
        s.client
            .list_instances_matching(selector)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(names(Some("group=eu")), ["eu1", "eu2"]);
    assert_eq!(names(Some("group=us,testbed=t1")), ["us1"]);
    assert_eq!(names(Some("group=asia")), Vec::<String>::new());
    assert_eq!(names(None).len(), 4);

    for bad in ["group", "group=eu,,", "Group=eu", "a=1,a=2"] {
        let (status, body) = api_error(s.client.list_instances_matching(Some(bad)).unwrap_err());
        assert_eq!(
            (status, body.field.as_deref()),
            (422, Some("selector")),
            "{bad}"
        );
    }
    let bad_labels: Vec<(&str, &str, &str)> = vec![
        ("Group", "eu", "labels"),
        ("group", "e u", "labels.group"),
        ("-x", "eu", "labels"),
    ];
    for (key, value, field) in bad_labels {
        let spec = InstanceSpec {
            labels: [(key.to_string(), value.to_string())].into(),
            ..s.spec("refused")
        };
        let (status, body) = api_error(s.client.create_instance(&spec).unwrap_err());
        assert_eq!((status, body.field.as_deref()), (422, Some(field)), "{key}");
    }
    assert!(s.client.get_instance("refused").is_err());
}

/// Link conditions on a plain network (a host bridge): a rate is stored and goes into the
/// domain definition; latency, jitter, loss and down are refused with a 422 naming the field
/// and saying to use an emulated network; out-of-range values are 422s naming theirs.
#[test]
fn link_conditions_on_a_plain_network_keep_a_rate_and_refuse_the_rest() {
    let s = serve();
    let rate = rhyzome_api::LinkConditions {
        rate_bps: Some(10_000_000),
        ..Default::default()
    };
    let created = s
        .client
        .create_instance(&InstanceSpec {
            link: Some(rate),
            ..s.spec("shaped")
        })
        .unwrap();
    assert_eq!(created.attachments[0].conditions, rate);
    let def = s.backend.definition(&created.id).unwrap();
    assert_eq!(def.nics[0].rate_bps, Some(10_000_000));

    let conditions = |text: &str| rhyzome_api::validate::parse_conditions(text).unwrap();
    for (text, field) in [
        ("latency=50ms", "link.latency_ms"),
        ("jitter=5ms", "link.jitter_ms"),
        ("loss=30%", "link.loss_percent"),
        ("down", "link.down"),
    ] {
        let (status, body) = api_error(
            s.client
                .create_instance(&InstanceSpec {
                    link: Some(conditions(text)),
                    ..s.spec("refused")
                })
                .unwrap_err(),
        );
        assert_eq!(
            (status, body.field.as_deref()),
            (422, Some(field)),
            "{text}"
        );
        assert!(
            body.message.contains("emulated network"),
            "{}",
            body.message
        );
    }
    for (c, field) in [
        (
            rhyzome_api::LinkConditions {
                latency_ms: Some(-1.0),
                ..Default::default()
            },
            "conditions.latency_ms",
        ),
        (
            rhyzome_api::LinkConditions {
                loss_percent: Some(120.0),
                ..Default::default()
            },
            "conditions.loss_percent",
        ),
        (
            rhyzome_api::LinkConditions {
                rate_bps: Some(0),
                ..Default::default()
            },
            "conditions.rate_bps",
        ),
        (conditions("latency=50ms"), "conditions.latency_ms"),
    ] {
        let (status, body) = api_error(s.client.set_instance_link("shaped", &c).unwrap_err());
        assert_eq!((status, body.field.as_deref()), (422, Some(field)), "{c:?}");
    }
    assert!(s.client.get_instance("refused").is_err());
    // Refusals changed nothing; a new rate replaces the old one and is kept.
    assert_eq!(
        s.client.get_instance("shaped").unwrap().attachments[0].conditions,
        rate
    );
    let slower = conditions("rate=1mbit");
    let got = s.client.set_instance_link("shaped", &slower).unwrap();
    assert_eq!(got.attachments[0].conditions, slower);
    assert_eq!(
        s.client.get_instance("shaped").unwrap().attachments[0].conditions,
        slower
    );
    let (status, _) = api_error(s.client.set_instance_link("nobody", &slower).unwrap_err());
    assert_eq!(status, 404);
}

/// Default link conditions at network creation need an emulated network: on a plain one the
/// request is a 422 naming `link`, and nothing is created; a bad value names its field.
#[test]
fn network_default_link_conditions_are_refused_on_a_plain_network() {
    let s = serve();
    let latency = rhyzome_api::validate::parse_conditions("latency=20ms").unwrap();
    let request = rhyzome_api::NetworkCreate {
        name: "plain".into(),
        subnet: "10.66.0.0/24".into(),
        gateway: None,
        mode: None,
        dhcp: None,
        emulated: None,
        seed: None,
        link: Some(latency),
    };
    let (status, body) = api_error(s.client.create_network(&request).unwrap_err());
    assert_eq!((status, body.field.as_deref()), (422, Some("link")));
    assert!(body.message.contains("emulated"), "{}", body.message);
    let bad = rhyzome_api::NetworkCreate {
        emulated: Some(true),
        link: Some(rhyzome_api::LinkConditions {
            loss_percent: Some(150.0),
            ..Default::default()
        }),
        ..request
    };
    let (status, body) = api_error(s.client.create_network(&bad).unwrap_err());
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("link.loss_percent"))
    );
    assert!(s.client.list_networks().unwrap().is_empty());
}

/// `GET /v1/testbeds/{name}/collect`: a tar archive with the file as applied, every member's
/// console at `GROUP/NAME/console.log`, and the summaries with every RESULT line parsed
/// (json: a list per instance; csv: a row per RESULT line, the union of keys as columns).
#[test]
fn collect_archives_a_bed_with_its_results() {
    use rhyzome_api::collect::{CollectSummary, CSV_COLUMNS};
    let s = serve();
    let file = format!(
        "name = \"col\"\nseed = 11\n\n[[groups]]\nname = \"seed\"\ncount = 1\nkernel = {k:?}\n\n\
         [[groups]]\nname = \"nodes\"\ncount = 2\nafter = [\"seed\"]\nkernel = {k:?}\n",
        k = s.kernel
    );
    s.client
        .apply_testbed(&rhyzome_api::TestbedApply {
            file: file.clone(),
            dry_run: None,
            kernel_files: None,
        })
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !s.client.get_testbed("col").unwrap().ready {
        assert!(
            std::time::Instant::now() < deadline,
            "the bed never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let consoles = [
        ("col-seed-0", "booting\nRESULT rumor=r1 hops=0 ms=2\n"),
        (
            "col-nodes-0",
            "RESULT rumor=r1 hops=1 ms=25\nnoise\nRESULT rumor=r2 hops=3 ms=70 extra=yes\n",
        ),
        ("col-nodes-1", "no results here\n"),
    ];
    for (name, text) in consoles {
        let id = s.client.get_instance(name).unwrap().id;
        std::fs::write(rhyzomesrv::console::log_path(&s.state_dir, &id), text).unwrap();
    }

    let resp = s
        .http
        .get(format!("{}/v1/testbeds/col/collect", s.base))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let mut entries = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(resp);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut e, &mut text).unwrap();
        entries.insert(path, text);
    }
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "nodes/col-nodes-0/console.log",
            "nodes/col-nodes-1/console.log",
            "seed/col-seed-0/console.log",
            "summary.csv",
            "summary.json",
            "testbed.toml"
        ]
    );
    assert_eq!(entries["testbed.toml"], file);
    assert_eq!(entries["seed/col-seed-0/console.log"], consoles[0].1);

    let summary: CollectSummary = serde_json::from_str(&entries["summary.json"]).unwrap();
    assert_eq!((summary.testbed.as_str(), summary.seed), ("col", 11));
    assert_eq!(summary.file, file);
    assert_eq!(summary.instances.len(), 3);
    let by_name = |n: &str| summary.instances.iter().find(|i| i.name == n).unwrap();
    let node0 = by_name("col-nodes-0");
    assert_eq!((node0.group.as_str(), node0.index), ("nodes", 0));
    assert_eq!(node0.state, "running");
    assert!(node0.created_at.is_some() && node0.ready_ms.is_some());
    assert_eq!(node0.results.len(), 2);
    assert_eq!(node0.results[1]["hops"], "3");
    assert_eq!(node0.results[1]["extra"], "yes");
    assert_eq!(by_name("col-seed-0").results[0]["ms"], "2");
    assert!(by_name("col-nodes-1").results.is_empty());

    let rows: Vec<Vec<&str>> = entries["summary.csv"]
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    let header = &rows[0];
    assert_eq!(&header[..CSV_COLUMNS.len()], CSV_COLUMNS);
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    // One row per RESULT line (2 + 1), one for the instance without any.
    assert_eq!(rows.len(), 1 + 4, "{}", entries["summary.csv"]);
    let node0_rows: Vec<&Vec<&str>> = rows
        .iter()
        .filter(|r| r[col("name")] == "col-nodes-0")
        .collect();
    assert_eq!(node0_rows.len(), 2);
    assert_eq!(node0_rows[1][col("ms")], "70");
    assert_eq!(node0_rows[1][col("extra")], "yes");
    assert_eq!(node0_rows[0][col("extra")], "");

    let missing = s
        .http
        .get(format!("{}/v1/testbeds/nope/collect", s.base))
        .send()
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}
