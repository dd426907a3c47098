//! The `rhyzomesrv` binary itself, on libvirt's built-in test driver (`test:///default`, real
//! libvirt code, no QEMU): configuration errors, the refusal to listen beyond loopback
//! unprotected, token management, TLS certificates, and SIGTERM.

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
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use viewer, operator or admin"));
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
