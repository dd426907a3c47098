//! The dashboard (`/ui`) in a real browser (headless Chromium through chromedriver) over the
//! fake hypervisor, with authentication on: the token is asked for, a wrong one is refused
//! with a clear message, the token never appears in the URL, the table is live, and the
//! server's field errors appear next to their field. The same page on real libvirt, with a
//! real guest's console, is `tests/e2e/dashboard.rs`.

#[path = "common/browser.rs"]
mod browser;

use browser::Browser;
use rhyzome_api::client::{Client, ClientOptions};
use rhyzome_api::InstanceSpec;
use rhyzomesrv::auth::{Quota, Role};
use rhyzomesrv::testing::{two_group_bed, TestServer, TestServerOptions};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn assets_are_served_with_a_strict_content_security_policy_and_no_token() {
    let srv = TestServer::start_with(TestServerOptions {
        auth: true,
        ..Default::default()
    });
    srv.tokens()
        .create("root", Role::Admin, None, &Quota::default())
        .unwrap();
    let http = reqwest::blocking::Client::new();
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let resp = http.get(format!("{}{path}", srv.url)).send().unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    // The API itself still needs the token.
    assert_eq!(
        http.get(format!("{}/v1/instances", srv.url))
            .send()
            .unwrap()
            .status(),
        401
    );
}

/// A server with authentication on, an operator's token and a client holding it.
fn with_operator() -> (TestServer, String, Client) {
    let srv = TestServer::start_with(TestServerOptions {
        auth: true,
        ..Default::default()
    });
    let token = srv
        .tokens()
        .create("ops", Role::Operator, None, &Quota::default())
        .unwrap();
    let api = Client::with_options(
        &srv.url,
        ClientOptions {
            token: Some(token.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    (srv, token, api)
}

#[test]
fn a_browser_signs_in_sees_live_state_and_field_errors() {
    let (srv, token, api) = with_operator();
    api.create_instance(&InstanceSpec {
        name: "web-1".into(),
        kernel: srv.kernel.clone(),
        kernel_parameters: "--ipv4=10.0.0.5/24".into(),
        ..Default::default()
    })
    .unwrap();

    let b = Browser::start();
    b.goto(&format!("{}/ui", srv.url));
    b.wait_text("#login-error", WAIT, |t| t.contains("needs a token"));
    b.type_into("#token", "rhz_wrong");
    b.click("#login-form button");
    b.wait_text("#login-error", WAIT, |t| {
        t.contains("refused this token") && t.contains("not valid")
    });
    assert_eq!(
        b.eval(
            "return [document.getElementById('view-instances').hidden, \
             document.querySelectorAll('#instances tbody tr').length]",
            serde_json::json!([])
        ),
        serde_json::json!([true, 0]),
        "instances shown without a valid token"
    );
    b.type_into("#token", &token);
    b.click("#login-form button");
    let row = b.wait_text("tr[data-name='web-1']", WAIT, |t| t.contains("running"));
    assert!(row.contains("10.0.0.5"), "{row}");
    assert!(!b.url().contains(&token), "the token is in the URL");
    assert_eq!(
        b.eval(
            "return sessionStorage.getItem('rhyzome-token')",
            serde_json::json!([])
        ),
        serde_json::json!(token)
    );
    b.wait_text("#live", WAIT, |t| t == "live");

    // A change made elsewhere arrives through the event stream, without a reload.
    b.eval(
        "window.notReloaded = true; return true",
        serde_json::json!([]),
    );
    api.stop_instance("web-1").unwrap();
    b.wait_text("tr[data-name='web-1']", WAIT, |t| t.contains("stopped"));
    // Stop and start from the page.
    b.click("tr[data-name='web-1'] button[data-action='start']");
    b.wait_text("tr[data-name='web-1']", WAIT, |t| t.contains("running"));
    assert_eq!(
        api.get_instance("web-1").unwrap().state,
        rhyzome_api::InstanceState::Running
    );
    assert_eq!(
        b.eval("return window.notReloaded === true", serde_json::json!([])),
        serde_json::json!(true),
        "the page reloaded"
    );

    // The create form: the server's error lands next to the field it names.
    b.goto(&format!("{}/ui#/create", srv.url));
    b.type_into("#f-name", "Bad Name!");
    b.type_into("#f-kernel", &srv.kernel);
    b.click("#create-submit");
    let error = b.wait_text("[data-error='name']", WAIT, |t| !t.is_empty());
    assert!(error.contains("only lowercase letters"), "{error}");
    assert!(b.text("#create-error").is_empty());
    // A good one appears in the table.
    b.type_into("#f-name", "web-2");
    b.click("#create-submit");
    b.wait_text("tr[data-name='web-2']", WAIT, |t| t.contains("running"));
    assert!(api.get_instance("web-2").is_ok());

    // Delete asks first.
    b.click("tr[data-name='web-2'] button[data-action='delete']");
    b.accept_alert();
    let deadline = std::time::Instant::now() + WAIT;
    while api.get_instance("web-2").is_ok() {
        assert!(std::time::Instant::now() < deadline, "not deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    b.wait_text("#instances tbody", WAIT, |t| !t.contains("web-2"));
}

fn wait_ready(api: &Client, bed: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !api.get_testbed(bed).unwrap().ready {
        assert!(
            std::time::Instant::now() < deadline,
            "bed {bed} never ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_test_bed_page_shows_a_ten_node_bed_live_and_collects_with_the_token() {
    let (srv, token, api) = with_operator();
    api.apply_testbed(&rhyzome_api::testbed::TestbedApply {
        file: two_group_bed("tb", &srv.kernel, "10.64.0.0/24", 10),
        dry_run: None,
        kernel_files: None,
    })
    .unwrap();
    wait_ready(&api, "tb");

    let b = Browser::start();
    b.goto(&format!("{}/ui#/beds", srv.url));
    b.wait_for("#token", WAIT);
    b.type_into("#token", &token);
    b.click("#login-form button");
    let group = ".bed[data-bed='tb'] .group[data-group='nodes']";
    b.wait_text(&format!("{group} .summary"), WAIT, |t| {
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
    assert_eq!(
        b.text(&format!("{group} [data-meter='running'] .meter-count")),
        "10 / 10"
    );
    // The start order, with each group's `after`.
    assert_eq!(
        b.text(".bed[data-bed='tb'] .order"),
        "seed\nnodes after seed"
    );
    // Live, without polling: a node stopped elsewhere leaves the ready count and turns grey.
    api.stop_instance("tb-nodes-3").unwrap();
    b.wait_text(&format!("{group} .summary"), WAIT, |t| t == "9 ready of 10");
    b.wait_text(&format!("{group} .nodes"), WAIT, |_| {
        count(&format!("{group} .node.stopped")) == serde_json::json!(1)
    });
    assert_eq!(
        count(&format!("{group} .node.running.ready")),
        serde_json::json!(9)
    );
    // Collect: a fetch of the bed's archive with the bearer header (never a bare link, which
    // would carry no token), its answer saved as a file.
    b.eval(
        "window.__fetches = []; const f = window.fetch; window.fetch = (u, init) => { \
         window.__fetches.push([String(u), (init && init.headers && init.headers.Authorization) || null]); \
         return f(u, init).then((r) => { window.__status = r.status; return r; }); }; return null",
        serde_json::json!([]),
    );
    b.click(".bed[data-bed='tb'] [data-action='collect']");
    let deadline = std::time::Instant::now() + WAIT;
    let fetched = loop {
        let f = b.eval("return window.__fetches", serde_json::json!([]));
        if f.as_array().is_some_and(|a| !a.is_empty()) || std::time::Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        fetched,
        serde_json::json!([["/v1/testbeds/tb/collect", format!("Bearer {token}")]])
    );
    // The archive came (200) and no error is shown under the bed.
    let deadline = std::time::Instant::now() + WAIT;
    while b.eval("return window.__status || 0", serde_json::json!([])) == serde_json::json!(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the collect answer never came"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        b.eval("return window.__status", serde_json::json!([])),
        serde_json::json!(200)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.text(".bed[data-bed='tb'] .error"), "");
}

#[test]
fn an_image_uploaded_from_the_page_is_listed_and_a_bad_name_is_shown_next_to_its_field() {
    let srv = TestServer::start();
    let image = rhyzomesrv::images::inspect::testdata::virtio_image(&["service"], 1);
    let file = srv.dir.path().join("app.virtio");
    std::fs::write(&file, &image).unwrap();

    let b = Browser::start();
    b.goto(&format!("{}/ui#/images", srv.url));
    b.choose_file("#u-file", &file);
    b.type_into("#u-name", "Bad Name");
    b.click("#upload-submit");
    let error = b.wait_text("[data-error='upload-name']", WAIT, |t| !t.is_empty());
    assert!(error.contains("\"Bad Name\": the name must"), "{error}");
    assert!(b.text("#upload-error").is_empty());

    b.type_into("#u-name", "app:v1");
    b.click("#upload-submit");
    b.wait_text("#upload-status", WAIT, |t| t.starts_with("stored sha256:"));
    b.wait_text("#images tbody", WAIT, |t| t.contains("app:v1"));
    assert_eq!(
        b.eval(
            "return document.getElementById('upload-progress').value",
            serde_json::json!([])
        )
        .as_f64(),
        Some(1.0),
        "the progress bar is not full"
    );
    let listed = Client::new(&srv.url).unwrap().list_images().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, image.len() as u64);
}

#[test]
fn a_viewer_is_offered_nothing_that_changes_and_a_metrics_token_is_turned_away() {
    let srv = TestServer::start_with(TestServerOptions {
        auth: true,
        ..Default::default()
    });
    let tokens = srv.tokens();
    let admin = tokens
        .create("root", Role::Admin, None, &Quota::default())
        .unwrap();
    let viewer = tokens
        .create("watcher", Role::Viewer, None, &Quota::default())
        .unwrap();
    let prometheus = tokens
        .create("prometheus", Role::Metrics, None, &Quota::default())
        .unwrap();
    Client::with_options(
        &srv.url,
        ClientOptions {
            token: Some(admin),
            ..Default::default()
        },
    )
    .unwrap()
    .create_instance(&InstanceSpec {
        name: "web-1".into(),
        kernel: srv.kernel.clone(),
        ..Default::default()
    })
    .unwrap();

    let b = Browser::start();
    b.goto(&format!("{}/ui", srv.url));
    b.type_into("#token", &prometheus);
    b.click("#login-form button");
    b.wait_text("#login-error", WAIT, |t| {
        t.contains("may not use the dashboard") && t.contains("metrics role")
    });

    b.type_into("#token", &viewer);
    b.click("#login-form button");
    b.wait_text("tr[data-name='web-1']", WAIT, |t| t.contains("running"));
    b.wait_text("#server", WAIT, |t| t.contains("watcher (viewer)"));
    let offered = b.eval(
        "return [document.querySelectorAll('#instances button').length, \
         document.getElementById('nav-create').hidden, \
         document.getElementById('upload-form').hidden]",
        serde_json::json!([]),
    );
    assert_eq!(offered, serde_json::json!([0, true, true]));
}

#[test]
fn every_page_fits_a_phone_screen_without_sideways_scrolling() {
    let srv = TestServer::start();
    let api = Client::new(&srv.url).unwrap();
    for i in 1..=3 {
        api.create_instance(&InstanceSpec {
            name: format!("phone-node-{i}"),
            kernel: srv.kernel.clone(),
            kernel_parameters: format!("--ipv4=10.0.0.{i}/24"),
            ..Default::default()
        })
        .unwrap();
    }
    api.apply_testbed(&rhyzome_api::testbed::TestbedApply {
        file: two_group_bed("pb", &srv.kernel, "10.64.1.0/24", 3),
        dry_run: None,
        kernel_files: None,
    })
    .unwrap();
    wait_ready(&api, "pb");
    let b = Browser::start();
    b.resize(390, 844);
    for (page, ready) in [
        ("#/", "tr[data-name='phone-node-1']"),
        ("#/instances/phone-node-1", "#instance-details"),
        ("#/create", "#f-name"),
        ("#/images", "#upload-form"),
        ("#/beds", ".bed .node"),
        ("#/networks", "#networks tr[data-name='pb-net']"),
        ("#/volumes", "#volumes-empty"),
    ] {
        b.goto(&format!("{}/ui{page}", srv.url));
        b.wait_for(ready, WAIT);
        let widths = b.eval(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            serde_json::json!([]),
        );
        let (page_width, screen) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(
            page_width <= screen,
            "{page} is {page_width} px wide on a {screen} px screen"
        );
        if page == "#/" {
            if let Ok(dir) = std::env::var("RHYZOME_SCREENSHOTS") {
                b.screenshot(&std::path::Path::new(&dir).join("phone.png"));
            }
        }
    }
}
