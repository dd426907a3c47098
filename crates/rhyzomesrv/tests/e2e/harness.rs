//! Test harness: the lab, a daemon process per test, the CLI, and probes into the lab's
//! network namespace.
// Shared by the `e2e` and `faults` test binaries; each uses only part of it.
#![allow(dead_code)]

use rhyzome_api::client::Client;
use rhyzome_api::{Instance, InstanceState};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The lab's settings, as `scripts/lab.sh env` prints them (it reads the same `RHYZOME_LAB_*`
/// environment variables for its defaults, so the script is their one source).
fn lab_env(key: &str) -> String {
    static ENV: OnceLock<std::collections::HashMap<String, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/lab.sh"))
            .arg("env")
            .output()
            .expect("run scripts/lab.sh env");
        assert!(out.status.success(), "scripts/lab.sh env failed: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect()
    });
    env.get(key)
        .unwrap_or_else(|| panic!("scripts/lab.sh env does not print {key}"))
        .clone()
}

pub fn netns() -> String {
    lab_env("RHYZOME_LAB_NETNS")
}

pub fn bridge() -> String {
    lab_env("RHYZOME_LAB_BRIDGE")
}

/// The lab's second bridge, for guests with two NICs.
pub fn bridge2() -> String {
    lab_env("RHYZOME_LAB_BRIDGE2")
}

/// The URI of the lab's own libvirtd (never the machine's `qemu:///system`).
pub fn libvirt_uri() -> String {
    lab_env("RHYZOME_LAB_URI")
}

/// Runs `virsh` against the lab's second host.
pub fn virsh_host2(args: &[&str]) -> Output {
    Command::new("virsh")
        .arg("-q")
        .arg("-c")
        .arg(host2_uri())
        .args(args)
        .output()
        .expect("run virsh")
}

/// The pid of the lab's libvirtd, from the pid file `scripts/lab.sh` keeps; `None` when it does
/// not run. Checked to be a libvirtd: a stale file never names someone else's process.
pub fn lab_libvirtd_pid() -> Option<u32> {
    libvirtd_pid(&lab_env("RHYZOME_LAB_LIBVIRTD_PIDFILE"))
}

/// The URI of the lab's second libvirt host, reached over libvirt's remote protocol
/// (`qemu+tcp://...`), as a remote host is.
pub fn host2_uri() -> String {
    lab_env("RHYZOME_LAB_HOST2_URI")
}

/// Where the daemon's link emulators take frames from host 2's guests: the lab namespace's
/// end of the veth pair to host 2 (`LinkEmulatorAddress`).
pub fn emulator_address() -> String {
    lab_env("RHYZOME_LAB_EMULATOR_ADDR")
}

/// Host 2's end of that pair, from which its guests send frames (`FrameAddress`).
pub fn host2_frame_address() -> String {
    lab_env("RHYZOME_LAB_HOST2_FRAME_ADDR")
}

/// Host 2 over TLS: `qemu+tls://...?pkipath=DIR` with the client certificate the lab made
/// (`scripts/hosts-pki.sh`), the only one host 2's `tls_allowed_dn_list` admits.
pub fn host2_tls_uri() -> String {
    lab_env("RHYZOME_LAB_HOST2_TLS_URI")
}

/// Host 2's network namespace.
pub fn host2_netns() -> String {
    lab_env("RHYZOME_LAB_HOST2_NETNS")
}

/// Held by each test that uses host 2: one of them stops its libvirtd, which must not happen
/// under another.
pub fn host2_lock() -> std::sync::MutexGuard<'static, ()> {
    static HOST2: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HOST2.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pid of host 2's libvirtd, as [`lab_libvirtd_pid`].
pub fn host2_libvirtd_pid() -> Option<u32> {
    libvirtd_pid(&lab_env("RHYZOME_LAB_HOST2_LIBVIRTD_PIDFILE"))
}

/// Runs `scripts/lab.sh <command>` (`host2-stop`, `host2-start`) and panics with its output
/// when it fails.
pub fn lab_command(command: &str) {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/lab.sh"))
        .arg(command)
        .output()
        .expect("run scripts/lab.sh");
    assert!(
        out.status.success(),
        "scripts/lab.sh {command} failed: {out:?}"
    );
}

fn libvirtd_pid(pid_file: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "libvirtd").then_some(pid)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs `scripts/lab.sh up` (idempotent: it starts only what is not running); the error is
/// the script's output.
pub fn lab_up() -> Result<(), String> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/lab.sh"))
        .arg("up")
        .output()
        .map_err(|e| format!("cannot run scripts/lab.sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Brings the lab up once per test process (idempotent if it already runs), and starts the
/// watcher of its libvirtd.
pub fn lab() {
    static LAB: OnceLock<()> = OnceLock::new();
    LAB.get_or_init(|| {
        rhyzome_testkernel::require_root();
        if let Err(output) = lab_up() {
            panic!(
                "scripts/lab.sh up failed; the end-to-end tests need root, QEMU and libvirt \
                 (scripts/install-deps.sh installs them):\n{output}"
            );
        }
        std::thread::spawn(watch_lab_libvirtd);
    });
}

/// How many tests have stopped the lab's libvirtd on purpose and not yet started it again:
/// the watcher leaves it down meanwhile.
pub static LIBVIRTD_STOPPED_ON_PURPOSE: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Starts the lab's libvirtd again when it died under the tests, as a service manager's
/// restart policy would on a server. Debian 12's libvirt 9.0 was seen to abort (`free():
/// invalid pointer` after `remoteClientFreePrivateCallbacks: unexpected incomplete domain
/// callback`) while many clients came and went; the daemons under test reconnect, and each
/// restart is reported on stderr and in `LAB_RESTARTS_LOG`, never hidden.
fn watch_lab_libvirtd() {
    use std::sync::atomic::Ordering;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if LIBVIRTD_STOPPED_ON_PURPOSE.load(Ordering::SeqCst) > 0 || lab_libvirtd_pid().is_some() {
            continue;
        }
        // A test may have stopped it just now, or `lab.sh` may be starting it.
        std::thread::sleep(Duration::from_millis(500));
        if LIBVIRTD_STOPPED_ON_PURPOSE.load(Ordering::SeqCst) > 0 || lab_libvirtd_pid().is_some() {
            continue;
        }
        let line = format!(
            "the lab's libvirtd is not running and no test stopped it: starting it again (see \
             /var/log/rhyzome-lab/{}-libvirtd.stderr)",
            netns()
        );
        eprintln!("{line}");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LAB_RESTARTS_LOG)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes()));
        lab_command("host1-start");
    }
}

/// Where the watcher notes each restart of the lab's libvirtd.
pub const LAB_RESTARTS_LOG: &str = "/var/log/rhyzome-lab/watcher.log";

/// uid and gid of the lab's unprivileged user (made by `scripts/lab.sh`).
pub fn lab_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "rhyzome-e2e"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "the user rhyzome-e2e is missing; scripts/lab.sh up creates it"
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

/// The CLI binary, built next to this test binary.
pub fn ctl_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let ctl = dir.join("rhyzomectl");
    assert!(
        ctl.exists(),
        "{} is missing; build the workspace first (cargo build --workspace)",
        ctl.display()
    );
    ctl
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `rhyzomesrv` process with its own state directory and kernel directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub server: String,
    pub client: Client,
    pub hostname: String,
    /// The daemon's identity (`GET /v1/info`), known once it has started.
    pub daemon_id: String,
    config: PathBuf,
    child: Option<Child>,
    binary: PathBuf,
    /// uid and gid to run the daemon as; root when `None`.
    run_as: Option<(u32, u32)>,
}

impl Daemon {
    /// Starts a daemon whose instances are named `<tag>-...`; `tag` also names its host, so
    /// daemons of parallel tests never claim each other's domains.
    pub fn start(tag: &str) -> Daemon {
        Daemon::start_with(tag, serde_json::json!({}))
    }

    /// Like [`start`](Self::start), with extra configuration keys.
    pub fn start_with(tag: &str, extra: serde_json::Value) -> Daemon {
        let mut d = Daemon::prepare(tag, extra);
        d.spawn();
        d
    }

    /// Like [`start`](Self::start), but the daemon runs as the lab's unprivileged user
    /// (`rhyzome-e2e`, whose group `libvirt` may use libvirtd's socket), from a copy of the
    /// binary in its own directory, which it owns.
    pub fn start_unprivileged(tag: &str) -> Daemon {
        let mut d = Daemon::prepare(tag, serde_json::json!({}));
        let (uid, gid) = lab_user();
        let binary = d.dir.path().join("rhyzomesrv");
        std::fs::copy(&d.binary, &binary).unwrap();
        d.binary = binary;
        chown_tree(d.dir.path(), uid, gid);
        d.run_as = Some((uid, gid));
        d.spawn();
        d
    }

    fn prepare(tag: &str, extra: serde_json::Value) -> Daemon {
        lab();
        let dir = tempfile::Builder::new()
            .prefix("rhyzome-e2e-")
            .tempdir()
            .unwrap();
        let kernels = dir.path().join("kernels");
        std::fs::create_dir(&kernels).unwrap();
        std::fs::copy(
            rhyzome_testkernel::kernel_path(),
            kernels.join("unikernel.virtio"),
        )
        .unwrap();
        let port = free_port();
        let hostname = format!("e2e-{tag}-{}", std::process::id());
        let config = dir.path().join("rhyzome.conf");
        let mut settings = serde_json::json!({
            "BridgeInterface": bridge(),
            "Hostname": hostname,
            "Bind": format!("127.0.0.1:{port}"),
            "DomainType": "qemu",
            "LibvirtURI": libvirt_uri(),
            "StateDir": dir.path().join("state"),
            "KernelDirs": [kernels],
            "ReconcileIntervalSeconds": 1,
        });
        for (k, v) in extra.as_object().expect("extra settings are an object") {
            settings[k] = v.clone();
        }
        std::fs::write(&config, settings.to_string()).unwrap();
        let server = format!("http://127.0.0.1:{port}");
        Daemon {
            client: Client::new(&server).unwrap(),
            server,
            hostname,
            daemon_id: String::new(),
            config,
            dir,
            child: None,
            binary: PathBuf::from(env!("CARGO_BIN_EXE_rhyzomesrv")),
            run_as: None,
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info,rhyzomesrv=debug")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if let Some((uid, gid)) = self.run_as {
            // As root, std also drops the supplementary groups: only `gid` remains.
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        let child = command.spawn().expect("spawn rhyzomesrv");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.client.info().is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rhyzomesrv exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "rhyzomesrv did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let info = self.client.info().unwrap();
        assert!(!info.daemon_id.is_empty(), "the daemon has no identity");
        assert!(
            self.daemon_id.is_empty() || self.daemon_id == info.daemon_id,
            "the daemon's identity changed from {} to {} on a restart",
            self.daemon_id,
            info.daemon_id
        );
        self.daemon_id = info.daemon_id;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the daemon: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the daemon and starts it again on the same state.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Stops the daemon with SIGTERM, as an init system would, and waits for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().unwrap();
            assert!(
                status.success(),
                "rhyzomesrv exited with {status} on SIGTERM:\n{}",
                self.log()
            );
        }
    }

    /// Starts the daemon again after [`kill`](Self::kill) or [`terminate`](Self::terminate).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon still runs");
        self.spawn();
    }

    pub fn kernel(&self) -> String {
        self.dir
            .path()
            .join("kernels/unikernel.virtio")
            .display()
            .to_string()
    }

    /// Creates `name` from the test kernel, on the lab bridge at `ip`/24.
    pub fn create_at(&self, name: &str, ip: Ipv4Addr) -> Instance {
        self.client
            .create_instance(&rhyzome_api::InstanceSpec {
                name: name.into(),
                kernel: self.kernel(),
                kernel_parameters: format!("--ipv4={ip}/24"),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("create {name}: {e}\n{}", self.log()))
    }

    /// Runs `rhyzomectl --server <this daemon> ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(ctl_binary())
            .arg("--server")
            .arg(&self.server)
            .args(args)
            .env("RHYZOME_CONFIG", "/nonexistent/rhyzome/config.json")
            .env_remove("RHYZOME_TOKEN")
            .env_remove("RHYZOME_CONTEXT")
            .output()
            .expect("run rhyzomectl")
    }

    /// Like [`ctl`](Self::ctl), but fails the test unless the command succeeds; returns stdout.
    /// `rhyzomectl testbed apply -f FILE --wait --timeout TIMEOUT`, which must succeed; its
    /// output.
    pub fn apply_bed_and_wait(&self, file: &Path, timeout: &str) -> String {
        let file = file.to_str().expect("a UTF-8 path");
        self.ctl_ok(&[
            "testbed",
            "apply",
            "-f",
            file,
            "--wait",
            "--timeout",
            timeout,
        ])
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "rhyzomectl {args:?} failed:\n{}{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn console(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.client.console(name, None).unwrap()).into_owned()
    }

    /// Waits (30 s) until the console holds `count` lines starting with `prefix`.
    pub fn wait_for_console(&self, name: &str, prefix: &str, count: usize) -> String {
        self.wait_for_console_within(name, prefix, count, Duration::from_secs(30))
    }

    /// [`Self::wait_for_console`] with its own limit; on failure it shows the instance and
    /// the daemon's log as well.
    pub fn wait_for_console_within(
        &self,
        name: &str,
        prefix: &str,
        count: usize,
        limit: Duration,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let console = self.console(name);
            if console.lines().filter(|l| l.starts_with(prefix)).count() >= count {
                return console;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{name}: no {count}x {prefix:?} on the console within {limit:?}:\n{console}\n\
                     instance: {:?}\ndaemon log:\n{}",
                    self.client.get_instance(name),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_for_state(&self, name: &str, state: InstanceState) -> Instance {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let i = self.client.get_instance(name).unwrap();
            if i.state == state {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed {} instead of becoming {state}",
                i.state
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The libvirt id of the running domain of `name` (it changes when the guest reboots).
    /// The libvirt id of the running domain of instance `name`; `None` when the lab's libvirt
    /// has no such domain running. Panics when libvirt cannot be asked.
    pub fn domain_id(&self, name: &str) -> Option<String> {
        lab_domains()
            .remove(&format!("rhyzome-{name}"))
            .filter(|id| id != "-")
    }

    /// Whether the lab's libvirt knows a domain (running or not) for instance `name`. Panics
    /// when libvirt cannot be asked: an error is not an absence.
    pub fn has_domain(&self, name: &str) -> bool {
        lab_domains().contains_key(&format!("rhyzome-{name}"))
    }

    /// Whether the domain `name` carries this daemon's identity in its rhyzome mark.
    pub fn marked(&self, name: &str) -> bool {
        let meta = virsh(&["metadata", name, "urn:rhyzome:instance:2"]);
        meta.status.success()
            && String::from_utf8_lossy(&meta.stdout)
                .contains(&format!("daemon=\"{}\"", self.daemon_id))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Ok(list) = self.client.list_instances() {
                for i in list {
                    let _ = self.client.delete_instance(&i.name);
                }
            }
            if let Ok(list) = self.client.list_networks() {
                for n in list {
                    let _ = self.client.delete_network(&n.name);
                }
            }
        }
        self.kill();
        // Guests outlive a killed daemon by design; make sure none of this test's are left,
        // and touch nothing else: a real daemon, or another test's, may share this libvirt
        // and even this Hostname. Only this daemon's identity proves a domain is the test's.
        if self.daemon_id.is_empty() {
            return;
        }
        let out = virsh(&["list", "--name"]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.trim();
            if name.starts_with("rhyzome-") && self.marked(name) {
                let _ = virsh(&["destroy", name]);
            }
        }
        // Networks too, by the same proof: this daemon's identity in their mark.
        for name in self.own_networks() {
            let _ = virsh(&["net-destroy", &name]);
            let _ = virsh(&["net-undefine", &name]);
        }
        // The daemon's own storage pool is named by its identity, and its files live in this
        // test's directory, which goes with it; only its definition would stay in libvirt.
        let pool = self.volume_pool();
        if virsh(&["pool-info", &pool]).status.success() {
            let _ = virsh(&["pool-destroy", &pool]);
            let _ = virsh(&["pool-undefine", &pool]);
        }
    }
}

impl Daemon {
    /// The name of the daemon's own volume pool.
    pub fn volume_pool(&self) -> String {
        format!("rhyzome-{}", self.daemon_id)
    }
}

impl Daemon {
    /// The lab's libvirt networks (running or not) that carry this daemon's identity.
    pub fn own_networks(&self) -> Vec<String> {
        let out = virsh(&["net-list", "--all", "--name"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with("rhyzome-"))
            .filter(|n| {
                let xml = virsh(&["net-dumpxml", n]);
                let xml = String::from_utf8_lossy(&xml.stdout);
                xml.contains("urn:rhyzome:network:1")
                    && xml.contains(&format!("daemon=\"{}\"", self.daemon_id))
            })
            .map(str::to_string)
            .collect()
    }
}

/// Whether the lab's libvirt has the network `name`, and whether it runs. Panics when
/// libvirt cannot be asked.
pub fn lab_network(name: &str) -> Option<bool> {
    let out = virsh(&["net-list", "--all", "--name"]);
    assert!(out.status.success(), "virsh net-list failed: {out:?}");
    let known = String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == name);
    if !known {
        return None;
    }
    let active = virsh(&["net-list", "--name"]);
    Some(
        String::from_utf8_lossy(&active.stdout)
            .lines()
            .any(|l| l.trim() == name),
    )
}

/// The IPv4 addresses (`A.B.C.D/N`) of interface `name` inside the lab namespace, or `None`
/// when it does not exist there.
pub fn lab_interface_addresses(name: &str) -> Option<Vec<String>> {
    let out = Command::new("ip")
        .args(["-n", &netns(), "-o", "-4", "addr", "show", "dev", name])
        .output()
        .expect("run ip");
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next().map(str::to_string)
            })
            .collect(),
    )
}

/// Runs `virsh` against the lab's libvirt.
pub fn virsh(args: &[&str]) -> Output {
    Command::new("virsh")
        .arg("-q")
        .arg("-c")
        .arg(libvirt_uri())
        .args(args)
        .output()
        .expect("run virsh")
}

/// Creates a transient domain from `xml` (written to `file`) in the lab's libvirt, for tests
/// that need a domain made by hand; fails the test when libvirt refuses it.
pub fn virsh_create(xml: &str, file: &Path) {
    std::fs::write(file, xml).unwrap();
    let out = virsh(&["create", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "virsh create: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The state of a domain (by name or UUID) in the lab's libvirt, `None` when there is no such
/// domain. Panics when libvirt cannot be asked: an error is not an absence.
pub fn domain_state(domain: &str) -> Option<String> {
    let out = virsh(&["domstate", domain]);
    if out.status.success() {
        return Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    // libvirt's "no such domain" (VIR_ERR_NO_DOMAIN), by name or while the domain goes away.
    assert!(
        err.contains("failed to get domain") || err.contains("Domain not found"),
        "virsh domstate {domain} failed, so its presence cannot be known: {err}"
    );
    None
}

/// Every domain of the lab's libvirt, by name, with its id (`-` for one that is defined but
/// not running). Panics when `virsh` fails, so that a libvirt that cannot be reached never
/// reads as "the domain is gone".
pub fn lab_domains() -> std::collections::HashMap<String, String> {
    let out = virsh(&["list", "--all"]);
    assert!(
        out.status.success(),
        "virsh list failed, so no domain's presence or absence can be known: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let id = cols.next()?;
            let name = cols.next()?;
            Some((name.to_string(), id.to_string()))
        })
        .collect()
}

pub fn ping(ip: Ipv4Addr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let ok = Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns(),
                "ping",
                "-c1",
                "-W1",
                &ip.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return true;
        }
    }
    false
}

/// Sends one UDP datagram to the guest's service port from inside the lab namespace and
/// returns the answer.
pub fn udp(ip: Ipv4Addr, payload: &str) -> String {
    let reply = rhyzome_testkernel::udp_request_in(
        &netns(),
        SocketAddrV4::new(ip, rhyzome_testkernel::UDP_PORT),
        payload.as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("no UDP answer from {ip} to {payload:?}: {e}"));
    String::from_utf8_lossy(&reply).into_owned()
}
