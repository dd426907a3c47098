//! The dashboard in a real browser (headless Chromium, chromedriver) on the lab's libvirt: an
//! instance created through the form boots the test kernel and turns `running` in the table
//! without a reload, its page shows the guest's console banner, a stop from the page shows up
//! live, and the stopped instance's page still shows its last console.
//!
//! With `RHYZOME_SCREENSHOTS=DIR`, the instances, instance and create pages are saved there
//! as PNGs (docs/screenshots/ holds the committed ones).

use crate::harness::Daemon;
use std::time::Duration;

#[path = "../common/browser.rs"]
mod browser;

const WAIT: Duration = Duration::from_secs(30);
const BANNER: &str = "rhyzome-testkernel: banner v1";

fn shot(b: &browser::Browser, name: &str) {
    if let Ok(dir) = std::env::var("RHYZOME_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        b.screenshot(&std::path::Path::new(&dir).join(format!("{name}.png")));
    }
}

#[test]
fn a_guest_created_in_the_browser_runs_shows_its_console_and_stops_live() {
    let d = Daemon::start("ui");
    // A neighbour, so that the table has more than one row.
    d.create_at("ui-neighbour", std::net::Ipv4Addr::new(192, 168, 100, 233));
    let b = browser::Browser::start();
    b.goto(&format!("{}/ui#/create", d.server));
    b.type_into("#f-name", "ui-web");
    b.type_into("#f-kernel", &d.kernel());
    b.type_into("#f-params", "--ipv4=192.168.100.232/24");
    shot(&b, "create");
    b.eval(
        "window.notReloaded = true; return true",
        serde_json::json!([]),
    );
    b.click("#create-submit");
    b.wait_text("tr[data-name='ui-web']", WAIT, |t| t.contains("running"));
    b.wait_text("tr[data-name='ui-neighbour']", WAIT, |t| {
        t.contains("running")
    });
    let not_reloaded = || b.eval("return window.notReloaded === true", serde_json::json!([]));
    assert_eq!(not_reloaded(), serde_json::json!(true), "the page reloaded");
    shot(&b, "instances");

    b.click("tr[data-name='ui-web'] a");
    b.wait_text("#console", WAIT, |t| t.contains(BANNER));
    b.wait_text("#instance-details", WAIT, |t| t.contains("192.168.100.232"));
    // Two stats samples make the charts' first rates.
    b.wait_text("#cpu-now", WAIT, |t| t.ends_with('%'));
    if std::env::var_os("RHYZOME_SCREENSHOTS").is_some() {
        // A picture worth keeping: the charts with half a minute of samples.
        std::thread::sleep(Duration::from_secs(30));
    }
    shot(&b, "instance");

    b.click("#instance-actions button[data-action='stop']");
    b.wait_text("#instance-state", WAIT, |t| t == "stopped");
    assert_eq!(not_reloaded(), serde_json::json!(true), "the page reloaded");
    assert_eq!(
        d.client.get_instance("ui-web").unwrap().state,
        rhyzome_api::InstanceState::Stopped
    );
    assert!(!d.has_domain("ui-web"), "{}", d.log());
    // The dead instance's last console is still there.
    b.goto(&format!("{}/ui#/", d.server));
    b.wait_text("tr[data-name='ui-web']", WAIT, |t| t.contains("stopped"));
    b.goto(&format!("{}/ui#/instances/ui-web", d.server));
    b.wait_text("#console", WAIT, |t| t.contains(BANNER));
}

/// A bed of a seed and ten nodes after it on its own network, each ready once its console
/// shows the test kernel's ready line.
fn ten_node_bed(kernel: &str) -> String {
    let ready = rhyzome_testkernel::READY_LINE;
    format!(
        r#"name = "uibed"

[[networks]]
name = "uibed-net"
subnet = "10.72.0.0/24"

[[groups]]
name = "seed"
count = 1
kernel = "{kernel}"
network = "uibed-net"
kernel_parameters = "--ipv4={{cidr}}"
memory_mib = 16
ready = {{ console = "{ready}" }}

[[groups]]
name = "nodes"
count = 10
after = ["seed"]
kernel = "{kernel}"
network = "uibed-net"
kernel_parameters = "--ipv4={{cidr}} --peers={{peers:nodes:3}},{{group.seed.ip}}"
memory_mib = 16
ready = {{ console = "{ready}" }}
"#
    )
}

#[test]
fn the_test_bed_networks_and_volumes_pages_show_a_real_ten_node_bed_and_a_volume() {
    let d = Daemon::start("uibed");
    let b = browser::Browser::start();
    // The page is open before the bed exists: it fills in from the event stream alone.
    b.goto(&format!("{}/ui#/beds", d.server));
    b.wait_text("#view-beds .live-badge", WAIT, |t| t == "live");
    d.client
        .apply_testbed(&rhyzome_api::testbed::TestbedApply {
            file: ten_node_bed(&d.kernel()),
            dry_run: None,
            kernel_files: None,
        })
        .unwrap();
    let group = ".bed[data-bed='uibed'] .group[data-group='nodes']";
    let slow = Duration::from_secs(180);
    b.wait_text(&format!("{group} .summary"), slow, |t| {
        t == "10 ready of 10"
    });
    let count = |css: &str| {
        b.eval(
            "return document.querySelectorAll(arguments[0]).length",
            serde_json::json!([css]),
        )
    };
    b.wait_text(&format!("{group} .nodes"), WAIT, |_| {
        count(&format!("{group} .node.running.ready")) == serde_json::json!(10)
    });
    assert!(d.client.get_testbed("uibed").unwrap().ready, "{}", d.log());
    assert_eq!(
        b.text(".bed[data-bed='uibed'] .order"),
        "seed\nnodes after seed"
    );
    shot(&b, "testbed");

    // A volume on a guest of its own, for the volumes page.
    d.client
        .create_volume(&rhyzome_api::VolumeSpec {
            name: "ui-data".into(),
            size_bytes: Some(8 << 20),
            ..Default::default()
        })
        .unwrap();
    d.client
        .push_image(
            &rhyzome_testkernel::kernel_path_block(),
            Some("ui-blk"),
            &mut |_, _, _| {},
        )
        .unwrap();
    d.client
        .create_instance(&rhyzome_api::InstanceSpec {
            name: "ui-store".into(),
            image: Some("ui-blk".into()),
            kernel_parameters: "--ipv4=192.168.100.234/24".into(),
            volumes: Some(
                [(
                    "storage".to_string(),
                    rhyzome_api::VolumeMount {
                        volume: "ui-data".into(),
                        read_only: false,
                    },
                )]
                .into(),
            ),
            ..Default::default()
        })
        .unwrap();

    b.goto(&format!("{}/ui#/networks", d.server));
    let row = "#networks tr[data-name='uibed-net']";
    b.wait_text(&format!("{row} .instances"), WAIT, |t| t == "11");
    assert_eq!(b.text(&format!("{row} .addresses")).trim(), "11 / 253");
    assert_eq!(b.text(&format!("{row} .emulated")), "no");
    assert!(b.text(row).contains("10.72.0.0/24"), "{}", b.text(row));
    shot(&b, "networks");

    b.goto(&format!("{}/ui#/volumes", d.server));
    let row = "#volumes tr[data-name='ui-data']";
    b.wait_text(&format!("{row} .attached"), WAIT, |t| {
        t == "ui-store (storage)"
    });
    assert_eq!(b.text(&format!("{row} .size")), "8.0 MiB");
    shot(&b, "volumes");

    d.client.delete_instance("ui-store").unwrap();
    d.client.delete_testbed("uibed").unwrap();
    d.client.delete_volume("ui-data").unwrap();
}
