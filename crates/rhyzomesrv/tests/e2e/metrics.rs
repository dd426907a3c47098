//! `GET /metrics` against a real guest on the lab's libvirt: CPU time and interface bytes
//! move between two scrapes while the guest is pinged from inside the lab namespace, the
//! labels are the exporters' (`domain`, `target_device` a real tap, `source_bridge` the lab
//! bridge) plus `instance`, and a `rhyzome-*` domain made by hand with `virsh create` (so not
//! this daemon's) is left out although libvirt's bulk statistics include it.

use crate::harness::{bridge, ping, udp, virsh, virsh_create, Daemon};
use std::net::Ipv4Addr;
use std::time::Duration;

#[path = "../common/exposition.rs"]
mod exposition;
use exposition::{samples, value, Sample};

fn scrape(d: &Daemon) -> Vec<Sample> {
    let resp = reqwest::blocking::get(format!("{}/metrics", d.server)).unwrap();
    assert_eq!(resp.status(), 200, "{}", d.log());
    exposition::parse(&resp.text().unwrap())
}

/// A domain this test made with `virsh create`, destroyed by its UUID when the test ends.
struct HandMade(String);

impl Drop for HandMade {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.0]);
    }
}

#[test]
fn a_real_guest_s_counters_move_and_a_foreign_domain_is_left_out() {
    let d = Daemon::start("met");
    let ip = Ipv4Addr::new(192, 168, 100, 230);
    let instance = d.create_at("met-a", ip);
    assert!(ping(ip, Duration::from_secs(30)), "{}", d.log());

    // Another tool's guest, named like rhyzome's: the same test kernel, its own UUID, name,
    // MAC, address and console, and another daemon's identity in its mark.
    let xml = String::from_utf8(virsh(&["dumpxml", &instance.id]).stdout).unwrap();
    let foreign_uuid = uuid::Uuid::new_v4().to_string();
    let foreign_xml = xml
        .replace(&instance.id, &foreign_uuid)
        .replace("met-a", "met-foreign")
        .replace("192.168.100.230", "192.168.100.231")
        .replace(
            &rhyzomesrv::service::mac_for_name("met-a"),
            "02:00:00:00:02:31",
        )
        .replace(&d.daemon_id, "00000000000000000000000000000000");
    let _foreign = HandMade(foreign_uuid.clone());
    virsh_create(&foreign_xml, &d.dir.path().join("foreign.xml"));
    let domstats = String::from_utf8(virsh(&["domstats", "rhyzome-met-foreign"]).stdout).unwrap();
    assert!(
        domstats.contains("cpu.time="),
        "the foreign domain is not running, so its absence would prove nothing: {domstats}"
    );

    let labels = [("domain", "rhyzome-met-a"), ("instance", "met-a")];
    let cpu = |s: &[Sample]| value(s, "libvirt_domain_info_cpu_time_seconds_total", &labels);
    let first = scrape(&d);
    // libvirt reads a guest's CPU time from /proc in 10 ms ticks here (no cgroups in the
    // lab), and an idle TCG guest uses a few percent of a core: ping and scrape until it
    // moves, for at most 20 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let second = loop {
        assert!(ping(ip, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(300));
        let s = scrape(&d);
        if cpu(&s) > cpu(&first) || std::time::Instant::now() > deadline {
            break s;
        }
    };
    assert!(cpu(&first) > 0.0);
    assert!(
        cpu(&second) > cpu(&first),
        "CPU time did not move: {} then {}",
        cpu(&first),
        cpu(&second)
    );
    assert_eq!(
        value(&second, "libvirt_domain_info_virtual_cpus", &labels),
        f64::from(instance.vcpus)
    );
    assert_eq!(
        value(&second, "libvirt_domain_info_maximum_memory_bytes", &labels),
        f64::from(instance.memory_mib) * 1024.0 * 1024.0
    );
    let nic = |s: &[Sample], metric: &str| -> (f64, String) {
        let found = samples(s, metric, &labels);
        assert_eq!(found.len(), 1, "{metric}: {found:?}");
        let x = found[0];
        assert_eq!(
            x.labels.get("source_bridge").map(String::as_str),
            Some(bridge().as_str()),
            "{x:?}"
        );
        (x.value, x.labels["target_device"].clone())
    };
    for metric in [
        "libvirt_domain_interface_stats_receive_bytes_total",
        "libvirt_domain_interface_stats_receive_packets_total",
        "libvirt_domain_interface_stats_transmit_bytes_total",
        "libvirt_domain_interface_stats_transmit_packets_total",
    ] {
        let (before, tap) = nic(&first, metric);
        let (after, _) = nic(&second, metric);
        assert!(tap.starts_with("vnet"), "{metric}: target_device {tap:?}");
        assert!(
            after > before,
            "{metric} did not move: {before} then {after}"
        );
    }
    for s in [&first, &second] {
        let leaked: Vec<_> = s
            .iter()
            .filter(|x| {
                x.labels.get("domain").map(String::as_str) == Some("rhyzome-met-foreign")
                    || x.labels.values().any(|v| v.contains(&foreign_uuid))
            })
            .collect();
        assert!(
            leaked.is_empty(),
            "a foreign domain was reported: {leaked:?}"
        );
    }
    assert_eq!(value(&second, "rhyzome_libvirt_up", &[]), 1.0);
    assert_eq!(
        value(&second, "rhyzome_instances", &[("state", "running")]),
        1.0
    );
}

/// Disk counters of a guest with a volume (a second bulk call, for domains with disks only):
/// the boot-time read of sector 1 shows in the read counters, a write asked over UDP in the
/// write counters, under the disk's `target_device`, with the `image` label of the image the
/// guest booted from.
#[test]
fn a_guest_with_a_volume_has_block_counters_that_move() {
    let d = Daemon::start_with("metblk", serde_json::json!({"MetricsMaxAgeMillis": 300}));
    d.client
        .create_volume(&rhyzome_api::VolumeSpec {
            name: "metblk-data".into(),
            size_bytes: Some(4 << 20),
            ..Default::default()
        })
        .unwrap();
    d.client
        .push_image(
            &rhyzome_testkernel::kernel_path_block(),
            Some("metblk"),
            &mut |_, _, _| {},
        )
        .unwrap();
    let ip = Ipv4Addr::new(192, 168, 100, 232);
    d.client
        .create_instance(&rhyzome_api::InstanceSpec {
            name: "metblk-a".into(),
            image: Some("metblk".into()),
            kernel_parameters: format!("--ipv4={ip}/24 --blk-read=1"),
            volumes: Some(
                [(
                    "storage".to_string(),
                    rhyzome_api::VolumeMount {
                        volume: "metblk-data".into(),
                        read_only: false,
                    },
                )]
                .into(),
            ),
            ..Default::default()
        })
        .unwrap();
    d.wait_for_console("metblk-a", rhyzome_testkernel::READY_LINE, 1);
    let labels = [("instance", "metblk-a"), ("image", "metblk")];
    let block = |s: &[Sample], metric: &str| -> f64 {
        let found = samples(s, metric, &labels);
        assert_eq!(found.len(), 1, "{metric}: {found:?}\n{}", d.log());
        assert_eq!(
            found[0].labels.get("target_device").map(String::as_str),
            Some("vda"),
            "{found:?}"
        );
        found[0].value
    };
    // Scrapes until `check` holds, for at most 10 s (the snapshot is refreshed every 300 ms).
    let scrape_until = |check: &dyn Fn(&[Sample]) -> bool| -> Vec<Sample> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = scrape(&d);
            if check(&s) || std::time::Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let read = "libvirt_domain_block_stats_read_bytes_total";
    let write = "libvirt_domain_block_stats_write_bytes_total";
    let first = scrape_until(&|s| !samples(s, read, &labels).is_empty());
    assert!(
        block(&first, read) >= 512.0,
        "the boot read of sector 1 is not counted"
    );
    assert!(block(&first, "libvirt_domain_block_stats_read_requests_total") >= 1.0);
    let written = block(&first, write);
    let reply = udp(ip, "blk-write 1 counted");
    assert!(reply.contains("block write sector=1 ok"), "{reply}");
    let second = scrape_until(&|s| block(s, write) > written);
    assert!(
        block(&second, write) >= written + 512.0,
        "write bytes did not rise by a sector: {written} then {}",
        block(&second, write)
    );
    assert!(block(&second, "libvirt_domain_block_stats_write_requests_total") >= 1.0);
    d.client.delete_instance("metblk-a").unwrap();
    d.client.delete_volume("metblk-data").unwrap();
}
