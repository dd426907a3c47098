//! Several hosts: one daemon drives the lab's libvirtd and a second libvirtd in its own
//! network namespace over `qemu+tcp`, plus a host whose URI is wrong. Instances are placed by
//! name and by both policies, boot on the remote host from a kernel uploaded once into its
//! `rhyzome-kernels` pool, report their console and exit code from its `rhyzome-consoles`
//! pool, become `unknown` while its libvirtd is down and are adopted when it returns; a
//! `failover` instance moves to the local host, and its stale copy is destroyed on return.

use crate::harness::*;
use rhyzome_api::{InstanceSpec, InstanceState, PlacementPolicy};
use std::time::{Duration, Instant};

fn spec(d: &Daemon, name: &str, parameters: &str) -> InstanceSpec {
    InstanceSpec {
        name: name.into(),
        kernel: d.kernel(),
        kernel_parameters: parameters.into(),
        ..Default::default()
    }
}

/// The names of host 2's volumes in `pool` that start with `prefix`.
fn host2_volumes(pool: &str, prefix: &str) -> Vec<String> {
    let out = virsh_host2(&["vol-list", pool]);
    assert!(
        out.status.success(),
        "virsh vol-list {pool} on host 2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// Whether host 2 runs a domain named `name`.
fn host2_runs(name: &str) -> bool {
    let out = virsh_host2(&["list", "--name"]);
    assert!(out.status.success(), "virsh list on host 2 failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == name)
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts host 2's libvirtd again when dropped, so a failing test leaves the lab whole.
struct Host2Back;
impl Drop for Host2Back {
    fn drop(&mut self) {
        lab_command("host2-start");
    }
}

#[test]
fn two_hosts_place_boot_report_and_survive_a_remote_outage() {
    lab();
    let _host2 = host2_lock();
    lab_command("host2-start");
    let d = Daemon::start_with(
        "hosts",
        serde_json::json!({
            "LibvirtURI": null,
            "FailoverAfterSeconds": 10,
            "Hosts": [
                {"Name": "local", "URI": libvirt_uri()},
                {"Name": "h2", "URI": host2_uri(), "Insecure": true, "Labels": {"rack": "2"}},
                // Nothing listens there: a clear error for this host, the others serve.
                {"Name": "broken", "URI": "qemu+tcp://192.168.250.2:1/system", "Insecure": true},
            ],
        }),
    );
    let hosts = d.client.list_hosts().unwrap();
    let summary: Vec<(&str, bool)> = hosts
        .iter()
        .map(|h| (h.name.as_str(), h.reachable))
        .collect();
    assert_eq!(summary, [("local", true), ("h2", true), ("broken", false)]);
    let broken = &hosts[2];
    let error = broken.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("192.168.250.2:1") || error.contains("onnect"),
        "{error}"
    );
    assert!(hosts[1].libvirt_version.is_some() && hosts[1].cpus.is_some());
    assert!(
        d.log().contains("cannot reach host"),
        "the log names the broken host"
    );

    // Pinned to h2: booted there from the uploaded kernel; its console and exit code come
    // back through libvirt.
    let exits = d
        .client
        .create_instance(&InstanceSpec {
            host: Some("h2".into()),
            ..spec(&d, "hosts-exits", "--exit-after=1500 --exit-code=7")
        })
        .unwrap_or_else(|e| panic!("create on h2: {e}\n{}", d.log()));
    assert_eq!(exits.placement.as_ref().unwrap().host, "h2");
    let ended = d.wait_for_state("hosts-exits", InstanceState::Exited);
    assert_eq!(
        ended.exit_code,
        Some(7),
        "the exit code read from h2's console pool"
    );
    let console = d.console("hosts-exits");
    assert!(console.contains("Solo5: solo5_exit(7) called"), "{console}");
    let runs = d
        .client
        .create_instance(&InstanceSpec {
            host: Some("h2".into()),
            autostart: Some(true),
            ..spec(&d, "hosts-runs", "--ipv4=192.168.110.21/24")
        })
        .unwrap();
    d.wait_for_console("hosts-runs", "rhyzome-testkernel:", 1);
    assert!(host2_runs("rhyzome-hosts-runs"));
    assert!(!d.has_domain("hosts-runs"), "not on the local host");
    // One kernel, uploaded once for both.
    let prefix = format!("rz-{}", d.daemon_id);
    assert_eq!(host2_volumes("rhyzome-kernels", &prefix).len(), 1);

    // Both policies: spread takes the emptiest reachable host (local), binpack the fullest
    // (h2); the reason names the host passed over.
    let spread = d
        .client
        .create_instance(&spec(&d, "hosts-spread", ""))
        .unwrap();
    let placement = spread.placement.unwrap();
    assert_eq!(
        (placement.host.as_str(), placement.how.as_str()),
        ("local", "spread")
    );
    assert!(
        placement.reason.contains("broken (unreachable"),
        "{}",
        placement.reason
    );
    let binpack = d
        .client
        .create_instance(&InstanceSpec {
            placement: Some(PlacementPolicy::Binpack),
            ..spec(&d, "hosts-binpack", "")
        })
        .unwrap();
    assert_eq!(binpack.placement.unwrap().host, "h2");
    let failover = d
        .client
        .create_instance(&InstanceSpec {
            host_selector: Some([("rack".to_string(), "2".to_string())].into()),
            failover: Some(true),
            ..spec(&d, "hosts-failover", "")
        })
        .unwrap();
    assert_eq!(failover.placement.unwrap().host, "h2");
    assert!(host2_runs("rhyzome-hosts-failover"));

    // h2's libvirtd stops: its instances become unknown, never exited.
    let started_at = d.client.get_instance("hosts-runs").unwrap().started_at;
    let back = Host2Back;
    lab_command("host2-stop");
    let unknown = d.wait_for_state("hosts-runs", InstanceState::Unknown);
    assert!(unknown.exit_code.is_none());
    assert!(!d.client.get_host("h2").unwrap().reachable);
    // The failover instance moves to the local host after FailoverAfterSeconds.
    let deadline = Duration::from_secs(60);
    wait_until("hosts-failover runs on local", deadline, || {
        let i = d.client.get_instance("hosts-failover").unwrap();
        i.state == InstanceState::Running && i.placement.as_ref().is_some_and(|p| p.host == "local")
    });
    assert!(d.has_domain("hosts-failover"));
    assert_eq!(
        d.client.get_instance("hosts-runs").unwrap().state,
        InstanceState::Unknown,
        "a pinned instance waits for its host"
    );
    // h2 returns: its guest is adopted (the same run), the stale copy destroyed.
    drop(back);
    let adopted = d.wait_for_state("hosts-runs", InstanceState::Running);
    assert_eq!(adopted.started_at, started_at, "adopted, not restarted");
    wait_until(
        "the stale copy on h2 is gone",
        Duration::from_secs(30),
        || !host2_runs("rhyzome-hosts-failover"),
    );
    assert!(d.has_domain("hosts-failover"), "the moved guest runs on");
    assert_eq!(runs.id, adopted.id);

    // Deleting everything leaves nothing of this daemon's on h2.
    for i in d.client.list_instances().unwrap() {
        d.client.delete_instance(&i.name).unwrap();
    }
    assert!(!host2_runs("rhyzome-hosts-runs"));
    assert!(host2_volumes("rhyzome-consoles", &prefix).is_empty());
    assert!(
        host2_volumes("rhyzome-kernels", &prefix).is_empty(),
        "kernel collected"
    );
}
