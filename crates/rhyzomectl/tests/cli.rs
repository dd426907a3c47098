//! The CLI binary against a real HTTP server backed by the fake hypervisor: argument parsing
//! (the seed command exactly as written), output formats, exit codes and error messages.

use rhyzomesrv::testing::{TestServer, TestServerOptions};
use std::process::{Command, Output};

fn serve_inner(auth: bool) -> TestServer {
    let s = TestServer::start_with(TestServerOptions {
        auth,
        ..Default::default()
    });
    // The brief's command names a kernel called msgrouter.virtio.
    std::fs::copy(&s.kernel, s.dir.path().join("kernels/msgrouter.virtio")).unwrap();
    s
}

fn serve() -> TestServer {
    serve_inner(false)
}

fn serve_with_auth() -> TestServer {
    serve_inner(true)
}

/// Runs the CLI with no configuration file and none of its environment variables.
fn ctl(args: &[&str]) -> Output {
    ctl_with_config(
        args,
        std::path::Path::new("/nonexistent/rhyzome/config.json"),
    )
}

/// Runs the CLI with `config` as its configuration file, and none of its environment variables.
fn ctl_with_config(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rhyzomectl"))
        .args(args)
        .env("RHYZOME_CONFIG", config)
        .env_remove("RHYZOME_SERVER")
        .env_remove("RHYZOME_TOKEN")
        .env_remove("RHYZOME_CONTEXT")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The message of a command that failed as the CLI reports errors: exit status 1.
fn failure(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_seed_command_parses_and_creates() {
    let s = serve();
    let kernel = s.dir.path().join("kernels/msgrouter.virtio");
    let out = ctl(&[
        "--server",
        &s.url,
        "instance",
        "create",
        "--name",
        "msgrouter",
        "--kernel",
        kernel.to_str().unwrap(),
        "--kernel-parameters",
        "--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.43/24",
    ]);
    let text = stdout(&out);
    assert!(
        text.starts_with("created msgrouter (running, 192.168.100.43/24 / 02:"),
        "{text}"
    );

    let list = stdout(&ctl(&["--server", &s.url, "instance", "list"]));
    let mut lines = list.lines();
    assert!(lines.next().unwrap().starts_with("NAME"));
    let row = lines.next().unwrap();
    for col in ["msgrouter", "running", "32 MiB", "192.168.100.43/24", "0s"] {
        assert!(row.contains(col), "{col} missing in {row:?}");
    }
    let json: serde_json::Value = serde_json::from_str(&stdout(&ctl(&[
        "--server",
        &s.url,
        "-o",
        "json",
        "instance",
        "show",
        "msgrouter",
    ])))
    .unwrap();
    // The human view lists the NIC the JSON's `attachments` holds, with its MAC.
    let mac = json["attachments"][0]["mac"]
        .as_str()
        .expect("one attachment");
    let show = stdout(&ctl(&["--server", &s.url, "instance", "show", "msgrouter"]));
    let attachment = show
        .lines()
        .find(|l| l.starts_with("attachment:"))
        .unwrap_or_else(|| panic!("no attachment line in {show}"));
    assert!(
        attachment.contains(mac) && attachment.contains("bridge "),
        "{attachment}"
    );
    assert_eq!(
        json["kernel_parameters"],
        "--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.43/24"
    );
}

#[test]
fn the_local_socket_needs_no_token() {
    let s = TestServer::start_with(TestServerOptions {
        auth: true,
        local_socket: true,
        ..Default::default()
    });
    s.tokens()
        .create(
            "root",
            rhyzomesrv::auth::Role::Admin,
            None,
            &Default::default(),
        )
        .unwrap();
    let server = format!("unix://{}", s.socket.as_ref().unwrap().display());
    let out = ctl(&[
        "--server", &server, "instance", "create", "--name", "local", "--kernel", &s.kernel,
    ]);
    stdout(&out);
    let out = ctl(&["--server", &server, "-o", "json", "instance", "list"]);
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list[0]["name"], "local");

    let out = ctl(&[
        "--server",
        "unix:///nonexistent/rhyzome.sock",
        "instance",
        "list",
    ]);
    let err = failure(&out);
    assert!(
        err.contains("cannot reach unix:///nonexistent/rhyzome.sock"),
        "{err}"
    );
}

#[test]
fn errors_are_messages_and_a_nonzero_exit() {
    let s = serve();
    let out = ctl(&["--server", &s.url, "instance", "show", "nope"]);
    let err = failure(&out);
    assert!(err.contains("instance \"nope\" not found"), "{err}");

    let out = ctl(&[
        "--server",
        &s.url,
        "instance",
        "create",
        "--name",
        "a",
        "--kernel",
        "/etc/passwd",
    ]);
    let err = failure(&out);
    assert!(
        err.contains("kernel: /etc/passwd") && err.contains("outside"),
        "{err}"
    );

    // Refused locally, before any request.
    let out = ctl(&[
        "--server",
        "http://127.0.0.1:1",
        "instance",
        "create",
        "--name",
        "A!",
        "--kernel",
        "/k",
    ]);
    assert!(failure(&out).contains("name: contains 'A'"));
    // The restart policy's rules too (rhyzome_api::validate, shared with the daemon).
    for (policy, codes, message) in [
        (
            "always",
            "1",
            "restart.exit_codes: only applies to the on_failure policy",
        ),
        (
            "on-failure:10001",
            "1",
            "restart.max_retries: is 10001; at most 10000 are allowed",
        ),
    ] {
        let out = ctl(&[
            "--server",
            "http://127.0.0.1:1",
            "instance",
            "create",
            "--name",
            "a",
            "--kernel",
            "/k",
            "--restart",
            policy,
            "--restart-exit-codes",
            codes,
        ]);
        let err = failure(&out);
        assert!(err.contains(message), "{policy}: {err}");
    }

    let out = ctl(&["--server", "http://127.0.0.1:1", "instance", "list"]);
    assert!(failure(&out).contains("cannot reach http://127.0.0.1:1"));

    let out = ctl(&["--server", "127.0.0.1:8080", "instance", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid server URL"));

    // Several names: each is tried, the failure is reported, the exit is non-zero.
    let out = ctl(&["--server", &s.url, "instance", "delete", "x", "y"]);
    let err = failure(&out);
    assert!(
        err.contains("x: instance \"x\" not found") && err.contains("2 of 2"),
        "{err}"
    );
}

#[test]
fn every_verb_has_help_and_completions_generate() {
    for verb in [
        "create", "list", "show", "console", "start", "stop", "restart", "delete",
    ] {
        let out = stdout(&ctl(&["instance", verb, "--help"]));
        assert!(out.contains("Usage: rhyzomectl instance"), "{verb}: {out}");
    }
    for verb in [
        "create", "list", "show", "upload", "download", "resize", "rm",
    ] {
        let out = stdout(&ctl(&["volume", verb, "--help"]));
        assert!(out.contains("Usage: rhyzomectl volume"), "{verb}: {out}");
    }
    let bash = stdout(&ctl(&["completions", "bash"]));
    assert!(bash.contains("rhyzomectl"));
    assert!(bash.contains("--kernel-parameters"));
    for (shell, marker) in [
        ("zsh", "#compdef rhyzomectl"),
        ("fish", "complete -c rhyzomectl"),
    ] {
        let script = stdout(&ctl(&["completions", shell]));
        assert!(script.contains(marker), "{shell}: {script}");
    }
}

#[test]
fn global_options_have_a_heading_of_their_own() {
    let help = stdout(&ctl(&["instance", "create", "--help"]));
    let (own, global) = help
        .split_once("\nGlobal options:\n")
        .unwrap_or_else(|| panic!("no \"Global options:\" heading: {help}"));
    for flag in [
        "--server",
        "--context",
        "--token",
        "--ca",
        "--fingerprint",
        "--output",
    ] {
        assert!(global.contains(flag), "{flag} under Global options: {help}");
        assert!(!own.contains(flag), "{flag} among create's options: {help}");
    }
    assert!(own.contains("--kernel-parameters"), "{help}");
    assert!(!global.contains("--kernel-parameters"), "{help}");
}

#[test]
fn manual_pages_are_generated_from_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = ctl(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    stdout(&out);
    let page = |name: &str| {
        std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let main = page("rhyzomectl.1");
    assert!(main.starts_with(".ie"), "a roff page: {main}");
    assert!(main.contains("rhyzomectl\\-instance(1)"), "{main}");
    let create = page("rhyzomectl-instance-create.1");
    assert!(create.contains("kernel\\-parameters"), "{create}");
    let pages = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(pages > 10, "one page per command, got {pages}");
}

#[test]
fn named_servers_carry_their_token_and_flags_override_them() {
    use rhyzomesrv::auth::{Quota, Role};
    let s = serve_with_auth();
    let token = s
        .tokens()
        .create("ctl", Role::Admin, None, &Quota::default())
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("rhyzome/config.json");
    let with_config = |args: &[&str]| ctl_with_config(args, &config);
    // Without the token: refused, with a message a person understands.
    let out = with_config(&["--server", &s.url, "instance", "list"]);
    assert!(failure(&out).contains("needs a bearer token"));

    stdout(&with_config(&[
        "--server", &s.url, "--token", &token, "config", "set", "lab", "--use",
    ]));
    let mode = std::fs::metadata(&config).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let list = stdout(&with_config(&["config", "list"]));
    assert!(list.contains("lab") && !list.contains(&token), "{list}");
    // The default server and its token are used.
    stdout(&with_config(&["instance", "list"]));
    // A flag overrides the stored token.
    let out = with_config(&["--token", "rhz_wrong", "instance", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
    // An unknown context is an error that names it.
    let out = with_config(&["--context", "nope", "instance", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server named \"nope\""));
}

#[test]
fn a_test_bed_in_one_command_and_gone_in_another() {
    let s = serve();
    let created = ctl(&[
        "--server",
        &s.url,
        "instance",
        "create",
        "--name",
        "node",
        "--count",
        "12",
        "--parallel",
        "4",
        "--kernel",
        &s.kernel,
        "--kernel-parameters",
        "--ipv4 192.168.100.{i+9}/24 --peer 192.168.100.10 --label {{x}}",
    ]);
    let out = stdout(&created);
    assert!(out.contains("created 12 of 12 instances in "), "{out}");
    let list = |server: &str| -> Vec<serde_json::Value> {
        serde_json::from_str(&stdout(&ctl(&[
            "--server", server, "-o", "json", "instance", "list",
        ])))
        .unwrap()
    };
    let all = list(&s.url);
    assert_eq!(all.len(), 12);
    for i in 1..=12 {
        let node = all
            .iter()
            .find(|n| n["name"] == format!("node-{i}"))
            .unwrap_or_else(|| panic!("node-{i} missing: {all:?}"));
        // Literal braces reach the server still doubled (its placeholders' syntax), and
        // become single braces in what the unikernel gets.
        assert_eq!(
            node["kernel_parameters"],
            format!(
                "--ipv4 192.168.100.{}/24 --peer 192.168.100.10 --label {{{{x}}}}",
                i + 9
            )
        );
        assert_eq!(
            node["kernel_parameters_expanded"],
            format!(
                "--ipv4 192.168.100.{}/24 --peer 192.168.100.10 --label {{x}}",
                i + 9
            )
        );
    }

    // A name template, and one more instance outside the test bed.
    stdout(&ctl(&[
        "--server", &s.url, "instance", "create", "--name", "p{i}-x", "--count", "2", "--kernel",
        &s.kernel,
    ]));
    stdout(&ctl(&[
        "--server", &s.url, "instance", "create", "--name", "other", "--kernel", &s.kernel,
    ]));

    // Mistakes in a template are reported before anything is created.
    let before = list(&s.url).len();
    for (name, parameters, message) in [
        (
            "bad",
            "--ipv4 {j}",
            "--kernel-parameters: unknown placeholder {j}",
        ),
        (
            "bad",
            "--ipv4 {i-2}",
            "--kernel-parameters: {i-2} is negative for instance 1",
        ),
        (
            "bad",
            "--ipv4 {i",
            "--kernel-parameters: a '{' without its '}'",
        ),
        ("Bad{i}", "", "name: contains 'B'"),
    ] {
        let out = ctl(&[
            "--server",
            &s.url,
            "instance",
            "create",
            "--kernel",
            &s.kernel,
            "--count",
            "3",
            "--name",
            name,
            "--kernel-parameters",
            parameters,
        ]);
        let err = failure(&out);
        assert!(err.contains(message), "{name} {parameters}: {err}");
    }
    assert_eq!(
        list(&s.url).len(),
        before,
        "a refused template created something"
    );
    let out = ctl(&[
        "--server",
        &s.url,
        "instance",
        "create",
        "--name",
        "m",
        "--count",
        "2",
        "--mac",
        "02:00:00:00:00:01",
        "--kernel",
        &s.kernel,
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--count with --mac is a usage error"
    );

    // The whole test bed goes in one command; the rest stays.
    let out = stdout(&ctl(&[
        "--server", &s.url, "instance", "delete", "--prefix", "node-",
    ]));
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("deleted node-"))
            .count(),
        12
    );
    let left: Vec<String> = list(&s.url)
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!left.iter().any(|n| n.starts_with("node-")), "{left:?}");
    assert!(left.contains(&"other".to_string()), "{left:?}");
    let out = stdout(&ctl(&[
        "--server", &s.url, "instance", "delete", "--prefix", "node-",
    ]));
    assert!(
        out.contains("no instance name starts with \"node-\""),
        "{out}"
    );
    let out = ctl(&["--server", &s.url, "instance", "delete", "--prefix", ""]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_test_bed_larger_than_the_create_burst_waits_for_the_rate_limit() {
    let s = TestServer::start_with(TestServerOptions {
        config: serde_json::json!({ "CreateRateLimit": 20, "CreateBurst": 3 }),
        auth: true,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let out = ctl(&[
        "--server", &s.url, "instance", "create", "--name", "rl", "--count", "10", "--kernel",
        &s.kernel,
    ]);
    let out = stdout(&out);
    assert!(out.contains("created 10 of 10 instances"), "{out}");
    // Ten creates with a burst of 3 at 20 per second take at least 7 / 20 s.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(350),
        "faster than the rate limit allows: {:?}",
        started.elapsed()
    );
    // The daemon's audit log: the CLI was refused (429) and created every instance after.
    let audit = std::fs::read_to_string(s.state_dir.join("audit.log")).unwrap();
    let creates: Vec<u64> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["method"] == "POST" && e["path"] == "/v1/instances")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        creates.iter().filter(|&&status| status == 201).count(),
        10,
        "{audit}"
    );
    // Concurrent creates are logged as they finish, so refusals and successes interleave;
    // every refused create is retried, so the last entry is a success.
    assert!(creates.contains(&429), "no create was refused: {creates:?}");
    assert_eq!(
        creates.last(),
        Some(&201),
        "a refusal was not waited out: {creates:?}"
    );

    let out = stdout(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "delete",
        "--prefix",
        "rl-",
        "--dry-run",
    ]));
    assert!(out.contains("would delete rl-10"), "{out}");
    assert!(out.contains("10 instances start with \"rl-\""), "{out}");
    let list: serde_json::Value = serde_json::from_str(&stdout(&ctl(&[
        "--server", &s.url, "-o", "json", "instance", "list",
    ])))
    .unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        10,
        "a dry run deleted something"
    );
}

/// Starts a long-running CLI command; its stdout lines arrive on the receiver.
fn ctl_streaming(args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rhyzomectl"))
        .args(args)
        .env("RHYZOME_CONFIG", "/nonexistent/rhyzome/config.json")
        .env_remove("RHYZOME_SERVER")
        .env_remove("RHYZOME_TOKEN")
        .env_remove("RHYZOME_CONTEXT")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn serve_with_stream_lifetime_of_a_second() -> TestServer {
    TestServer::start_with(TestServerOptions {
        config: serde_json::json!({ "MaxStreamSeconds": 1 }),
        ..Default::default()
    })
}

#[test]
fn events_go_on_without_loss_when_the_server_ends_the_stream_at_its_lifetime() {
    let s = serve_with_stream_lifetime_of_a_second();
    let (mut child, lines) = ctl_streaming(&["--server", &s.url, "-o", "json", "events"]);
    let client = rhyzome_api::client::Client::new(&s.url).unwrap();
    let spec = |name: &str| rhyzome_api::InstanceSpec {
        name: name.into(),
        kernel: s.kernel.clone(),
        ..Default::default()
    };
    // Give the CLI time to connect, then change things across several stream lifetimes.
    std::thread::sleep(std::time::Duration::from_millis(500));
    client.create_instance(&spec("a")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    client.create_instance(&spec("b")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    client.delete_instance("a").unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&("a".to_string(), "deleted".to_string())) {
        let Ok(line) = lines.recv_timeout(std::time::Duration::from_secs(10)) else {
            panic!("no more events; saw {seen:?}");
        };
        let ev: rhyzome_api::Event = serde_json::from_str(&line).unwrap();
        seen.push((ev.instance, ev.state));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let expected: Vec<(String, String)> = [
        ("a", "starting"),
        ("a", "running"),
        ("b", "starting"),
        ("b", "running"),
        ("a", "deleted"),
    ]
    .iter()
    .map(|(i, s)| (i.to_string(), s.to_string()))
    .collect();
    assert_eq!(seen, expected);
}

#[test]
fn a_followed_console_goes_on_when_the_server_ends_the_stream_at_its_lifetime() {
    let s = serve_with_stream_lifetime_of_a_second();
    let client = rhyzome_api::client::Client::new(&s.url).unwrap();
    let created = client
        .create_instance(&rhyzome_api::InstanceSpec {
            name: "a".into(),
            kernel: s.kernel.clone(),
            ..Default::default()
        })
        .unwrap();
    let log = s.state_dir.join(format!("consoles/{}.log", created.id));
    std::fs::write(&log, "line 0\n").unwrap();
    let (mut child, lines) =
        ctl_streaming(&["--server", &s.url, "instance", "console", "a", "--follow"]);
    let next = || {
        lines
            .recv_timeout(std::time::Duration::from_secs(10))
            .unwrap()
    };
    assert_eq!(next(), "line 0");
    // A line every 20 ms across three stream lifetimes: every one arrives, once, in order,
    // including those written while the CLI reconnects.
    let last = 150;
    for i in 1..=last {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut f, format!("line {i}\n").as_bytes()).unwrap();
    }
    for i in 1..=last {
        assert_eq!(next(), format!("line {i}"));
    }
    // Deleting the instance ends the follow for good.
    client.delete_instance("a").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still following a deleted instance"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn device_selection_is_shown_and_bridge_is_refused_for_a_kernel_without_network_devices() {
    use rhyzomesrv::images::inspect::testdata::{abi_note, elf64, manifest_note};
    let s = serve();
    let mut notes = abi_note(3);
    notes.extend(manifest_note(&[]));
    let hello = s.dir.path().join("kernels/hello.virtio");
    std::fs::write(&hello, elf64(&notes, true)).unwrap();
    let hello = hello.to_str().unwrap();
    let out = ctl(&[
        "--server", &s.url, "instance", "create", "--name", "hello", "--kernel", hello, "--bridge",
        "br0",
    ]);
    let err = failure(&out);
    assert!(
        err.contains("network.bridge") && err.contains("declares no network device"),
        "{err}"
    );
    stdout(&ctl(&[
        "--server", &s.url, "instance", "create", "--name", "hello", "--kernel", hello,
    ]));
    let show = stdout(&ctl(&["--server", &s.url, "instance", "show", "hello"]));
    assert!(
        show.contains("devices:") && show.contains("manifest declares none"),
        "{show}"
    );
    let kernel = s.dir.path().join("kernels/msgrouter.virtio");
    stdout(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "create",
        "--name",
        "plain",
        "--kernel",
        kernel.to_str().unwrap(),
    ]));
    let show = stdout(&ctl(&["--server", &s.url, "instance", "show", "plain"]));
    assert!(show.contains("the kernel has no Solo5 manifest"), "{show}");
}

#[test]
fn console_since_prints_only_the_output_after_the_time() {
    let s = serve();
    stdout(&ctl(&[
        "--server", &s.url, "instance", "create", "--name", "con", "--kernel", &s.kernel,
    ]));
    let between = s.console_output_around_a_time("con");
    let out = ctl(&[
        "--server", &s.url, "instance", "console", "con", "--since", &between,
    ]);
    assert_eq!(stdout(&out), "new\n");
    let out = ctl(&[
        "--server", &s.url, "instance", "console", "con", "--since", "1h",
    ]);
    assert_eq!(stdout(&out), "old\nnew\n");
    let err = failure(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "console",
        "con",
        "--since",
        "last tuesday",
    ]));
    assert!(err.contains("since"), "{err}");
}

#[test]
fn tls_trust_by_ca_or_fingerprint_from_flags_and_from_config_set() {
    let certs = tempfile::tempdir().unwrap();
    let fingerprint =
        rhyzomesrv::tls::create_self_signed(certs.path(), &["127.0.0.1".into()]).unwrap();
    let cert = certs.path().join("cert.pem");
    let s = TestServer::start_with(TestServerOptions {
        tls: Some(rhyzomesrv::tls::server_config(&cert, &certs.path().join("key.pem")).unwrap()),
        ..Default::default()
    });
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let cert = cert.to_str().unwrap();
    let list = |extra: &[&str]| {
        let mut args = vec!["--server", &s.url];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["instance", "list"]);
        ctl(&args)
    };
    // Not trusted without either; trusted with each; a wrong pin is named as such.
    let err = failure(&list(&[]));
    assert!(err.contains("UnknownIssuer"), "{err}");
    stdout(&list(&["--ca", cert]));
    stdout(&list(&["--fingerprint", &fingerprint]));
    let wrong = format!("sha256:{}", "00".repeat(32));
    let err = failure(&list(&["--fingerprint", &wrong]));
    assert!(
        err.contains("does not match the pinned fingerprint"),
        "{err}"
    );

    // `config set` stores each, and later commands use what it stored.
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("rhyzome/config.json");
    let with_config = |args: &[&str]| ctl_with_config(args, &config);
    stdout(&with_config(&[
        "--server",
        &s.url,
        "--fingerprint",
        &fingerprint,
        "config",
        "set",
        "pinned",
        "--use",
    ]));
    let ca_copy = home.path().join("ca.pem");
    std::fs::copy(cert, &ca_copy).unwrap();
    stdout(&with_config(&[
        "--server",
        &s.url,
        "--ca",
        ca_copy.to_str().unwrap(),
        "config",
        "set",
        "with-ca",
    ]));
    let stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(
        stored["servers"]["pinned"]["fingerprint"], fingerprint,
        "{stored}"
    );
    assert_eq!(
        stored["servers"]["with-ca"]["ca"],
        ca_copy.canonicalize().unwrap().to_str().unwrap(),
        "{stored}"
    );
    stdout(&with_config(&["instance", "list"]));
    stdout(&with_config(&["--context", "with-ca", "instance", "list"]));
    // The stored CA is read from its file: without it, the server is not trusted.
    std::fs::remove_file(&ca_copy).unwrap();
    let out = with_config(&["--context", "with-ca", "instance", "list"]);
    assert!(!out.status.success());
}

#[test]
fn labels_are_given_with_label_and_select_with_selector() {
    let s = serve();
    let kernel = s.kernel.clone();
    for (name, group) in [("eu1", "eu"), ("us1", "us")] {
        let label = format!("group={group}");
        stdout(&ctl(&[
            "--server",
            &s.url,
            "instance",
            "create",
            "--name",
            name,
            "--kernel",
            &kernel,
            "--label",
            &label,
            "--label",
            "testbed=t1",
        ]));
    }
    let list = stdout(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "list",
        "--selector",
        "group=eu",
    ]));
    assert!(list.contains("eu1") && !list.contains("us1"), "{list}");
    assert!(list.contains("group=eu,testbed=t1"), "{list}");
    let show = stdout(&ctl(&["--server", &s.url, "instance", "show", "us1"]));
    assert!(show.contains("group=us,testbed=t1"), "{show}");
    // A bad label is a usage error, refused by clap before anything is sent.
    let refused = ctl(&[
        "--server", &s.url, "instance", "create", "--name", "x", "--kernel", &kernel, "--label",
        "Bad=1",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("--label"), "{message}");
    assert!(
        stdout(&ctl(&["--server", &s.url, "instance", "list"]))
            .lines()
            .count()
            == 3
    );
    let refused = failure(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "list",
        "--selector",
        "group",
    ]));
    assert!(refused.contains("selector"), "{refused}");
}

#[test]
fn link_conditions_are_given_at_create_and_changed_with_instance_link() {
    let s = serve();
    let kernel = s.kernel.clone();
    stdout(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "create",
        "--name",
        "shaped",
        "--kernel",
        &kernel,
        "--link",
        "rate=10mbit",
    ]));
    let show = stdout(&ctl(&["--server", &s.url, "instance", "show", "shaped"]));
    assert!(show.contains("rate=10000000bit"), "{show}");
    // A plain network: latency is refused with the server's reason.
    let refused = failure(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "link",
        "shaped",
        "latency=80ms",
    ]));
    assert!(refused.contains("emulated network"), "{refused}");
    // Terms given change those conditions and keep the rest.
    let changed = stdout(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "link",
        "shaped",
        "rate=1mbit",
    ]));
    assert_eq!(changed.trim(), "shaped: rate=1000000bit");
    let cleared = stdout(&ctl(&[
        "--server", &s.url, "instance", "link", "shaped", "--clear",
    ]));
    assert_eq!(cleared.trim(), "shaped: -");
    // Bad terms are refused before anything is sent.
    let bad = failure(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "link",
        "shaped",
        "loss=120%",
    ]));
    assert!(bad.contains("loss_percent"), "{bad}");
}

#[test]
fn networks_are_created_listed_shown_used_and_removed() {
    let s = serve();
    let url = s.url.as_str();
    let out = stdout(&ctl(&[
        "--server",
        url,
        "network",
        "create",
        "lab",
        "--subnet",
        "10.20.0.0/24",
        "--dhcp",
    ]));
    assert!(
        out.contains("created network lab (10.20.0.0/24, gateway 10.20.0.1, isolated"),
        "{out}"
    );
    // Refused before anything is sent, and by the server, naming the field.
    let err = failure(&ctl(&[
        "--server",
        url,
        "network",
        "create",
        "x",
        "--subnet",
        "10.30.0.0/24",
        "--gateway",
        "10.31.0.1",
    ]));
    assert!(err.contains("gateway"), "{err}");
    let err = failure(&ctl(&[
        "--server",
        url,
        "network",
        "create",
        "x",
        "--subnet",
        "10.20.0.128/25",
    ]));
    assert!(err.contains("subnet") && err.contains("lab"), "{err}");

    let created = stdout(&ctl(&[
        "--server",
        url,
        "instance",
        "create",
        "--name",
        "web",
        "--kernel",
        &s.kernel,
        "--network",
        "lab",
        "--ip",
        "10.20.0.7",
        "--kernel-parameters",
        "--ipv4={cidr} --ipv4-gateway={gateway}",
    ]));
    assert!(created.contains("10.20.0.7/24"), "{created}");
    let show = stdout(&ctl(&["--server", url, "instance", "show", "web"]));
    assert!(
        show.contains("--ipv4={cidr} --ipv4-gateway={gateway}"),
        "{show}"
    );
    assert!(
        show.contains("--ipv4=10.20.0.7/24 --ipv4-gateway=10.20.0.1"),
        "{show}"
    );
    let err = failure(&ctl(&[
        "--server",
        url,
        "instance",
        "create",
        "--name",
        "typo",
        "--kernel",
        &s.kernel,
        "--network",
        "lab",
        "--kernel-parameters",
        "--ipv4={cdir}",
    ]));
    assert!(err.contains("{cdir}"), "{err}");

    let list = stdout(&ctl(&["--server", url, "network", "list"]));
    assert!(list.contains("lab") && list.contains("1/253"), "{list}");
    let show = stdout(&ctl(&["--server", url, "network", "show", "lab"]));
    assert!(show.contains("10.20.0.7") && show.contains("web"), "{show}");
    let err = failure(&ctl(&["--server", url, "network", "rm", "lab"]));
    assert!(err.contains("in use by 1 instance(s): web"), "{err}");
    stdout(&ctl(&["--server", url, "instance", "delete", "web"]));
    let out = stdout(&ctl(&["--server", url, "network", "rm", "lab"]));
    assert!(out.contains("deleted network lab"), "{out}");
    assert!(stdout(&ctl(&["--server", url, "-o", "json", "network", "list"])).trim() == "[]");
}

#[test]
fn volumes_are_created_filled_read_back_grown_and_removed() {
    let s = serve();
    let file = s.dir.path().join("content.img");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 13) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let file = file.to_str().unwrap();
    let out = stdout(&ctl(&[
        "--server", &s.url, "volume", "create", "store0", "--size", "1M",
    ]));
    assert_eq!(out.trim(), "store0 (raw, 1.0 MiB)");
    let out = stdout(&ctl(&[
        "--server", &s.url, "volume", "upload", "store0", file, "-q",
    ]));
    assert!(out.starts_with("store0: wrote "), "{out}");
    let back = s.dir.path().join("back.img");
    let back_str = back.to_str().unwrap();
    stdout(&ctl(&[
        "--server", &s.url, "volume", "download", "store0", back_str,
    ]));
    let got = std::fs::read(&back).unwrap();
    assert_eq!(got.len(), 1 << 20);
    assert_eq!(&got[..content.len()], &content[..]);
    // --from sizes the volume after the file, rounded up to whole sectors.
    stdout(&ctl(&[
        "--server", &s.url, "volume", "create", "copy", "--from", file, "-q",
    ]));
    let shown = stdout(&ctl(&["--server", &s.url, "volume", "show", "copy"]));
    assert!(shown.contains("(200192 bytes)"), "{shown}");
    stdout(&ctl(&[
        "--server", &s.url, "volume", "create", "child", "--clone", "store0",
    ]));
    let listed = stdout(&ctl(&["--server", &s.url, "volume", "list"]));
    assert!(
        listed.contains("child") && listed.contains("qcow2"),
        "{listed}"
    );
    assert!(failure(&ctl(&["--server", &s.url, "volume", "rm", "store0"])).contains("clones"));
    stdout(&ctl(&["--server", &s.url, "volume", "rm", "child"]));
    let grown = stdout(&ctl(&[
        "--server", &s.url, "volume", "resize", "store0", "--size", "2M",
    ]));
    assert_eq!(grown.trim(), "store0: 2.0 MiB");
    let err = failure(&ctl(&[
        "--server", &s.url, "volume", "create", "bad", "--size", "1000",
    ]));
    assert!(err.contains("size_bytes"), "{err}");
    stdout(&ctl(&[
        "--server", &s.url, "volume", "rm", "store0", "copy",
    ]));
    assert_eq!(
        stdout(&ctl(&["--server", &s.url, "volume", "list", "-o", "json"])).trim(),
        "[]"
    );
}

#[test]
fn hosts_are_listed_and_shown_and_instances_say_where_they_run() {
    let s = serve();
    let kernel = s.kernel.as_str();
    let before = stdout(&ctl(&["--server", &s.url, "host", "list"]));
    let row = before
        .lines()
        .find(|l| l.starts_with("local "))
        .unwrap_or_else(|| panic!("no host local in {before}"));
    assert!(row.contains(" yes "), "{row}");
    stdout(&ctl(&[
        "--server", &s.url, "instance", "create", "--name", "placed", "--kernel", kernel,
    ]));
    let list = stdout(&ctl(&["--server", &s.url, "host", "list"]));
    let mut lines = list.lines();
    let header = lines.next().unwrap();
    let columns: Vec<&str> = header
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        columns,
        [
            "NAME",
            "REACHABLE",
            "LIBVIRT",
            "TYPE",
            "CPUS",
            "FREE MEM",
            "INSTANCES",
            "LABELS"
        ],
        "{header}"
    );
    let at = header.find("INSTANCES").unwrap();
    let row = lines.next().unwrap();
    assert_eq!(lines.next(), None, "one host only: {list}");
    assert!(row.starts_with("local "), "{row}");
    assert_eq!(
        row[at..].split_whitespace().next(),
        Some("1"),
        "one instance on local: {list}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&ctl(&[
        "--server", &s.url, "-o", "json", "host", "list",
    ])))
    .unwrap();
    assert_eq!(json[0]["name"], "local");
    assert_eq!(json[0]["instances"], 1);

    let shown = stdout(&ctl(&["--server", &s.url, "host", "show", "local"]));
    assert!(shown.contains("reachable:   yes"), "{shown}");
    assert!(
        shown.lines().any(|l| l.starts_with("instances:   1 ")),
        "{shown}"
    );

    let err = failure(&ctl(&["--server", &s.url, "host", "show", "nosuch"]));
    assert!(err.contains("nosuch"), "{err}");

    // The instance's placement: on local, and why.
    let show = stdout(&ctl(&["--server", &s.url, "instance", "show", "placed"]));
    let host = show
        .lines()
        .find(|l| l.starts_with("host:"))
        .unwrap_or_else(|| panic!("no host line in {show}"));
    assert!(host.contains(" local ("), "{host}");
    let placement = show
        .lines()
        .find_map(|l| l.strip_prefix("placement:"))
        .unwrap_or_else(|| panic!("no placement line in {show}"));
    assert!(
        !placement.trim().is_empty() && placement.trim() != "-",
        "{show}"
    );
    assert!(!show.contains("failover:"), "not asked for: {show}");
    // One host: instance list looks as it did before hosts.
    let listed = stdout(&ctl(&["--server", &s.url, "instance", "list"]));
    assert!(!listed.lines().next().unwrap().contains("HOST"), "{listed}");

    // A pinned create names the field at fault.
    let err = failure(&ctl(&[
        "--server", &s.url, "instance", "create", "--name", "lost", "--kernel", kernel, "--host",
        "nosuch",
    ]));
    assert!(err.contains("host: ") && err.contains("nosuch"), "{err}");
    let pinned = stdout(&ctl(&[
        "--server", &s.url, "instance", "create", "--name", "pinned", "--kernel", kernel, "--host",
        "local",
    ]));
    assert!(pinned.starts_with("created pinned"), "{pinned}");
    let show = stdout(&ctl(&["--server", &s.url, "instance", "show", "pinned"]));
    assert!(
        show.lines()
            .any(|l| l.starts_with("host:") && l.ends_with("local (pinned)")),
        "{show}"
    );
    stdout(&ctl(&[
        "--server",
        &s.url,
        "instance",
        "create",
        "--name",
        "mobile",
        "--kernel",
        kernel,
        "--failover",
    ]));
    let show = stdout(&ctl(&["--server", &s.url, "instance", "show", "mobile"]));
    assert!(
        show.lines().any(|l| l == "failover:          yes"),
        "{show}"
    );
}

#[test]
fn a_named_host_excludes_the_scheduler_flags() {
    // Refused by the argument parser: no server is needed, none is asked.
    for extra in [
        &["--placement", "spread"][..],
        &["--host-selector", "rack=2"][..],
        &["--failover"][..],
    ] {
        let mut args = vec![
            "--server",
            "http://127.0.0.1:9",
            "instance",
            "create",
            "--name",
            "a",
            "--kernel",
            "/k",
            "--host",
            "a",
        ];
        args.extend_from_slice(extra);
        let out = ctl(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("'--host <NAME>' cannot be used with") && err.contains(extra[0]),
            "{err}"
        );
    }
    let out = ctl(&[
        "--server",
        "http://127.0.0.1:9",
        "instance",
        "create",
        "--name",
        "a",
        "--kernel",
        "/k",
        "--host-selector",
        "rack",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
}
