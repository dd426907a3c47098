//! Authentication, authorization, quotas, rate limits, TLS and slow clients, on the real
//! server loop over loopback, with the fake hypervisor behind it. Every refused request is
//! checked for its exact status and for having changed nothing.

use rhyzome_api::client::{Client, ClientError, ClientOptions};
use rhyzome_api::InstanceSpec;
use rhyzomesrv::auth::tokens::TokenStore;
use rhyzomesrv::auth::{Quota, Role};
use rhyzomesrv::backend::Hypervisor;
use rhyzomesrv::testing::{TestServer, TestServerOptions};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

struct Server {
    srv: TestServer,
    tokens: TokenStore,
}

impl std::ops::Deref for Server {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.srv
    }
}

struct Setup {
    rate: f64,
    burst: u32,
    tls: Option<Arc<rustls::ServerConfig>>,
    local_socket: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            rate: 1000.0,
            burst: 1000,
            tls: None,
            local_socket: false,
        }
    }
}

fn serve_with(setup: Setup) -> Server {
    let srv = TestServer::start_with(TestServerOptions {
        config: serde_json::json!({
            "CreateRateLimit": setup.rate,
            "CreateBurst": setup.burst,
        }),
        auth: true,
        tls: setup.tls,
        header_timeout: Duration::from_secs(1),
        local_socket: setup.local_socket,
    });
    Server {
        tokens: srv.tokens(),
        srv,
    }
}

impl Server {
    fn client(&self, token: Option<&str>) -> Client {
        Self::client_of(&self.url, token)
    }

    /// A client of the local socket.
    fn local_client(&self, token: Option<&str>) -> Client {
        let socket = self.socket.as_ref().expect("served with a local socket");
        Self::client_of(&format!("unix://{}", socket.display()), token)
    }

    fn client_of(server: &str, token: Option<&str>) -> Client {
        Client::with_options(
            server,
            ClientOptions {
                token: token.map(str::to_string),
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn spec(&self, name: &str) -> InstanceSpec {
        InstanceSpec {
            name: name.into(),
            kernel: self.kernel.clone(),
            ..Default::default()
        }
    }

    fn names(&self, admin: &str) -> Vec<String> {
        self.client(Some(admin))
            .list_instances()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    }
}

fn status(e: ClientError) -> (u16, rhyzome_api::ErrorBody) {
    match e {
        ClientError::Api { status, body } => (status, body),
        other => panic!("expected an API error, got {other}"),
    }
}

#[test]
fn without_tokens_everyone_is_the_local_administrator_and_the_first_token_turns_auth_on() {
    let s = serve_with(Setup::default());
    let anon = s.client(None);
    anon.create_instance(&s.spec("a")).unwrap();
    let admin = s
        .tokens
        .create("root", Role::Admin, None, &Quota::default())
        .unwrap();
    let (code, body) = status(anon.list_instances().unwrap_err());
    assert_eq!((code, body.code.as_str()), (401, "unauthorized"));
    assert_eq!(s.names(&admin), vec!["a"]);
    // The instance made before records its maker.
    assert_eq!(
        s.client(Some(&admin)).get_instance("a").unwrap().owner,
        "anonymous"
    );
}

#[test]
fn on_the_local_socket_permissions_are_enough_and_a_token_narrows_the_caller() {
    let s = serve_with(Setup {
        local_socket: true,
        ..Setup::default()
    });
    let admin = s
        .tokens
        .create("root", Role::Admin, None, &Quota::default())
        .unwrap();
    let viewer = s
        .tokens
        .create("watcher", Role::Viewer, None, &Quota::default())
        .unwrap();
    // Over TCP a token is required; over the socket it is not.
    let (code, _) = status(s.client(None).create_instance(&s.spec("tcp")).unwrap_err());
    assert_eq!(code, 401);
    let local = s.local_client(None);
    let made = local.create_instance(&s.spec("sock")).unwrap();
    let uid = unsafe { libc::geteuid() };
    assert_eq!(made.owner, format!("local:uid={uid}"));
    assert_eq!(s.names(&admin), vec!["sock"]);

    // A token presented on the socket is checked like anywhere else.
    let (code, _) = status(
        s.local_client(Some(&viewer))
            .create_instance(&s.spec("viewer"))
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    let (code, _) = status(
        s.local_client(Some("rhz_not-a-token"))
            .delete_instance("sock")
            .unwrap_err(),
    );
    assert_eq!(code, 401);
    assert_eq!(s.names(&admin), vec!["sock"], "refusals changed nothing");

    // The audit log (owner-only) names the local caller and the process it came from.
    let audit_path = s.dir.path().join("state/audit.log");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&audit_path).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let created: serde_json::Value = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["caller"] == format!("local:uid={uid}"))
        .expect("the local create is audited");
    let peer = created["peer"].as_str().unwrap();
    assert_eq!(
        peer,
        format!("unix:uid={uid},pid={}", std::process::id()),
        "{created}"
    );
    assert_eq!(created["status"], 201);
}

#[test]
fn roles_prefixes_and_quotas_are_enforced_and_refusals_change_nothing() {
    let s = serve_with(Setup::default());
    let admin = s
        .tokens
        .create("root", Role::Admin, None, &Quota::default())
        .unwrap();
    let alice = s
        .tokens
        .create(
            "alice",
            Role::Operator,
            Some("alice-"),
            &Quota {
                max_instances: Some(2),
                max_total_memory_mib: Some(48),
                max_instance_memory_mib: Some(32),
                bridges: Some(vec!["br0".into()]),
            },
        )
        .unwrap();
    let viewer = s
        .tokens
        .create("bob", Role::Viewer, None, &Quota::default())
        .unwrap();
    let root = s.client(Some(&admin));
    root.create_instance(&s.spec("infra")).unwrap();
    let before = s.names(&admin);
    let domains_before = s.backend.list().unwrap().len();

    // Unauthenticated and wrong tokens: 401, on reads and writes alike.
    for client in [s.client(None), s.client(Some("rhz_not-a-real-token"))] {
        assert_eq!(status(client.list_instances().unwrap_err()).0, 401);
        assert_eq!(
            status(client.create_instance(&s.spec("x")).unwrap_err()).0,
            401
        );
        assert_eq!(status(client.delete_instance("infra").unwrap_err()).0, 401);
        assert_eq!(status(client.console("infra", None).unwrap_err()).0, 401);
    }

    // A viewer reads but does not write.
    let bob = s.client(Some(&viewer));
    assert_eq!(bob.list_instances().unwrap().len(), 1);
    let (code, body) = status(bob.create_instance(&s.spec("bob-1")).unwrap_err());
    assert_eq!((code, body.code.as_str()), (403, "forbidden"));
    assert!(
        body.message.contains("viewer role may not create"),
        "{}",
        body.message
    );
    for e in [
        bob.delete_instance("infra").unwrap_err(),
        bob.stop_instance("infra").unwrap_err(),
        bob.restart_instance("infra").unwrap_err(),
    ] {
        assert_eq!(status(e).0, 403);
    }

    // A tenant sees and touches only its prefix; others' instances do not exist for it.
    let a = s.client(Some(&alice));
    assert!(a.list_instances().unwrap().is_empty());
    assert_eq!(status(a.get_instance("infra").unwrap_err()).0, 404);
    assert_eq!(status(a.delete_instance("infra").unwrap_err()).0, 404);
    assert_eq!(status(a.stop_instance("infra").unwrap_err()).0, 404);
    assert_eq!(status(a.console("infra", None).unwrap_err()).0, 404);
    let (code, body) = status(a.create_instance(&s.spec("infra-2")).unwrap_err());
    assert_eq!((code, body.field.as_deref()), (403, Some("name")));

    // Quotas name the limit.
    let big = InstanceSpec {
        memory_mib: Some(33),
        ..s.spec("alice-big")
    };
    let (code, body) = status(a.create_instance(&big).unwrap_err());
    assert_eq!(
        (code, body.code.as_str(), body.field.as_deref()),
        (403, "quota_exceeded", Some("max_instance_memory_mib"))
    );
    let elsewhere = InstanceSpec {
        network: Some(rhyzome_api::NetworkSpec {
            mode: rhyzome_api::NetworkMode::Bridge,
            bridge: Some("br1".into()),
            mac: None,
            ..Default::default()
        }),
        ..s.spec("alice-br1")
    };
    let (code, body) = status(a.create_instance(&elsewhere).unwrap_err());
    assert_eq!((code, body.field.as_deref()), (403, Some("network.bridge")));
    a.create_instance(&s.spec("alice-1")).unwrap();
    let (code, body) = status(a.create_instance(&s.spec("alice-2")).unwrap_err());
    assert_eq!(
        (code, body.field.as_deref()),
        (403, Some("max_total_memory_mib")),
        "32 + 32 > 48: {}",
        body.message
    );
    let small = InstanceSpec {
        memory_mib: Some(16),
        ..s.spec("alice-2")
    };
    a.create_instance(&small).unwrap();
    let (code, body) = status(a.create_instance(&s.spec("alice-3")).unwrap_err());
    assert_eq!((code, body.field.as_deref()), (403, Some("max_instances")));
    let seen: Vec<String> = a
        .list_instances()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(seen, vec!["alice-1", "alice-2"]);
    assert_eq!(a.get_instance("alice-1").unwrap().owner, "alice");

    // Nothing the refused requests asked for happened.
    let mut expected = before.clone();
    expected.extend(["alice-1".to_string(), "alice-2".to_string()]);
    expected.sort();
    assert_eq!(s.names(&admin), expected);
    assert_eq!(s.backend.list().unwrap().len(), domains_before + 2);

    // Deleting frees quota; revoking locks out at once.
    a.delete_instance("alice-2").unwrap();
    a.create_instance(&InstanceSpec {
        memory_mib: Some(16),
        ..s.spec("alice-3")
    })
    .unwrap();
    s.tokens.revoke("alice").unwrap();
    assert_eq!(status(a.list_instances().unwrap_err()).0, 401);

    // Every mutating request is in the audit log, with who and the outcome.
    let audit = std::fs::read_to_string(s.dir.path().join("state/audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |caller: Option<&str>, path: &str, code: u64| {
        lines
            .iter()
            .any(|l| l["caller"].as_str() == caller && l["path"] == path && l["status"] == code)
    };
    assert!(find(Some("alice"), "/v1/instances", 201));
    assert!(find(Some("alice"), "/v1/instances", 403));
    assert!(find(Some("bob"), "/v1/instances/infra", 403));
    assert!(find(None, "/v1/instances/infra", 401));
    assert!(find(Some("alice"), "/v1/instances/alice-2", 204));
    assert!(
        lines.iter().all(|l| l["method"] != "GET"),
        "reads are not audited"
    );
}

#[test]
fn creates_are_rate_limited_per_caller() {
    let s = serve_with(Setup {
        rate: 0.5,
        burst: 2,
        ..Setup::default()
    });
    let token = s
        .tokens
        .create("fast", Role::Operator, None, &Quota::default())
        .unwrap();
    let c = s.client(Some(&token));
    c.create_instance(&s.spec("r1")).unwrap();
    c.create_instance(&s.spec("r2")).unwrap();
    let (code, body) = status(c.create_instance(&s.spec("r3")).unwrap_err());
    assert_eq!((code, body.code.as_str()), (429, "rate_limited"));
    // It says when to come back: one token at 0.5 per second.
    let raw = reqwest::blocking::Client::new()
        .post(format!("{}/v1/instances", s.url))
        .bearer_auth(&token)
        .json(&s.spec("r4"))
        .send()
        .unwrap();
    assert_eq!(raw.status(), 429);
    assert_eq!(raw.headers()["retry-after"], "2");
    assert_eq!(c.list_instances().unwrap().len(), 2);
    // Reads are not limited.
    for _ in 0..20 {
        c.list_instances().unwrap();
    }
}

#[test]
fn uploads_share_the_create_rate_limit() {
    let s = serve_with(Setup {
        rate: 0.5,
        burst: 2,
        ..Setup::default()
    });
    let token = s
        .tokens
        .create("pusher", Role::Operator, None, &Quota::default())
        .unwrap();
    let http = reqwest::blocking::Client::new();
    let upload = |name: &str| {
        http.post(format!("{}/v1/images?name={name}", s.url))
            .bearer_auth(&token)
            .header("content-type", "application/octet-stream")
            .body(std::fs::read(&s.kernel).unwrap())
            .send()
            .unwrap()
    };
    // One create and one upload use the burst of 2.
    s.client(Some(&token))
        .create_instance(&s.spec("u1"))
        .unwrap();
    assert_eq!(upload("a").status(), 201);
    let limited = upload("b");
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "2");
    let body: serde_json::Value = limited.json().unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
}

/// Without tokens every caller is `anonymous`: the limit then counts per client address, so
/// one busy client does not lock out the others.
#[test]
fn anonymous_creates_are_rate_limited_per_address() {
    let s = serve_with(Setup {
        rate: 0.5,
        burst: 2,
        ..Setup::default()
    });
    let from = |ip: [u8; 4]| {
        reqwest::blocking::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let create = |client: &reqwest::blocking::Client, name: &str| {
        client
            .post(format!("{}/v1/instances", s.url))
            .json(&s.spec(name))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let first = from([127, 0, 0, 1]);
    let second = from([127, 0, 0, 2]);
    assert_eq!(create(&first, "p1"), 201);
    assert_eq!(create(&first, "p2"), 201);
    assert_eq!(create(&first, "p3"), 429);
    // Another address has its own budget, and uses it up the same way.
    assert_eq!(create(&second, "q1"), 201);
    assert_eq!(create(&second, "q2"), 201);
    assert_eq!(create(&second, "q3"), 429);
    let audit = std::fs::read_to_string(s.state_dir.join("audit.log")).unwrap();
    let peers: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["status"] == 429)
        .map(|e| e["peer"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(peers, ["127.0.0.1", "127.0.0.2"]);
}

#[test]
fn a_client_that_sends_its_headers_too_slowly_is_cut_off() {
    let s = serve_with(Setup::default());
    let addr = s.url.trim_start_matches("http://");
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /v1/instances HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the server waited {:?} for the rest of the headers",
        started.elapsed()
    );
    // Others are served meanwhile and afterwards.
    s.client(None).list_instances().unwrap();
}

#[test]
fn tls_with_a_ca_file_or_a_pinned_fingerprint() {
    let certs = tempfile::tempdir().unwrap();
    let fingerprint =
        rhyzomesrv::tls::create_self_signed(certs.path(), &["127.0.0.1".into()]).unwrap();
    let config = rhyzomesrv::tls::server_config(
        &certs.path().join("cert.pem"),
        &certs.path().join("key.pem"),
    )
    .unwrap();
    let s = serve_with(Setup {
        tls: Some(config),
        ..Default::default()
    });
    let with = |opts: ClientOptions| Client::with_options(&s.url, opts).unwrap();
    let ca = std::fs::read(certs.path().join("cert.pem")).unwrap();
    with(ClientOptions {
        ca_pem: Some(ca),
        ..Default::default()
    })
    .list_instances()
    .unwrap();
    with(ClientOptions {
        fingerprint: Some(fingerprint),
        ..Default::default()
    })
    .list_instances()
    .unwrap();
    // An unknown certificate, a wrong pin, or plain HTTP get nowhere, each for its own
    // reason (not, say, because the server is unreachable).
    let unknown = failure_chain(with(ClientOptions::default()).list_instances());
    assert!(
        unknown.contains("invalid peer certificate: UnknownIssuer"),
        "{unknown}"
    );
    let wrong = format!("sha256:{}", "00".repeat(32));
    let mismatch = failure_chain(
        with(ClientOptions {
            fingerprint: Some(wrong),
            ..Default::default()
        })
        .list_instances(),
    );
    assert!(
        mismatch.contains("the server's certificate does not match the pinned fingerprint"),
        "{mismatch}"
    );
    let plain = Client::new(&s.url.replace("https://", "http://")).unwrap();
    let plain = failure_chain(plain.list_instances());
    assert!(
        !plain.contains("Connection refused") && !plain.contains("certificate"),
        "{plain}"
    );
    // The TLS server answers plain HTTP with a TLS alert, which is no HTTP response.
    assert!(plain.contains("invalid HTTP version parsed"), "{plain}");
}

/// The transport error of a request that failed before any HTTP answer, with its sources.
fn failure_chain<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    let err = result.expect_err("the request must fail");
    assert!(
        matches!(err, ClientError::Transport { .. }),
        "not a transport failure: {err}"
    );
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(": {e}"));
        source = e.source();
    }
    chain
}

/// Who makes a call in [`every_operation_in_the_api_document_refuses_viewers_and_other_tenants`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    /// A viewer without a prefix: reads everything, changes nothing.
    Viewer,
    /// An operator scoped to another prefix than the owner's.
    Stranger,
}

/// What one call must answer.
#[derive(Debug)]
enum Expect {
    /// Exactly this status.
    Status(u16),
    /// 200, and the body names none of the owner's resources (listings).
    Hides,
    /// 200 for everyone: the operation concerns no one's resources.
    Public,
}

#[derive(Debug)]
struct Call {
    who: Who,
    method: reqwest::Method,
    path: String,
    body: Option<(&'static str, Vec<u8>)>,
    expect: Expect,
}

/// The owner's resources the calls aim at.
struct Owned {
    instance: &'static str,
    network: &'static str,
    testbed: &'static str,
    /// A test-bed apply naming the owner's prefix.
    testbed_file: Vec<u8>,
    /// A network create naming the owner's prefix.
    network_spec: Vec<u8>,
    volume: &'static str,
    image: &'static str,
    digest: String,
    spec: Vec<u8>,
    upload: Vec<u8>,
}

/// The calls that must be refused for one operation of the API document, or `None` for an
/// operation this test does not know: then the test fails, so that no endpoint is added
/// without saying here who must be refused.
fn calls_for(method: &str, path: &str, owned: &Owned) -> Option<Vec<Call>> {
    use reqwest::Method;
    use Expect::*;
    use Who::*;
    let call = |who, method: Method, path: String, expect| Call {
        who,
        method,
        path,
        body: None,
        expect,
    };
    let instance = |verb: &str| match verb {
        "" => format!("/v1/instances/{}", owned.instance),
        v => format!("/v1/instances/{}/{v}", owned.instance),
    };
    let images = [
        format!("/v1/images/{}", owned.image),
        format!("/v1/images/{}", owned.digest),
    ];
    let json = |spec: &[u8]| Some(("application/json", spec.to_vec()));
    let octets = Some(("application/octet-stream", owned.upload.clone()));
    Some(match (method, path) {
        ("get", "/v1/info") | ("get", "/v1/openapi.json") => vec![
            call(Viewer, Method::GET, path.into(), Public),
            call(Stranger, Method::GET, path.into(), Public),
        ],
        // The node's metrics cover every tenant's instances: a viewer of the whole node may
        // read them, a token limited to a prefix may not.
        ("get", "/metrics") => vec![
            call(Viewer, Method::GET, path.into(), Public),
            call(Stranger, Method::GET, path.into(), Status(403)),
        ],
        // The hosts carry every tenant's instances, as metrics cover them.
        ("get", "/v1/hosts") => vec![
            call(Viewer, Method::GET, path.into(), Public),
            call(Stranger, Method::GET, path.into(), Status(403)),
        ],
        ("get", "/v1/hosts/{name}") => vec![
            call(Viewer, Method::GET, "/v1/hosts/local".into(), Public),
            call(Stranger, Method::GET, "/v1/hosts/local".into(), Status(403)),
        ],
        // Checked separately, on a live stream: see the test.
        ("get", "/v1/events") => vec![],
        ("get", "/v1/instances")
        | ("get", "/v1/images")
        | ("get", "/v1/networks")
        | ("get", "/v1/volumes")
        | ("get", "/v1/testbeds") => {
            vec![call(Stranger, Method::GET, path.into(), Hides)]
        }
        ("post", "/v1/instances") => vec![
            Call {
                body: json(&owned.spec),
                ..call(Viewer, Method::POST, path.into(), Status(403))
            },
            // The stranger's create names the owner's prefix.
            Call {
                body: json(&owned.spec),
                ..call(Stranger, Method::POST, path.into(), Status(403))
            },
        ],
        ("post", "/v1/images") => vec![
            Call {
                body: octets.clone(),
                ..call(
                    Viewer,
                    Method::POST,
                    format!("{path}?name=anything:v1"),
                    Status(403),
                )
            },
            Call {
                body: octets,
                ..call(
                    Stranger,
                    Method::POST,
                    format!("{path}?name={}-2", owned.image),
                    Status(403),
                )
            },
        ],
        ("get", "/v1/instances/{name}")
        | ("get", "/v1/instances/{name}/console")
        | ("get", "/v1/instances/{name}/stats") => {
            let verb = path
                .trim_start_matches("/v1/instances/{name}")
                .trim_start_matches('/');
            vec![call(Stranger, Method::GET, instance(verb), Status(404))]
        }
        ("delete", "/v1/instances/{name}")
        | ("post", "/v1/instances/{name}/start")
        | ("post", "/v1/instances/{name}/stop")
        | ("post", "/v1/instances/{name}/restart") => {
            let verb = path
                .trim_start_matches("/v1/instances/{name}")
                .trim_start_matches('/');
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            vec![
                call(Viewer, m.clone(), instance(verb), Status(403)),
                call(Stranger, m, instance(verb), Status(404)),
            ]
        }
        ("put", "/v1/instances/{name}/link") => {
            let body = json(br#"{"conditions": {"rate_bps": 1000000}}"#);
            vec![
                Call {
                    body: body.clone(),
                    ..call(Viewer, Method::PUT, instance("link"), Status(403))
                },
                Call {
                    body,
                    ..call(Stranger, Method::PUT, instance("link"), Status(404))
                },
            ]
        }
        ("post", "/v1/networks") => vec![
            Call {
                body: json(&owned.network_spec),
                ..call(Viewer, Method::POST, path.into(), Status(403))
            },
            Call {
                body: json(&owned.network_spec),
                ..call(Stranger, Method::POST, path.into(), Status(403))
            },
        ],
        ("get", "/v1/networks/{name}") => vec![call(
            Stranger,
            Method::GET,
            format!("/v1/networks/{}", owned.network),
            Status(404),
        )],
        ("delete", "/v1/networks/{name}") => {
            let network = format!("/v1/networks/{}", owned.network);
            vec![
                call(Viewer, Method::DELETE, network.clone(), Status(403)),
                call(Stranger, Method::DELETE, network, Status(404)),
            ]
        }
        // The conditions of emulated networks: authorization comes before the check that the
        // network is emulated (the owner's is not), so these are refused as on any network.
        ("get", "/v1/networks/{name}/conditions") => vec![call(
            Stranger,
            Method::GET,
            format!("/v1/networks/{}/conditions", owned.network),
            Status(404),
        )],
        ("put", "/v1/networks/{name}/link")
        | ("post", "/v1/networks/{name}/partitions")
        | ("delete", "/v1/networks/{name}/partitions") => {
            let verb = path.trim_start_matches("/v1/networks/{name}/");
            let target = format!("/v1/networks/{}/{verb}", owned.network);
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = match verb {
                "link" => json(br#"{"conditions": {"latency_ms": 20}}"#),
                _ if method == "post" => json(br#"{"between": ["group=eu", "group=us"]}"#),
                _ => None,
            };
            vec![
                Call {
                    body: body.clone(),
                    ..call(Viewer, m.clone(), target.clone(), Status(403))
                },
                Call {
                    body,
                    ..call(Stranger, m, target, Status(404))
                },
            ]
        }
        ("post", "/v1/testbeds") => vec![
            Call {
                body: json(&owned.testbed_file),
                ..call(Viewer, Method::POST, path.into(), Status(403))
            },
            Call {
                body: json(&owned.testbed_file),
                ..call(Stranger, Method::POST, path.into(), Status(403))
            },
        ],
        ("get", "/v1/testbeds/{name}") => vec![call(
            Stranger,
            Method::GET,
            format!("/v1/testbeds/{}", owned.testbed),
            Status(404),
        )],
        // Collecting is reading: a viewer of the owner's prefix may, a stranger sees no bed.
        ("get", "/v1/testbeds/{name}/collect") => vec![call(
            Stranger,
            Method::GET,
            format!("/v1/testbeds/{}/collect", owned.testbed),
            Status(404),
        )],
        ("delete", "/v1/testbeds/{name}") => {
            let bed = format!("/v1/testbeds/{}", owned.testbed);
            vec![
                call(Viewer, Method::DELETE, bed.clone(), Status(403)),
                call(Stranger, Method::DELETE, bed, Status(404)),
            ]
        }
        ("post", "/v1/testbeds/{name}/scale") | ("post", "/v1/testbeds/{name}/faults") => {
            let suffix = path.trim_start_matches("/v1/testbeds/{name}");
            let target = format!("/v1/testbeds/{}{suffix}", owned.testbed);
            let body = match suffix {
                "/scale" => json(br#"{"counts": {"g": 3}}"#),
                _ => json(br#"{"action": "kill", "group": "g", "count": 1}"#),
            };
            vec![
                Call {
                    body: body.clone(),
                    ..call(Viewer, Method::POST, target.clone(), Status(403))
                },
                Call {
                    body,
                    ..call(Stranger, Method::POST, target, Status(404))
                },
            ]
        }
        ("get", "/v1/images/{reference}") | ("head", "/v1/images/{reference}") => {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            images
                .into_iter()
                .map(|p| call(Stranger, m.clone(), p, Status(404)))
                .collect()
        }
        ("post", "/v1/volumes") => vec![
            Call {
                body: json(br#"{"name": "anything", "size_bytes": 1048576}"#),
                ..call(Viewer, Method::POST, path.into(), Status(403))
            },
            // The stranger's create names the owner's prefix.
            Call {
                body: json(br#"{"name": "alice-new", "size_bytes": 1048576}"#),
                ..call(Stranger, Method::POST, path.into(), Status(403))
            },
            // ... or clones the owner's volume, which it cannot see.
            Call {
                body: json(br#"{"name": "mallory-copy", "clone": "alice-vol"}"#),
                ..call(Stranger, Method::POST, path.into(), Status(422))
            },
        ],
        ("get", "/v1/volumes/{name}") | ("get", "/v1/volumes/{name}/content") => {
            let suffix = path.trim_start_matches("/v1/volumes/{name}");
            vec![call(
                Stranger,
                Method::GET,
                format!("/v1/volumes/{}{suffix}", owned.volume),
                Status(404),
            )]
        }
        ("delete", "/v1/volumes/{name}")
        | ("post", "/v1/volumes/{name}/resize")
        | ("put", "/v1/volumes/{name}/content") => {
            let suffix = path.trim_start_matches("/v1/volumes/{name}");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let target = format!("/v1/volumes/{}{suffix}", owned.volume);
            let body = match method {
                "post" => json(br#"{"size_bytes": 2097152}"#),
                "put" => Some(("application/octet-stream", b"overwritten".to_vec())),
                _ => None,
            };
            vec![
                Call {
                    body: body.clone(),
                    ..call(Viewer, m.clone(), target.clone(), Status(403))
                },
                Call {
                    body,
                    ..call(Stranger, m, target, Status(404))
                },
            ]
        }
        ("delete", "/v1/images/{reference}") => images
            .into_iter()
            .flat_map(|p| {
                [
                    call(Viewer, Method::DELETE, p.clone(), Status(403)),
                    call(Stranger, Method::DELETE, p, Status(404)),
                ]
            })
            .collect(),
        _ => return None,
    })
}

fn network_request(name: &str, subnet: &str) -> rhyzome_api::NetworkCreate {
    rhyzome_api::NetworkCreate {
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

#[test]
fn every_operation_in_the_api_document_refuses_viewers_and_other_tenants() {
    let s = serve_with(Setup::default());
    let token = |name: &str, role, prefix: Option<&str>| {
        s.tokens
            .create(name, role, prefix, &Quota::default())
            .unwrap()
    };
    let admin = token("root", Role::Admin, None);
    let owner = token("alice", Role::Operator, Some("alice-"));
    let viewer = token("watcher", Role::Viewer, None);
    let stranger = token("mallory", Role::Operator, Some("mallory-"));
    let alice = s.client(Some(&owner));
    alice.create_instance(&s.spec("alice-web")).unwrap();
    let image = rhyzomesrv::images::inspect::testdata::virtio_image(&["service"], 1);
    let uploaded = alice
        .upload_image(
            std::io::Cursor::new(image.clone()),
            image.len() as u64,
            None,
            Some("alice-img:v1"),
        )
        .unwrap();
    alice
        .create_volume(&rhyzome_api::VolumeSpec {
            name: "alice-vol".into(),
            size_bytes: Some(1 << 20),
            ..Default::default()
        })
        .unwrap();
    alice
        .create_network(&network_request("alice-net", "10.40.0.0/24"))
        .unwrap();
    let bed_file = |name: &str| {
        format!(
            "name = \"{name}\"\n[[groups]]\nname = \"g\"\ncount = 1\nkernel = {:?}\n",
            s.kernel
        )
    };
    alice
        .apply_testbed(&rhyzome_api::TestbedApply {
            file: bed_file("alice-bed"),
            dry_run: None,
            kernel_files: None,
        })
        .unwrap();
    let owned = Owned {
        instance: "alice-web",
        volume: "alice-vol",
        network: "alice-net",
        testbed: "alice-bed",
        testbed_file: serde_json::to_vec(&rhyzome_api::TestbedApply {
            file: bed_file("alice-bed2"),
            dry_run: None,
            kernel_files: None,
        })
        .unwrap(),
        network_spec: serde_json::to_vec(&network_request("alice-net2", "10.41.0.0/24")).unwrap(),
        image: "alice-img:v1",
        digest: uploaded.image.digest.clone(),
        spec: serde_json::to_vec(&s.spec("alice-x")).unwrap(),
        upload: rhyzomesrv::images::inspect::testdata::virtio_image(&["service"], 2),
    };
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // The event stream: another tenant's stream carries nothing of the owner's. The owner's
    // event comes first; the stranger's own event after it proves the stream delivered.
    let mut events = http
        .get(format!("{}/v1/events", s.url))
        .bearer_auth(&stranger)
        .send()
        .unwrap();
    assert_eq!(events.status(), 200);
    alice.stop_instance("alice-web").unwrap();
    s.client(Some(&stranger))
        .create_instance(&s.spec("mallory-probe"))
        .unwrap();
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    while !seen.contains("mallory-probe") {
        let n = events
            .read(&mut chunk)
            .expect("the stream delivers its own events");
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(
        !seen.contains("alice-"),
        "another tenant's event leaked: {seen}"
    );
    drop(events);

    let root = s.client(Some(&admin));
    let snapshot = || {
        let instances = serde_json::to_value(root.list_instances().unwrap()).unwrap();
        let images = serde_json::to_value(root.list_images().unwrap()).unwrap();
        let networks = serde_json::to_value(root.list_networks().unwrap()).unwrap();
        let volumes = serde_json::to_value(root.list_volumes().unwrap()).unwrap();
        let mut content = Vec::new();
        root.download_volume("alice-vol", &mut content, &mut |_| {})
            .unwrap();
        let testbeds: Vec<String> = root
            .list_testbeds()
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        (
            instances,
            images,
            networks,
            volumes,
            content,
            testbeds,
            s.backend.list().unwrap().len(),
            s.backend.networks().unwrap().len(),
        )
    };
    let before = snapshot();

    let document = api_document();
    let mut operations = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            operations += 1;
            let calls = calls_for(method, path, &owned).unwrap_or_else(|| {
                panic!(
                    "{method} {path} is in the API document, but this test does not know how \
                     to call it: add it to calls_for, with who must be refused"
                )
            });
            let mutating = !matches!(method.as_str(), "get" | "head");
            let named = path.contains('{');
            if mutating {
                assert!(
                    calls.iter().any(|c| c.who == Who::Viewer),
                    "{method} {path} changes something: a viewer must be tried"
                );
            }
            if named {
                assert!(
                    calls.iter().any(|c| c.who == Who::Stranger),
                    "{method} {path} names a resource: another tenant must be tried"
                );
            }
            for call in calls {
                let bearer = match call.who {
                    Who::Viewer => &viewer,
                    Who::Stranger => &stranger,
                };
                let mut req = http
                    .request(call.method.clone(), format!("{}{}", s.url, call.path))
                    .bearer_auth(bearer);
                if let Some((content_type, body)) = &call.body {
                    req = req
                        .header(reqwest::header::CONTENT_TYPE, *content_type)
                        .body(body.clone());
                }
                let response = req.send().unwrap();
                let status = response.status().as_u16();
                let text = response.text().unwrap();
                let what = format!("{call:?} answered {status}: {text}");
                match call.expect {
                    Expect::Status(code) => assert_eq!(status, code, "{what}"),
                    Expect::Hides => {
                        assert_eq!(status, 200, "{what}");
                        assert!(!text.contains("alice-"), "{what}");
                        let hex = owned.digest.trim_start_matches("sha256:");
                        assert!(!text.contains(hex), "{what}");
                    }
                    Expect::Public => assert_eq!(status, 200, "{what}"),
                }
            }
        }
    }
    assert!(
        operations >= 19,
        "only {operations} operations in the document"
    );
    // Nothing the refused calls asked for happened.
    assert_eq!(snapshot(), before);
}

#[test]
fn a_metrics_token_reads_metrics_and_nothing_else() {
    let s = serve_with(Setup::default());
    let admin = s
        .tokens
        .create("root", Role::Admin, None, &Quota::default())
        .unwrap();
    let prometheus = s
        .tokens
        .create("prometheus", Role::Metrics, None, &Quota::default())
        .unwrap();
    s.client(Some(&admin))
        .create_instance(&s.spec("web"))
        .unwrap();
    let http = reqwest::blocking::Client::new();
    let document = api_document();
    let mut refused = 0;
    for (path, item) in document["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{name}", "web")
            .replace("{reference}", "anything:v1");
        for method in item.as_object().expect("a path item").keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = http
                .request(m, format!("{}{concrete}", s.url))
                .bearer_auth(&prometheus)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body("{}")
                .send()
                .unwrap();
            let status = response.status().as_u16();
            if (method.as_str(), path.as_str()) == ("get", "/metrics") {
                assert_eq!(status, 200, "{method} {path}");
                continue;
            }
            assert_eq!(status, 403, "{method} {path}: {:?}", response.text());
            refused += 1;
        }
    }
    assert!(refused >= 15, "only {refused} operations tried");
    // Nothing changed: the instance still runs.
    assert_eq!(
        s.client(Some(&admin)).get_instance("web").unwrap().state,
        rhyzome_api::InstanceState::Running
    );
}

/// The committed OpenAPI document, which the walks above go through operation by operation.
fn api_document() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../openapi/rhyzome.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn info_says_who_the_caller_is() {
    let s = serve_with(Setup::default());
    let tenant = s
        .tokens
        .create("alice", Role::Operator, Some("alice-"), &Quota::default())
        .unwrap();
    let me = s.client(Some(&tenant)).info().unwrap().caller.unwrap();
    assert_eq!(
        (me.name.as_str(), me.role.as_str(), me.prefix.as_deref()),
        ("alice", "operator", Some("alice-"))
    );
    let viewer = s
        .tokens
        .create("watcher", Role::Viewer, None, &Quota::default())
        .unwrap();
    let me = s.client(Some(&viewer)).info().unwrap().caller.unwrap();
    assert_eq!((me.role.as_str(), me.prefix), ("viewer", None));
}
