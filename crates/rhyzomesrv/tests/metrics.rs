//! `GET /metrics` over the fake hypervisor: the exposition is parsed back with a Prometheus
//! text parser (`openmetrics-parser`) and its values and labels are checked, not string-matched.

use rhyzome_api::client::Client;
use rhyzome_api::InstanceSpec;
use rhyzomesrv::auth::{Quota, Role};
use rhyzomesrv::backend::counters::{BlockCounters, InterfaceCounters};
use rhyzomesrv::backend::{BackendError, DomainCounters, DomainStatus};
use rhyzomesrv::testing::{two_group_bed, TestServer, TestServerOptions};
#[path = "common/exposition.rs"]
mod exposition;
use exposition::{samples, value};

fn spec(srv: &TestServer, name: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        kernel: srv.kernel.clone(),
        ..Default::default()
    }
}

/// GETs `/metrics` and parses it; panics unless it is a 200 in the Prometheus text format.
fn scrape(srv: &TestServer, token: Option<&str>) -> Vec<exposition::Sample> {
    let mut req = reqwest::blocking::Client::new().get(format!("{}/metrics", srv.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    exposition::parse(&resp.text().unwrap())
}

#[test]
fn owned_domains_are_reported_under_the_exporters_names_and_labels() {
    let srv = TestServer::start();
    let client = Client::new(&srv.url).unwrap();
    let web = client.create_instance(&spec(&srv, "web")).unwrap();
    client.create_instance(&spec(&srv, "db")).unwrap();
    srv.backend.set_counters(
        &web.id,
        DomainCounters {
            cpu_time_ns: 2_500_000_000,
            memory_kib: 32 * 1024,
            max_memory_kib: 64 * 1024,
            vcpus: 2,
            interfaces: vec![InterfaceCounters {
                target_device: "vnet3".into(),
                rx_bytes: 1000,
                rx_packets: 10,
                rx_errors: 1,
                rx_drops: 2,
                tx_bytes: 2000,
                tx_packets: 20,
                tx_errors: 3,
                tx_drops: 4,
            }],
            blocks: vec![BlockCounters {
                target_device: "vda".into(),
                read_bytes: 4096,
                read_requests: 1,
                write_bytes: 8192,
                write_requests: 2,
            }],
            ..Default::default()
        },
    );
    // A domain with rhyzome's name prefix that this daemon does not own.
    srv.backend.inject(
        DomainStatus {
            uuid: "00000000-0000-4000-8000-0000000000ff".into(),
            name: "rhyzome-foreign".into(),
            active: true,
        },
        None,
    );

    let s = scrape(&srv, None);
    let web_labels = [("domain", "rhyzome-web"), ("instance", "web")];
    assert_eq!(
        value(
            &s,
            "libvirt_domain_info_cpu_time_seconds_total",
            &web_labels
        ),
        2.5
    );
    assert_eq!(
        value(&s, "libvirt_domain_info_memory_usage_bytes", &web_labels),
        (32 << 20) as f64
    );
    assert_eq!(
        value(&s, "libvirt_domain_info_maximum_memory_bytes", &web_labels),
        (64 << 20) as f64
    );
    assert_eq!(
        value(&s, "libvirt_domain_info_virtual_cpus", &web_labels),
        2.0
    );
    let nic = [
        ("domain", "rhyzome-web"),
        ("instance", "web"),
        ("target_device", "vnet3"),
        ("source_bridge", "br0"),
    ];
    for (metric, expected) in [
        ("receive_bytes", 1000.0),
        ("receive_packets", 10.0),
        ("receive_errors", 1.0),
        ("receive_drops", 2.0),
        ("transmit_bytes", 2000.0),
        ("transmit_packets", 20.0),
        ("transmit_errors", 3.0),
        ("transmit_drops", 4.0),
    ] {
        let name = format!("libvirt_domain_interface_stats_{metric}_total");
        assert_eq!(value(&s, &name, &nic), expected, "{name}");
    }
    let disk = [("instance", "web"), ("target_device", "vda")];
    for (metric, expected) in [
        ("read_bytes", 4096.0),
        ("read_requests", 1.0),
        ("write_bytes", 8192.0),
        ("write_requests", 2.0),
    ] {
        let name = format!("libvirt_domain_block_stats_{metric}_total");
        assert_eq!(value(&s, &name, &disk), expected, "{name}");
    }
    // The other instance's domain is there, with zeros from the fake.
    assert_eq!(
        value(
            &s,
            "libvirt_domain_info_cpu_time_seconds_total",
            &[("instance", "db")]
        ),
        0.0
    );
    // A domain whose vCPUs libvirt did not report has the instance's own.
    assert_eq!(
        value(
            &s,
            "libvirt_domain_info_virtual_cpus",
            &[("instance", "db")]
        ),
        1.0
    );
    // The foreign domain is nowhere.
    assert!(
        s.iter()
            .all(|x| x.labels.get("domain").map(String::as_str) != Some("rhyzome-foreign")),
        "a domain this daemon does not own was reported"
    );
    assert_eq!(
        samples(&s, "libvirt_domain_info_cpu_time_seconds_total", &[]).len(),
        2
    );
    assert_eq!(value(&s, "rhyzome_libvirt_up", &[]), 1.0);
}

#[test]
fn instances_by_state_restarts_and_state_changes_follow_the_store() {
    let srv = TestServer::start();
    let client = Client::new(&srv.url).unwrap();
    for name in ["a", "b", "c"] {
        client.create_instance(&spec(&srv, name)).unwrap();
    }
    client.stop_instance("c").unwrap();
    let s = scrape(&srv, None);
    assert_eq!(value(&s, "rhyzome_instances", &[("state", "running")]), 2.0);
    assert_eq!(value(&s, "rhyzome_instances", &[("state", "stopped")]), 1.0);
    // Every state is listed, so that series do not come and go.
    assert_eq!(value(&s, "rhyzome_instances", &[("state", "crashed")]), 0.0);
    assert_eq!(samples(&s, "rhyzome_instances", &[]).len(), 8);
    assert_eq!(
        value(
            &s,
            "rhyzome_instance_state_changes_total",
            &[("to", "running")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "rhyzome_instance_state_changes_total",
            &[("to", "stopped")]
        ),
        1.0
    );
    assert_eq!(
        value(&s, "rhyzome_instance_restarts_total", &[("instance", "a")]),
        0.0
    );
    // The stopped instance has no domain, so no domain series.
    assert!(samples(&s, "libvirt_domain_info_virtual_cpus", &[("instance", "c")]).is_empty());
    // Three successful creates were timed.
    let creates = samples(&s, "rhyzome_create_duration_seconds", &[]);
    assert!(creates[0].histogram, "{creates:?}");
    assert_eq!(creates[0].value, 3.0, "{creates:?}");
    assert!(value(&s, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&s, "process_open_fds", &[]) >= 3.0);
}

#[test]
fn requests_are_timed_by_route_template_never_by_raw_path() {
    let srv = TestServer::start();
    let client = Client::new(&srv.url).unwrap();
    client.create_instance(&spec(&srv, "web")).unwrap();
    client.get_instance("web").unwrap();
    client.get_instance("web").unwrap();
    let http = reqwest::blocking::Client::new();
    assert_eq!(
        http.get(format!("{}/v1/instances/nosuch", srv.url))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        http.get(format!("{}/random/attacker/path", srv.url))
            .send()
            .unwrap()
            .status(),
        404
    );
    let s = scrape(&srv, None);
    let histogram = |labels: &[(&str, &str)]| {
        let found = samples(&s, "rhyzome_http_request_duration_seconds", labels);
        assert_eq!(found.len(), 1, "{labels:?}: {found:?}");
        assert!(found[0].histogram, "{found:?}");
        found[0].value
    };
    let named = [("route", "/v1/instances/{name}"), ("method", "GET")];
    assert_eq!(histogram(&[named[0], named[1], ("status", "200")]), 2.0);
    assert_eq!(histogram(&[named[0], named[1], ("status", "404")]), 1.0);
    assert_eq!(
        histogram(&[
            ("route", "/v1/instances"),
            ("method", "POST"),
            ("status", "201")
        ]),
        1.0
    );
    assert_eq!(histogram(&[("route", "unmatched"), ("status", "404")]), 1.0);
    for sample in &s {
        let route = sample.labels.get("route").map_or("", String::as_str);
        assert!(
            !route.contains("web") && !route.contains("nosuch") && !route.contains("attacker"),
            "a raw path became a label: {sample:?}"
        );
    }
}

/// A daemon whose scrapes read the hypervisor every time (`MetricsMaxAgeMillis: 0`), for
/// tests that change the counters between two scrapes.
fn uncached() -> TestServer {
    TestServer::start_with(TestServerOptions {
        config: serde_json::json!({"MetricsMaxAgeMillis": 0}),
        ..Default::default()
    })
}

#[test]
fn an_unreachable_libvirt_is_reported_not_fatal() {
    let srv = uncached();
    let client = Client::new(&srv.url).unwrap();
    client.create_instance(&spec(&srv, "web")).unwrap();
    srv.backend
        .fail_counters(Some(BackendError::Unavailable("gone".into())));
    let s = scrape(&srv, None);
    assert_eq!(value(&s, "rhyzome_libvirt_up", &[]), 0.0);
    assert_eq!(value(&s, "rhyzome_instances", &[("state", "running")]), 1.0);
    assert!(samples(&s, "libvirt_domain_info_virtual_cpus", &[]).is_empty());
    srv.backend.fail_counters(None);
    assert_eq!(value(&scrape(&srv, None), "rhyzome_libvirt_up", &[]), 1.0);
}

#[test]
fn metrics_follow_authentication_and_refuse_tenant_tokens() {
    let srv = TestServer::start_with(TestServerOptions {
        auth: true,
        ..Default::default()
    });
    let tokens = srv.tokens();
    let viewer = tokens
        .create("prometheus", Role::Viewer, None, &Quota::default())
        .unwrap();
    let tenant = tokens
        .create("alice", Role::Operator, Some("alice-"), &Quota::default())
        .unwrap();
    let http = reqwest::blocking::Client::new();
    let get = |token: Option<&str>| {
        let mut req = http.get(format!("{}/metrics", srv.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().unwrap())
    };
    assert_eq!(get(None).0, 401);
    assert_eq!(get(Some("rhz_not_a_token")).0, 401);
    let (status, body) = get(Some(&tenant));
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["field"], "token", "{body}");
    assert_eq!(
        value(&scrape(&srv, Some(&viewer)), "rhyzome_libvirt_up", &[]),
        1.0
    );
}

/// Every metric family named in the exposition's `# TYPE` lines.
fn exported_families(srv: &TestServer) -> std::collections::BTreeSet<String> {
    let text = reqwest::blocking::get(format!("{}/metrics", srv.url))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_shipped_grafana_dashboard_parses_and_uses_only_exported_metrics() {
    let srv = TestServer::start();
    let client = Client::new(&srv.url).unwrap();
    client.create_instance(&spec(&srv, "web")).unwrap();
    let exported = exported_families(&srv);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("valid JSON");
    let mut used = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            // Metric names: identifiers with one of the exported prefixes.
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !["libvirt_", "rhyzome_", "process_"]
                    .iter()
                    .any(|p| word.starts_with(p))
                {
                    continue;
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .filter(|f| exported.contains(*f))
                    .unwrap_or(word);
                assert!(
                    exported.contains(family),
                    "panel {:?} uses {word}, which /metrics does not export; it exports {exported:?}",
                    panel["title"]
                );
                used += 1;
            }
        }
    }
    assert!(used >= 12, "only {used} metric references found");
}

#[test]
fn a_slow_scrape_holds_up_no_other_request() {
    let srv = TestServer::start();
    let client = Client::new(&srv.url).unwrap();
    client.create_instance(&spec(&srv, "web")).unwrap();
    srv.backend.slow_counters(std::time::Duration::from_secs(2));
    // Several scrapes at once, more than the runtime has worker threads here.
    let url = format!("{}/metrics", srv.url);
    let scrapes: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || reqwest::blocking::get(url).unwrap().status())
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    client.get_instance("web").unwrap();
    client.create_instance(&spec(&srv, "db")).unwrap();
    client.stop_instance("web").unwrap();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1000),
        "requests waited for the scrapes: {took:?}"
    );
    for s in scrapes {
        assert_eq!(s.join().unwrap(), 200);
    }
}

#[test]
fn scrapes_serve_the_background_snapshot_without_waiting_for_libvirt() {
    let srv = TestServer::start_with(TestServerOptions {
        config: serde_json::json!({"MetricsMaxAgeMillis": 1500}),
        ..Default::default()
    });
    let client = Client::new(&srv.url).unwrap();
    let web = client.create_instance(&spec(&srv, "web")).unwrap();
    let counters = |cpu_ns| DomainCounters {
        cpu_time_ns: cpu_ns,
        ..Default::default()
    };
    srv.backend.set_counters(&web.id, counters(1_000_000_000));
    srv.backend
        .slow_counters(std::time::Duration::from_millis(800));
    // The first scrape has no snapshot yet: it waits for one bulk call.
    let started = std::time::Instant::now();
    let s = scrape(&srv, None);
    assert!(started.elapsed() >= std::time::Duration::from_millis(800));
    let cpu = &[("instance", "web")];
    assert_eq!(
        value(&s, "libvirt_domain_info_cpu_time_seconds_total", cpu),
        1.0
    );
    // The next ones are answered from the snapshot while the refresher makes its slow calls.
    srv.backend.set_counters(&web.id, counters(2_000_000_000));
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let s = scrape(&srv, None);
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(400),
            "a scrape took {took:?}"
        );
        assert!(value(&s, "rhyzome_metrics_snapshot_age_seconds", &[]) < 1.5 + 0.8 + 0.5);
    }
    // The refresher picks up the change within max age plus one call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let s = scrape(&srv, None);
        if value(&s, "libvirt_domain_info_cpu_time_seconds_total", cpu) == 2.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot was never refreshed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn test_bed_and_network_gauges_and_domain_labels() {
    let srv = TestServer::start();
    let client = Client::new(&srv.url).unwrap();
    let file = two_group_bed("lab", &srv.kernel, "10.63.0.0/24", 3);
    client
        .apply_testbed(&rhyzome_api::testbed::TestbedApply {
            file,
            dry_run: None,
            kernel_files: None,
        })
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !client.get_testbed("lab").unwrap().ready {
        assert!(
            std::time::Instant::now() < deadline,
            "the bed never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The status names each group's `after` and its ready members (the dashboard's grid).
    let bed = client.get_testbed("lab").unwrap();
    assert_eq!(bed.groups[1].after, vec!["seed".to_string()]);
    let mut ready = bed.groups[1].ready_members.clone();
    ready.sort();
    assert_eq!(ready, ["lab-nodes-0", "lab-nodes-1", "lab-nodes-2"]);
    let s = scrape(&srv, None);
    let nodes = |group, state| {
        value(
            &s,
            "rhyzome_testbed_nodes",
            &[("testbed", "lab"), ("group", group), ("state", state)],
        )
    };
    assert_eq!(nodes("nodes", "desired"), 3.0);
    assert_eq!(nodes("nodes", "running"), 3.0);
    assert_eq!(nodes("nodes", "ready"), 3.0);
    assert_eq!(nodes("nodes", "failed"), 0.0);
    assert_eq!(nodes("seed", "ready"), 1.0);
    let net = [("network", "lab-net")];
    assert_eq!(value(&s, "rhyzome_network_addresses_used", &net), 4.0);
    // A /24 has 254 host addresses; the gateway takes one.
    assert_eq!(value(&s, "rhyzome_network_addresses_total", &net), 253.0);
    assert_eq!(value(&s, "rhyzome_network_instances", &net), 4.0);
    // A bed's domains carry its name and their group.
    let cpu = samples(
        &s,
        "libvirt_domain_info_cpu_time_seconds_total",
        &[("testbed", "lab"), ("group", "nodes")],
    );
    assert_eq!(cpu.len(), 3, "{cpu:?}");
}
