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
