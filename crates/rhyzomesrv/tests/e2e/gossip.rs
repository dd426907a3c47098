//! A P2P workload on a real test bed (issue 15): a seed and nine nodes of the test kernel
//! gossip on a bed network; a rumor injected at the seed from the lab namespace reaches every
//! node, each prints its `RESULT rumor=... hops=... ms=...` once, and `testbed collect`
//! writes the directory (`GROUP/NAME/console.log`, `testbed.toml`) and both summaries with the
//! rumor's columns filled.

use crate::harness::{netns, udp, Daemon};
use rhyzome_api::collect::CollectSummary;
use rhyzome_testkernel::{READY_LINE, RUMOR_RESULT_PREFIX};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const NODES: usize = 9;

fn bed_file(kernel: &str) -> String {
    gossip_bed("gsp", 7, "10.76.0.0/24", NODES, false, kernel)
}

/// A gossip test bed `name`: a seed and `nodes` nodes of the test kernel on the network
/// `NAME-net`, each node with three random peers among the nodes and the seed.
pub(crate) fn gossip_bed(
    name: &str,
    seed: u64,
    subnet: &str,
    nodes: usize,
    emulated: bool,
    kernel: &str,
) -> String {
    let emulated = if emulated { "emulated = true\n" } else { "" };
    format!(
        r#"name = "{name}"
seed = {seed}

[[networks]]
name = "{name}-net"
subnet = "{subnet}"
{emulated}
[[groups]]
name = "seed"
count = 1
kernel = "{kernel}"
network = "{name}-net"
kernel_parameters = "--ipv4={{cidr}} --name=seed --peers={{peers:nodes:3}}"
memory_mib = 16
ready = {{ console = "{READY_LINE}" }}

[[groups]]
name = "nodes"
count = {nodes}
after = ["seed"]
kernel = "{kernel}"
network = "{name}-net"
kernel_parameters = "--ipv4={{cidr}} --name=node{{i}} --peers={{peers:nodes:3}},{{group.seed.ip}}"
memory_mib = 16
ready = {{ console = "{READY_LINE}" }}
"#
    )
}

/// The address of instance `name` on its (first) network.
pub(crate) fn ip_of(instances: &[rhyzome_api::Instance], name: &str) -> Ipv4Addr {
    let i = instances.iter().find(|i| i.name == name).unwrap();
    let ip = i.attachments[0]
        .ipv4
        .as_deref()
        .expect("an address on the bed network");
    ip.split('/').next().unwrap().parse().unwrap()
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_rumor_reaches_every_node_and_collect_writes_its_results() {
    let d = Daemon::start("gsp");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gossip.toml");
    std::fs::write(&file, bed_file(&d.kernel())).unwrap();
    d.apply_bed_and_wait(&file, "3m");
    let instances = d.client.list_instances().unwrap();
    assert_eq!(instances.len(), 1 + NODES);
    let ip_of = |name: &str| ip_of(&instances, name);

    // Every guest's clock set from the host's, as the example script does: samples once the
    // guest's RTC clock runs (its first second edge, within a second of boot), until a `clock`
    // read shows it at most 5 ms behind (a clock set this way can only be behind).
    for i in &instances {
        let ip = ip_of(&i.name);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for k in 0..8u64 {
                udp(ip, &format!("clock-set {}", epoch_ms()));
                std::thread::sleep(Duration::from_millis(3 + 7 * k % 11));
            }
            let before = epoch_ms() as i64;
            let reply = udp(ip, "clock");
            let wall: i64 = reply
                .split_whitespace()
                .find_map(|w| w.strip_prefix("wall_ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if reply.contains("set=1") && wall >= before - 5 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: clock not set: {reply}",
                i.name
            );
        }
    }
    let injected = Instant::now();
    rhyzome_testkernel::udp_send_in(
        &netns(),
        SocketAddrV4::new(ip_of("gsp-seed-0"), rhyzome_testkernel::GOSSIP_PORT),
        format!("rumor e2e 0 {}", epoch_ms()).as_bytes(),
    )
    .unwrap();
    for i in &instances {
        d.wait_for_console(&i.name, RUMOR_RESULT_PREFIX, 1);
    }
    eprintln!(
        "rumor seen on all {} guests' consoles {:.1}s after injection",
        1 + NODES,
        injected.elapsed().as_secs_f64()
    );

    let out = dir.path().join("results");
    let printed = d.ctl_ok(&["testbed", "collect", "gsp", "-d", out.to_str().unwrap()]);
    assert!(printed.contains("summary.json"), "{printed}");
    assert_eq!(
        std::fs::read_to_string(out.join("testbed.toml")).unwrap(),
        bed_file(&d.kernel())
    );
    let summary: CollectSummary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary.testbed.as_str(), summary.seed), ("gsp", 7));
    assert_eq!(summary.networks.len(), 1);
    assert_eq!(summary.networks[0].subnet, "10.76.0.0/24");
    assert_eq!(summary.instances.len(), 1 + NODES);
    let mut times = Vec::new();
    for i in &summary.instances {
        let console = std::fs::read_to_string(out.join(&i.group).join(&i.name).join("console.log"))
            .unwrap_or_else(|e| panic!("{}: {e}", i.name));
        assert!(console.contains(READY_LINE), "{}", i.name);
        assert_eq!(i.state, "running");
        assert!(i.ready_ms.is_some() && i.created_at.is_some());
        assert_eq!(i.results.len(), 1, "{}: {:?}", i.name, i.results);
        let r = &i.results[0];
        assert_eq!(r["rumor"], "e2e");
        assert!(!r.contains_key("clock"), "{}: clock not set: {r:?}", i.name);
        let hops: u32 = r["hops"].parse().unwrap();
        assert_eq!(hops == 0, i.group == "seed", "{}: {r:?}", i.name);
        let ms: i64 = r["ms"].parse().unwrap();
        assert!((-20..30_000).contains(&ms), "{}: {r:?}", i.name);
        times.push((ms, hops));
    }
    times.sort();
    eprintln!(
        "rumor to all {} guests: max {} ms, median {} ms, max hops {}",
        1 + NODES,
        times.last().unwrap().0,
        times[times.len() / 2].0,
        times.iter().map(|t| t.1).max().unwrap()
    );
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 1 + NODES, "{csv}");
    for row in &rows {
        assert_eq!(row[col("rumor")], "e2e", "{csv}");
        assert!(
            !row[col("ms")].is_empty() && !row[col("hops")].is_empty(),
            "{csv}"
        );
    }

    d.ctl_ok(&["testbed", "destroy", "gsp"]);
    assert!(d.client.list_instances().unwrap().is_empty());
}
