//! Unit tests of test-bed files: the issue's example, every kind of error with its position,
//! and the placeholders' values.

use super::*;

/// The issue's example, with the link keys that need link conditions.
const ISSUE_EXAMPLE: &str = r#"name = "gossip"
seed = 7                      # drives every random choice in this bed: peers, loss, fault picks

[[networks]]
name = "gossip-net"
subnet = "10.60.0.0/24"
emulated = true               # when link conditions exist; otherwise refuse with a clear message
link = { latency = "20ms" }

[[groups]]
name = "seed"
count = 1
kernel = "/var/lib/rhyzome/kernels/node.virtio"   # or image = "node:1.0", or kernel_file = "./node.virtio" (pushed by the CLI)
network = "gossip-net"        # or bridge = "br0"; or nets = { service = "gossip-net", admin = "mgmt" }
kernel_parameters = "--ipv4={cidr} --ipv4-gateway={gateway} --role=seed"
memory_mib = 16
restart = "on-failure:3"
ready = { console = "Serving" }          # or { udp = { port = 7, send = "status", expect = "ok" } } or { ping = true }

[[groups]]
name = "nodes"
count = 99
after = ["seed"]              # start only when every seed instance is ready
kernel = "/var/lib/rhyzome/kernels/node.virtio"
network = "gossip-net"
kernel_parameters = "--ipv4={cidr} --peers={peers:nodes:3},{group.seed.ip}"
memory_mib = 16
link = { latency = "80ms", loss = "1%" }
"#;

fn without_links(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("link") && !l.starts_with("emulated"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn errors(text: &str) -> Vec<BedError> {
    parse_bed(text).expect_err("the file should be refused").0
}

/// The one error of `text`, which must mention `words`, at `line`:`column`.
fn assert_error(text: &str, line: usize, column: usize, words: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.line == line && e.column == column && e.message.contains(words)),
        "wanted {line}:{column} {words:?}, got {errs:#?}"
    );
}

const BASE: &str = r#"name = "bed"
seed = 3

[[networks]]
name = "net"
subnet = "10.61.0.0/28"

[[groups]]
name = "a"
count = 2
kernel = "/k/node.virtio"
network = "net"
"#;

#[test]
fn the_issue_example_is_read_as_written_once_link_conditions_exist() {
    let bed = parse_bed(ISSUE_EXAMPLE).unwrap();
    assert_eq!(bed.name, "gossip");
    assert_eq!(bed.seed, 7);
    assert_eq!(bed.groups.len(), 2);
    let seed = &bed.groups[0];
    assert_eq!(seed.ready, Readiness::Console("Serving".into()));
    assert_eq!(seed.restart.policy, RestartMode::OnFailure);
    assert_eq!(seed.restart.max_retries, Some(3));
    assert_eq!(bed.groups[1].after, vec!["seed".to_string()]);
    assert_eq!(bed.start_order(), vec!["seed", "nodes"]);
}

#[test]
fn link_keys_become_network_defaults_and_per_instance_conditions() {
    let plan = parse_bed(ISSUE_EXAMPLE).unwrap().plan();
    let net = &plan.networks[0];
    assert_eq!(net.emulated, Some(true));
    assert_eq!(
        net.link,
        Some(LinkConditions {
            latency_ms: Some(20.0),
            ..Default::default()
        })
    );
    assert_eq!(plan.instances["seed"][0].spec.link, None);
    assert_eq!(
        plan.instances["nodes"][5].spec.link,
        Some(LinkConditions {
            latency_ms: Some(80.0),
            loss_percent: Some(1.0),
            ..Default::default()
        })
    );
    // Without them the networks are plain and the instances carry no conditions.
    let plain = parse_bed(&without_links(ISSUE_EXAMPLE)).unwrap().plan();
    assert_eq!(
        (plain.networks[0].emulated, plain.networks[0].link),
        (None, None)
    );
}

#[test]
fn link_errors_are_reported_where_they_are_written() {
    // A network's link without emulated = true.
    let no_emulation = ISSUE_EXAMPLE.replace("emulated = true ", "emulated = false");
    assert_error(&no_emulation, 8, 8, "need an emulated network");
    // A group's latency on a plain network: the network error, and the group's own.
    let plain = ISSUE_EXAMPLE
        .replace("emulated = true ", "")
        .replace("link = { latency = \"20ms\" }", "");
    assert_error(&plain, 28, 8, "not on an emulated bed network");
    // A bad value, an unknown condition, a value of the wrong type: at the value.
    let bad = ISSUE_EXAMPLE.replace("latency = \"80ms\"", "latency = \"fast\"");
    assert_error(&bad, 28, 20, "link.latency");
    let unknown = ISSUE_EXAMPLE.replace("latency = \"20ms\"", "delay = \"20ms\"");
    assert_error(&unknown, 8, 18, "unknown condition");
    let typed = ISSUE_EXAMPLE.replace("loss = \"1%\"", "loss = [1]");
    assert_error(&typed, 28, 35, "give a string");
    // A rate alone is fine on a plain network (libvirt's bandwidth honours it).
    let rate = BASE.to_string() + "link = { rate = \"10mbit\" }\n";
    let bed = parse_bed(&rate).unwrap();
    assert_eq!(bed.groups[0].link.rate_bps, Some(10_000_000));
}

#[test]
fn udp_and_ping_readiness_are_read_and_need_a_bed_network() {
    let udp = BASE.to_string()
        + "ready = { udp = { port = 7, send = \"status\", expect = \"uptime_ms=\" } }\n";
    let bed = parse_bed(&udp).unwrap();
    assert_eq!(
        bed.groups[0].ready,
        Readiness::Udp(UdpProbe {
            port: 7,
            send: "status".into(),
            expect: "uptime_ms=".into()
        })
    );
    let ping = BASE.to_string() + "ready = { ping = true }\n";
    assert_eq!(parse_bed(&ping).unwrap().groups[0].ready, Readiness::Ping);
    let nowhere = ping.replace("network = \"net\"\n", "");
    assert_error(&nowhere, 12, 9, "has none (give network or nets)");
    let port0 = udp.replace("port = 7", "port = 0");
    assert_error(&port0, 13, 9, "give a port from 1");
}

#[test]
fn the_plan_fills_in_bed_placeholders_and_leaves_the_server_s() {
    let bed = parse_bed(&without_links(ISSUE_EXAMPLE)).unwrap();
    let plan = bed.plan();
    assert_eq!(plan.networks.len(), 1);
    assert_eq!(plan.networks[0].subnet, "10.60.0.0/24");
    assert_eq!(plan.start_order, vec!["seed", "nodes"]);
    let seed = &plan.instances["seed"][0].spec;
    assert_eq!(seed.name, "gossip-seed-0");
    assert_eq!(seed.labels["testbed"], "gossip");
    assert_eq!(seed.labels["group"], "seed");
    assert_eq!(
        seed.kernel_parameters,
        "--ipv4={cidr} --ipv4-gateway={gateway} --role=seed"
    );
    // The gateway is .1, so the seed gets .2 and the nodes .3 onwards.
    let net = seed.network.as_ref().unwrap();
    assert_eq!(net.name.as_deref(), Some("gossip-net"));
    assert_eq!(net.ipv4.as_deref(), Some("10.60.0.2"));
    let nodes = &plan.instances["nodes"];
    assert_eq!(nodes.len(), 99);
    assert_eq!(
        nodes[98].spec.network.as_ref().unwrap().ipv4.as_deref(),
        Some("10.60.0.101")
    );
    for node in nodes {
        let params = &node.spec.kernel_parameters;
        let peers = params.strip_prefix("--ipv4={cidr} --peers=").expect(params);
        let peers: Vec<&str> = peers.split(',').collect();
        assert_eq!(peers.len(), 4, "3 nodes and the seed: {params}");
        assert_eq!(peers[3], "10.60.0.2");
        let own = node.spec.network.as_ref().unwrap().ipv4.clone().unwrap();
        assert!(
            !peers[..3].contains(&own.as_str()),
            "never itself: {params}"
        );
        let distinct: BTreeSet<&&str> = peers.iter().collect();
        assert_eq!(distinct.len(), 4, "{params}");
    }
    // The same file plans the same bed.
    assert_eq!(
        plan,
        parse_bed(&without_links(ISSUE_EXAMPLE)).unwrap().plan()
    );
}

#[test]
fn index_and_literal_braces_survive_the_plan() {
    let text = BASE.replace(
        "network = \"net\"",
        "network = \"net\"\nkernel_parameters = \"--id={i} {{x}} --ip={ip} --all={group.a.ip}\"",
    );
    let plan = parse_bed(&text).unwrap().plan();
    assert_eq!(
        plan.instances["a"][1].spec.kernel_parameters,
        "--id=1 {{x}} --ip={ip} --all=10.61.0.2,10.61.0.3"
    );
}

#[test]
fn peers_are_deterministic_never_self_and_connected() {
    for (n, k) in [(2u32, 1u32), (5, 2), (30, 3), (99, 3), (40, 39)] {
        let lists: Vec<Vec<u32>> = (0..n)
            .map(|i| peers(7, "g", i, "g", n, k).unwrap())
            .collect();
        for (i, list) in lists.iter().enumerate() {
            assert_eq!(list.len(), k as usize);
            assert!(!list.contains(&(i as u32)), "self in {list:?}");
            assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), list.len());
        }
        // Connected: every member is reached from member 0 along the lists.
        let mut reached = BTreeSet::from([0u32]);
        let mut todo = vec![0u32];
        while let Some(i) = todo.pop() {
            for &j in &lists[i as usize] {
                if reached.insert(j) {
                    todo.push(j);
                }
            }
        }
        assert_eq!(reached.len(), n as usize, "n={n} k={k}");
        let again: Vec<Vec<u32>> = (0..n)
            .map(|i| peers(7, "g", i, "g", n, k).unwrap())
            .collect();
        assert_eq!(lists, again);
    }
    // Another seed draws other chords.
    let a: Vec<_> = (0..30).map(|i| peers(7, "g", i, "g", 30, 3)).collect();
    let b: Vec<_> = (0..30).map(|i| peers(8, "g", i, "g", 30, 3)).collect();
    assert_ne!(a, b);
    assert_eq!(peers(7, "g", 0, "g", 3, 3), None, "only 2 others");
    assert_eq!(peers(7, "h", 0, "g", 3, 3).map(|p| p.len()), Some(3));
}

#[test]
fn an_unknown_key_is_refused_where_it_is_written() {
    assert_error(
        &BASE.replace("count = 2", "count = 2\nmemroy_mib = 16"),
        11,
        1,
        "memroy_mib",
    );
    assert_error(&format!("colour = 1\n{BASE}"), 1, 1, "colour");
}

#[test]
fn a_syntax_error_has_a_position() {
    assert_error(&BASE.replace("count = 2", "count = = 2"), 10, 9, "");
}

#[test]
fn a_missing_kernel_is_reported_at_its_group() {
    let errs = errors(&BASE.replace("kernel = \"/k/node.virtio\"\n", ""));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].line, 8, "{errs:#?}");
    assert!(errs[0].message.contains("has no kernel"), "{errs:#?}");
    assert_error(
        &BASE.replace("network = \"net\"", "network = \"net\"\nimage = \"x:1\""),
        13,
        9,
        "only one of kernel",
    );
}

#[test]
fn bad_placeholders_are_pointed_at_inside_the_string() {
    let with = |params: &str| {
        BASE.replace(
            "network = \"net\"",
            &format!("network = \"net\"\nkernel_parameters = \"--a {params}\""),
        )
    };
    // `kernel_parameters = "--a ` is 25 characters: the placeholder starts at column 26.
    assert_error(&with("{nope}"), 13, 26, "unknown placeholder {nope}");
    assert_error(&with("{group.b.ip}"), 13, 26, "names no group \"b\"");
    assert_error(&with("{group.a}"), 13, 26, "bad placeholder");
    assert_error(&with("{peers:a:x}"), 13, 26, "bad placeholder");
    assert_error(&with("{peers:a:2}"), 13, 26, "offers only 1");
    assert_error(&with("{ip"), 13, 21, "without its");
    parse_bed(&with("{peers:a:1} {i} {cidr} {gateway}")).unwrap();
}

#[test]
fn an_after_cycle_is_reported_at_the_entry_closing_it() {
    let text =
        format!("{BASE}\n[[groups]]\nname = \"b\"\ncount = 1\nkernel = \"/k\"\nafter = [\"a\"]\n")
            .replace("network = \"net\"", "network = \"net\"\nafter = [\"b\"]");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].message.contains("cycle"), "{errs:#?}");
    // Found from "a": it is "b"'s entry that leads back.
    assert_eq!((errs[0].line, errs[0].column), (19, 10), "{errs:#?}");
    assert_error(
        &BASE.replace("network = \"net\"", "network = \"net\"\nafter = [\"z\"]"),
        13,
        10,
        "no group \"z\"",
    );
}

#[test]
fn a_group_too_big_for_its_subnet_is_reported_at_its_count() {
    // A /28 has 14 hosts; the gateway takes one.
    parse_bed(&BASE.replace("count = 2", "count = 13")).unwrap();
    assert_error(
        &BASE.replace("count = 2", "count = 14"),
        10,
        9,
        "1 addresses short",
    );
    let two = format!(
        "{BASE}\n[[groups]]\nname = \"b\"\ncount = 12\nkernel = \"/k\"\nnetwork = \"net\"\n"
    );
    assert_error(&two, 16, 9, "does not fit in network \"net\"");
}

#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let text = BASE.replace("name = \"bed\"", "name = \"Bed\"").replace(
        "network = \"net\"",
        "network = \"other\"\nrestart = \"sometimes\"",
    );
    let errs = errors(&text);
    let at: Vec<(usize, usize)> = errs.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(at, vec![(1, 8), (12, 11), (13, 11)], "{errs:#?}");
}
