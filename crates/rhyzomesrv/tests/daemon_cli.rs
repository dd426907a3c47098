//! The `rhyzomesrv` binary itself, on libvirt's built-in test driver (`test:///default`, real
//! libvirt code, no QEMU): configuration errors, the refusal to listen beyond loopback
//! unprotected, token management, TLS certificates, SIGTERM, the systemd service protocol
//! (readiness, watchdog, SIGHUP reload), manual pages and completions.

use rhyzome_api::client::{Client, ClientOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Dir {
    dir: tempfile::TempDir,
    port: u16,
}

fn setup(extra: serde_json::Value) -> Dir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("kernels")).unwrap();
    std::fs::write(dir.path().join("kernels/k.virtio"), b"\x7fELF").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = serde_json::json!({
        "Bind": format!("127.0.0.1:{port}"),
        "LibvirtURI": "test:///default",
        "DomainType": "test",
        "BridgeInterface": "br0",
        "StateDir": dir.path().join("state"),
        "KernelDirs": [dir.path().join("kernels")],
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    std::fs::write(dir.path().join("rhyzome.conf"), config.to_string()).unwrap();
    Dir { dir, port }
}

impl Dir {
    fn config(&self) -> PathBuf {
        self.dir.path().join("rhyzome.conf")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_rhyzomesrv"))
            .arg("--config")
            .arg(self.config())
            .args(args)
            .output()
            .unwrap()
    }

    fn spawn(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_rhyzomesrv"))
            .arg("--config")
            .arg(self.config())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn client(&self, scheme: &str, opts: ClientOptions) -> Client {
        Client::with_options(&format!("{scheme}://127.0.0.1:{}", self.port), opts).unwrap()
    }
}

fn wait_up(client: &Client, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.info() {
            Ok(_) => return,
            // A 401 also proves the daemon is up.
            Err(e) if e.status().is_some() => return,
            Err(_) => {}
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("rhyzomesrv exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "rhyzomesrv did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(mut child: Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn configuration_errors_point_at_the_problem() {
    let d = setup(serde_json::json!({}));
    std::fs::write(
        d.config(),
        "{\n  \"BridgeInterface\": \"virbr0\"\n  \"Hostname\": \"localhost\",\n  \"Bind\": \":8080\"\n}\n",
    )
    .unwrap();
    let out = d.run(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rhyzome.conf:3:3") && err.contains("missing ','"),
        "{err}"
    );
    std::fs::write(d.config(), r#"{"Bridge": "br0"}"#).unwrap();
    let err = String::from_utf8_lossy(&d.run(&["check-config"]).stderr).into_owned();
    assert!(err.contains("unknown field `Bridge`"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_rhyzomesrv"))
        .args(["--config", "/nonexistent/rhyzome.conf", "check-config"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/rhyzome.conf"));
}

#[test]
fn listening_beyond_loopback_needs_protection_or_an_explicit_insecure() {
    let open = setup(serde_json::json!({ "Bind": ":0" }));
    let out = open.run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on :0"), "{err}");

    let insecure = setup(serde_json::json!({}));
    let text = std::fs::read_to_string(insecure.config()).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    cfg["Bind"] = format!("0.0.0.0:{}", insecure.port).into();
    cfg["Insecure"] = true.into();
    std::fs::write(insecure.config(), cfg.to_string()).unwrap();
    let mut child = insecure.spawn();
    wait_up(
        &insecure.client("http", ClientOptions::default()),
        &mut child,
    );
    terminate(child);
}

#[test]
fn tokens_are_managed_from_the_command_line_and_protect_a_public_bind() {
    let d = setup(serde_json::json!({}));
    let out = d.run(&["token", "create", "--name", "admin", "--role", "admin"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("rhz_"), "{token}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("first token"));
    let bad = d.run(&["token", "create", "--name", "x", "--role", "root"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use metrics, viewer, operator or admin"));
    let list = String::from_utf8(d.run(&["token", "list"]).stdout).unwrap();
    assert!(list.contains("admin") && !list.contains(&token), "{list}");

    // With a token, a public bind is allowed.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.config()).unwrap()).unwrap();
    cfg["Bind"] = format!("0.0.0.0:{}", d.port).into();
    std::fs::write(d.config(), cfg.to_string()).unwrap();
    let mut child = d.spawn();
    let anonymous = d.client("http", ClientOptions::default());
    wait_up(&anonymous, &mut child);
    assert_eq!(anonymous.list_instances().unwrap_err().status(), Some(401));
    let admin = d.client(
        "http",
        ClientOptions {
            token: Some(token.clone()),
            ..Default::default()
        },
    );
    assert!(admin.list_instances().unwrap().is_empty());
    // Revoked while the daemon runs: refused at the next request.
    assert!(d.run(&["token", "revoke", "admin"]).status.success());
    assert_eq!(admin.list_instances().unwrap_err().status(), Some(401));
    terminate(child);
}

#[test]
fn a_self_signed_certificate_serves_https() {
    let d = setup(serde_json::json!({}));
    let tls_dir = d.dir.path().join("tls");
    let out = d.run(&[
        "cert",
        "create",
        "--out-dir",
        tls_dir.to_str().unwrap(),
        "--host",
        "127.0.0.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let fingerprint = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap()
        .to_string();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.config()).unwrap()).unwrap();
    cfg["TLSCert"] = tls_dir.join("cert.pem").display().to_string().into();
    cfg["TLSKey"] = tls_dir.join("key.pem").display().to_string().into();
    std::fs::write(d.config(), cfg.to_string()).unwrap();
    let mut child = d.spawn();
    let pinned = d.client(
        "https",
        ClientOptions {
            fingerprint: Some(fingerprint),
            ..Default::default()
        },
    );
    wait_up(&pinned, &mut child);
    assert_eq!(pinned.info().unwrap().domain_type, "test");
    let ca = d.client(
        "https",
        ClientOptions {
            ca_pem: Some(std::fs::read(tls_dir.join("cert.pem")).unwrap()),
            ..Default::default()
        },
    );
    // A create through the real libvirt test driver, over TLS.
    let i = ca
        .create_instance(&rhyzome_api::InstanceSpec {
            name: "tls-a".into(),
            kernel: d.dir.path().join("kernels/k.virtio").display().to_string(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(i.state, rhyzome_api::InstanceState::Running);
    terminate(child);
}

#[test]
fn check_config_knows_whether_the_socket_group_exists() {
    let d = setup(
        serde_json::json!({ "Socket": "/tmp/rhz-check.sock", "SocketGroup": "no-such-group-rhz" }),
    );
    let out = d.run(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SocketGroup \"no-such-group-rhz\": no such group on this host"),
        "{err}"
    );
}

#[test]
fn the_local_socket_is_group_only_survives_a_kill_and_goes_away_on_sigterm() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let probe = setup(serde_json::json!({}));
    let socket = probe.dir.path().join("run/api.sock");
    // A group this process may give its files to: its own.
    let group = Command::new("id").arg("-gn").output().unwrap().stdout;
    let group = String::from_utf8(group).unwrap().trim().to_string();
    let d = setup(serde_json::json!({ "Socket": socket, "SocketGroup": group }));
    let local = Client::new(&format!("unix://{}", socket.display())).unwrap();
    let mut child = d.spawn();
    wait_up(&local, &mut child);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // SAFETY: getegid cannot fail and touches no memory.
    assert_eq!(meta.gid(), unsafe { libc::getegid() });
    assert_eq!(local.info().unwrap().domain_type, "test");

    // A second daemon on the same socket is refused, and leaves the first one serving.
    let second = setup(serde_json::json!({ "Socket": socket }));
    let out = second.run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another rhyzomesrv is already listening"),
        "{err}"
    );
    assert!(
        !err.contains("reconciliation"),
        "the refused daemon acted on guests first: {err}"
    );
    assert!(local.info().is_ok());

    // SIGKILL leaves the socket file behind; the next start replaces it.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(socket.exists());
    let mut child = d.spawn();
    wait_up(&local, &mut child);
    terminate(child);
    assert!(!socket.exists(), "SIGTERM removes the socket");
}

/// The daemon, started by `sh` after `ulimit_args` (e.g. `-n 128`).
fn spawn_limited(d: &Dir, ulimit_args: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"ulimit {ulimit_args} && exec "$0" --config "$1""#
        ))
        .arg(env!("CARGO_BIN_EXE_rhyzomesrv"))
        .arg(d.config())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_daemon_raises_its_soft_open_file_limit_to_the_hard_limit() {
    let d = setup(serde_json::json!({}));
    let mut child = spawn_limited(&d, "-S -n 128");
    wait_up(&d.client("http", ClientOptions::default()), &mut child);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    let (soft, hard) = (numbers[0], numbers[1]);
    assert_ne!(
        hard, "128",
        "this test needs a hard limit above 128: {line}"
    );
    assert_eq!(soft, hard, "{line}");
    terminate(child);
}

#[test]
fn under_a_low_fd_limit_200_event_connections_do_not_stop_the_api_or_spin_in_accept() {
    let d = setup(serde_json::json!({}));
    // `ulimit -n` sets the hard limit too, so the daemon cannot raise its way out.
    let mut child = spawn_limited(&d, "-n 128");
    let client = d.client("http", ClientOptions::default());
    wait_up(&client, &mut child);
    // 200 callers' worth of event streams from one address, each left unread.
    let request = "GET /v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..200 {
        let Ok(mut conn) = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], d.port).into(),
            Duration::from_secs(2),
        ) else {
            continue;
        };
        let _ = std::io::Write::write_all(&mut conn, request.as_bytes());
        held.push(conn);
    }
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let info = std::thread::spawn(move || client.info().map(|_| ()).map_err(|e| e.to_string()));
    while !info.is_finished() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        info.is_finished(),
        "/v1/info has not answered in 10 s while one caller holds 200 connections"
    );
    info.join().unwrap().expect("/v1/info answers");
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    child.wait().unwrap();
    let accept_errors = log.matches("accept failed").count();
    assert!(
        accept_errors <= 3,
        "the accept loop logged {accept_errors} failures:\n{log}"
    );
}

#[test]
fn manual_pages_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rhyzomesrv"))
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "rhyzomesrv.1",
        "rhyzomesrv-token-create.1",
        "rhyzomesrv-cert-create.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
    for (shell, marker) in [
        ("bash", "rhyzomesrv"),
        ("zsh", "#compdef rhyzomesrv"),
        ("fish", "complete -c rhyzomesrv"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rhyzomesrv"))
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains(marker),
            "{shell}: {script}"
        );
        assert!(script.contains("max-instances"), "{shell}: {script}");
    }
}

/// What systemd would see: `READY=1` once the API answers, `WATCHDOG=1` at half of
/// `WATCHDOG_USEC`, and a SIGHUP that applies the new rate limit and names what needs a
/// restart, without stopping the daemon.
#[test]
fn systemd_sees_readiness_watchdog_pings_and_a_reload() {
    let d = setup(serde_json::json!({"CreateRateLimit": 5}));
    let notify_path = d.dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rhyzomesrv"))
        .arg("--config")
        .arg(d.config())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let receive = || {
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).expect("a notification within 30 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = receive();
    let ready_at = Instant::now();
    assert!(first.starts_with("READY=1"), "{first}");
    // Ready means serving: the API answers right away.
    d.client("http", ClientOptions::default()).info().unwrap();
    // Pings start with READY=1 and come every 200 ms, never faster (a late one may be queued,
    // so only the sixth gives a lower bound: 5 intervals after the first, less the time
    // this thread took to read READY=1 on a busy machine).
    for _ in 0..6 {
        assert_eq!(receive(), "WATCHDOG=1");
    }
    let elapsed = ready_at.elapsed();
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(10),
        "six pings every 200 ms took {elapsed:?}"
    );

    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.config()).unwrap()).unwrap();
    config["CreateRateLimit"] = serde_json::json!(1);
    config["HeaderTimeoutSeconds"] = serde_json::json!(3);
    std::fs::write(d.config(), config.to_string()).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let mut states = Vec::new();
    while !states.iter().any(|s: &String| s.starts_with("READY=1")) {
        states.push(receive());
    }
    assert!(states.contains(&"RELOADING=1".to_string()), "{states:?}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop it"
    );
    d.client("http", ClientOptions::default()).info().unwrap();
    terminate_with_log(child, |log| {
        assert!(log.contains("configuration reloaded"), "{log}");
        assert!(log.contains("CreateRateLimit"), "{log}");
        assert!(
            log.contains("apply only after a restart") && log.contains("HeaderTimeoutSeconds"),
            "{log}"
        );
    });
    // Watchdog pings may still be queued; the last word is that it is stopping.
    let mut last = receive();
    while last == "WATCHDOG=1" {
        last = receive();
    }
    assert_eq!(last, "STOPPING=1");
}

/// SIGTERM, a clean exit, and `check` on what the daemon logged.
fn terminate_with_log(mut child: Child, check: impl FnOnce(&str)) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}: {log}");
    check(&log);
}

/// Under systemd, stderr is the journal's stream (`JOURNAL_STREAM` names its device and
/// inode). The daemon then writes to the journal natively, or, with no journal socket (as
/// here, where systemd is not running), plain lines without a timestamp of their own: the
/// journal stamps each line, a second stamp is noise. Events logged while a request is
/// handled carry its request id.
#[test]
fn under_the_journal_log_lines_carry_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let d = setup(serde_json::json!({}));
    let log_path = d.dir.path().join("stderr");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rhyzomesrv"))
        .arg("--config")
        .arg(d.config())
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let client = d.client("http", ClientOptions::default());
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.info().is_err() {
        assert!(child.try_wait().unwrap().is_none(), "rhyzomesrv exited");
        assert!(Instant::now() < deadline, "rhyzomesrv did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A mutating request is audited: that line carries the request's span.
    let status = reqwest::blocking::Client::new()
        .delete(format!("http://127.0.0.1:{}/v1/instances/nope", d.port))
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 404);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        assert!(
            !text.contains("serving the API"),
            "with a journal socket, logs go to the journal, not stderr: {text}"
        );
        return;
    }
    let serving = text
        .lines()
        .find(|l| l.contains("serving the API"))
        .unwrap_or_else(|| panic!("no 'serving the API' line: {text}"));
    assert!(
        serving.trim_start().starts_with("INFO"),
        "no timestamp, no colour: {serving:?}"
    );
    assert!(serving.contains("address=127.0.0.1:"), "{serving}");
    let audit = text
        .lines()
        .find(|l| l.contains("audit") && l.contains("/v1/instances/nope"))
        .unwrap_or_else(|| panic!("no audit line: {text}"));
    assert!(
        audit.contains("request{request_id=")
            && audit.contains("method=DELETE path=/v1/instances/nope}"),
        "the request's id, method and path go with its events: {audit}"
    );
}

/// A SIGTERM that arrives while the daemon starts (listening, not yet serving) stops it cleanly
/// once the start-up reconciliation is done: it is never the default action that kills the
/// process outright, leaving its socket behind.
#[test]
fn a_sigterm_during_start_up_stops_the_daemon_cleanly() {
    let probe = setup(serde_json::json!({}));
    let socket = probe.dir.path().join("run/api.sock");
    let d = setup(serde_json::json!({ "Socket": socket }));
    for attempt in 0..5 {
        let mut child = d.spawn();
        // The listener is bound before the start-up reconciliation: a connection succeeds as
        // soon as it is, while nothing serves it yet.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", d.port)).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "rhyzomesrv exited");
            assert!(Instant::now() < deadline, "rhyzomesrv did not listen");
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
        assert!(status.success(), "attempt {attempt}: {status}\n{log}");
        assert!(!socket.exists(), "attempt {attempt}: the socket is left");
    }
}

#[test]
fn a_database_from_a_newer_release_is_refused_and_left_alone() {
    let d = setup(serde_json::json!({}));
    let state = d.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // A schema version no release of this daemon can know.
    let newer = 1000;
    {
        let conn = rusqlite::Connection::open(state.join("rhyzome.db")).unwrap();
        conn.execute_batch("CREATE TABLE future (x INTEGER);")
            .unwrap();
        conn.pragma_update(None, "user_version", newer).unwrap();
    }
    let mut child = d.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("rhyzomesrv started on a database from a newer release");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the database has schema version {newer}, newer than this rhyzomesrv knows"
        )) && err.contains("written by a newer release"),
        "{err}"
    );
    let conn = rusqlite::Connection::open(state.join("rhyzome.db")).unwrap();
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, newer, "the database was changed");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["future"], "the daemon created tables in it");
}

/// Connects to the local socket as user `nobody` (uid and gid 65534), with `groups` as its
/// supplementary groups, and asks for `/v1/info`; returns the exit code and the output (the
/// HTTP answer, or Python's error naming errno).
fn info_as_nobody(socket: &std::path::Path, groups: &str) -> (Option<i32>, String) {
    const CLIENT: &str = "import socket, sys\n\
s = socket.socket(socket.AF_UNIX)\n\
s.connect(sys.argv[1])\n\
s.sendall(b'GET /v1/info HTTP/1.0\\r\\n\\r\\n')\n\
print(s.makefile('rb').read().decode())\n";
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534"])
        .arg(if groups.is_empty() {
            "--clear-groups".to_string()
        } else {
            format!("--groups={groups}")
        })
        .args(["/usr/bin/python3", "-c", CLIENT])
        .arg(socket)
        .output()
        .expect("setpriv and /usr/bin/python3 are installed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// File permissions are the local socket's authentication: a process of another user, in
/// neither the socket's owner nor its group, cannot connect; the same user in the group can.
#[test]
fn a_local_caller_outside_the_sockets_owner_and_group_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid cannot fail and touches no memory.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs a client as user nobody, which needs root (scripts/test.sh runs as root)"
    );
    let d = setup(serde_json::json!({}));
    // nobody may reach the socket's directory: only the socket's own mode stands in the way.
    let run = d.dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    for dir in [d.dir.path(), run.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = run.join("api.sock");
    // The socket's group is this process's own (root's), which nobody is not in.
    let group = Command::new("id").arg("-gn").output().unwrap().stdout;
    let group = String::from_utf8(group).unwrap().trim().to_string();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.config()).unwrap()).unwrap();
    config["Socket"] = serde_json::json!(socket);
    config["SocketGroup"] = serde_json::json!(group);
    std::fs::write(d.config(), config.to_string()).unwrap();
    let local = Client::new(&format!("unix://{}", socket.display())).unwrap();
    let mut child = d.spawn();
    wait_up(&local, &mut child);

    let (code, text) = info_as_nobody(&socket, "");
    assert_ne!(code, Some(0), "nobody connected: {text}");
    assert!(text.contains("PermissionError"), "{text}");
    // SAFETY: getegid cannot fail and touches no memory.
    let gid = unsafe { libc::getegid() };
    let (code, text) = info_as_nobody(&socket, &gid.to_string());
    assert_eq!(
        code,
        Some(0),
        "nobody in the socket's group was refused: {text}"
    );
    assert!(text.contains("\"domain_type\":\"test\""), "{text}");
    terminate(child);
}

#[test]
fn metrics_bind_serves_metrics_alone_without_a_token_on_loopback() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = setup(serde_json::json!({"MetricsBind": format!("127.0.0.1:{metrics_port}")}));
    assert!(d
        .run(&["token", "create", "--name", "admin", "--role", "admin"])
        .status
        .success());
    let mut child = d.spawn();
    wait_up(&d.client("http", ClientOptions::default()), &mut child);
    let get = |port: u16, path: &str| {
        let resp = reqwest::blocking::get(format!("http://127.0.0.1:{port}{path}")).unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };
    let (status, body) = get(metrics_port, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("rhyzome_libvirt_up 1"), "{body}");
    // Nothing else there, and the API's own /metrics still needs the token.
    assert_eq!(get(metrics_port, "/v1/instances").0, 404);
    assert_eq!(get(metrics_port, "/ui").0, 404);
    assert_eq!(get(d.port, "/metrics").0, 401);
    terminate(child);

    // Beyond loopback it is refused, naming the key.
    let public = setup(serde_json::json!({"MetricsBind": "0.0.0.0:9110"}));
    let out = public.run(&["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MetricsBind") && err.contains("not a loopback address"),
        "{err}"
    );
}
