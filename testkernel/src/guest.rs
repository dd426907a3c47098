//! [`QemuGuest`]: plain QEMU (TCG) booting the test kernel, optionally with NICs in a
//! [`TestNetns`](crate::TestNetns), its console captured line by line by a reader thread.

use crate::{kernel_path, require_root, TestNetns};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The QEMU binary: `$RHYZOME_QEMU` if set, else `qemu-system-x86_64` from `PATH`.
///
/// # Panics
/// If it cannot be found (or `$RHYZOME_QEMU` names a missing file).
pub fn qemu_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RHYZOME_QEMU") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "RHYZOME_QEMU={} does not exist", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let cand = dir.join("qemu-system-x86_64");
        if cand.is_file() {
            return cand;
        }
    }
    panic!("qemu-system-x86_64 not found in PATH (apt-get install qemu-system-x86)");
}

#[derive(Debug)]
struct ConsoleState {
    /// Complete lines (without "\n" or a trailing "\r") and when they arrived.
    lines: Vec<(Instant, String)>,
    partial: Vec<u8>,
    eof: bool,
}

#[derive(Debug)]
struct Console {
    state: Mutex<ConsoleState>,
    cond: Condvar,
}

impl Console {
    fn feed(&self, data: &[u8]) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        for &b in data {
            if b == b'\n' {
                let mut line = std::mem::take(&mut st.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                st.lines
                    .push((now, String::from_utf8_lossy(&line).into_owned()));
            } else {
                st.partial.push(b);
            }
        }
        drop(st);
        self.cond.notify_all();
    }
}

/// PCI slot of the first NIC on bus 0. Fixed slots make NIC order (PCI scan
/// order) follow [`GuestBuilder::nic`] call order, whatever else is attached;
/// slots 0-1 are the host bridge and PIIX3 on `machine=pc`, 2 is left for
/// devices QEMU places itself (the disk).
const FIRST_NIC_SLOT: usize = 3;

/// Builder for [`QemuGuest`]; start with [`QemuGuest::builder`].
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    kernel: Option<PathBuf>,
    cmdline: String,
    memory_mib: u32,
    netns: Option<String>,
    /// (tap, MAC) per NIC, in PCI slot order.
    nics: Vec<(String, String)>,
    legacy_only: bool,
    disk: Option<PathBuf>,
    disk_writable: bool,
    extra: Vec<String>,
}

impl GuestBuilder {
    /// Kernel image (default: [`kernel_path`]).
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    /// Parameters for `-append` (QEMU prepends the kernel path; the kernel
    /// drops that first word).
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// Guest RAM in MiB (default 8).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Runs QEMU inside `ns` (via `ip netns exec`) even without a NIC.
    pub fn in_netns(mut self, ns: &TestNetns) -> Self {
        self.netns = Some(ns.name().to_string());
        self
    }

    /// Adds a virtio-net-pci NIC backed by tap `tap` (created beforehand
    /// with [`TestNetns::add_tap`]) with MAC `mac`; QEMU runs inside `ns`.
    /// The device is transitional (legacy + modern), as libvirt gives on
    /// `machine='pc'`, and without an option ROM.
    ///
    /// Call it again for more NICs. The n-th call's NIC (from 0) sits in PCI
    /// slot `3 + n` (`00:03.0`, `00:04.0`, ...), so PCI scan order, which
    /// the kernel and Solo5 number NICs by, is call order.
    ///
    /// # Panics
    /// If an earlier NIC was put in another namespace, or past the last PCI
    /// slot.
    pub fn nic(mut self, ns: &TestNetns, tap: &str, mac: &str) -> Self {
        if !self.nics.is_empty() {
            assert_eq!(
                self.netns.as_deref(),
                Some(ns.name()),
                "all NICs of a guest must be in the same namespace"
            );
        }
        assert!(
            FIRST_NIC_SLOT + self.nics.len() < 32,
            "no PCI slot left for another NIC"
        );
        self.netns = Some(ns.name().to_string());
        self.nics.push((tap.to_string(), mac.to_string()));
        self
    }

    /// Makes the NICs legacy-only (`disable-modern=on`) instead of transitional.
    pub fn legacy_only_nic(mut self, yes: bool) -> Self {
        self.legacy_only = yes;
        self
    }

    /// Attaches `path` as a raw virtio-blk disk (read-only).
    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disk = Some(path.into());
        self
    }

    /// Attaches `path` as a raw virtio-blk disk the guest may write.
    pub fn writable_disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disk = Some(path.into());
        self.disk_writable = true;
        self
    }

    /// Appends an extra raw QEMU argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// The full command line (program first) that [`spawn`](Self::spawn) runs.
    pub fn command_line(&self) -> Vec<String> {
        let kernel = self.kernel.clone().unwrap_or_else(kernel_path);
        let mut v: Vec<String> = Vec::new();
        if let Some(ns) = &self.netns {
            v.extend(["ip".into(), "netns".into(), "exec".into(), ns.clone()]);
        }
        v.push(qemu_binary().to_string_lossy().into_owned());
        for a in [
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-chardev",
            "stdio,id=con0,signal=off",
            "-serial",
            "chardev:con0",
        ] {
            v.push(a.into());
        }
        v.push("-m".into());
        v.push(self.memory_mib.to_string());
        v.push("-kernel".into());
        v.push(kernel.to_string_lossy().into_owned());
        v.push("-append".into());
        v.push(self.cmdline.clone());
        let modern = if self.legacy_only {
            ",disable-modern=on"
        } else {
            ""
        };
        for (i, (tap, mac)) in self.nics.iter().enumerate() {
            let slot = FIRST_NIC_SLOT + i;
            v.push("-netdev".into());
            v.push(format!(
                "tap,id=net{i},ifname={tap},script=no,downscript=no"
            ));
            v.push("-device".into());
            v.push(format!(
                "virtio-net-pci,netdev=net{i},mac={mac},addr={slot:#x},romfile={modern}"
            ));
        }
        if let Some(disk) = &self.disk {
            v.push("-drive".into());
            v.push(format!(
                "file={},if=none,id=disk0,format=raw,readonly={}",
                disk.display(),
                if self.disk_writable { "off" } else { "on" }
            ));
            v.push("-device".into());
            v.push("virtio-blk-pci,drive=disk0".into());
        }
        v.extend(self.extra.iter().cloned());
        v
    }

    /// Starts QEMU. Its stdout is the guest's COM1, captured line by line.
    ///
    /// # Panics
    /// If QEMU (or `ip`) cannot be started, or a netns is used without root.
    pub fn spawn(self) -> QemuGuest {
        if self.netns.is_some() {
            require_root();
        }
        let argv = self.command_line();
        let started = Instant::now();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", argv));
        let console = Arc::new(Console {
            state: Mutex::new(ConsoleState {
                lines: Vec::new(),
                partial: Vec::new(),
                eof: false,
            }),
            cond: Condvar::new(),
        });
        let mut stdout = child.stdout.take().expect("piped stdout");
        let c2 = Arc::clone(&console);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => c2.feed(&buf[..n]),
                }
            }
            let mut st = c2.state.lock().unwrap();
            if !st.partial.is_empty() {
                let line = String::from_utf8_lossy(&std::mem::take(&mut st.partial)).into_owned();
                st.lines.push((Instant::now(), line));
            }
            st.eof = true;
            drop(st);
            c2.cond.notify_all();
        });
        let stderr_buf = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let e2 = Arc::clone(&stderr_buf);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                e2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        QemuGuest {
            child,
            argv,
            started,
            console,
            stderr: stderr_buf,
            status: None,
        }
    }
}

/// A plain `qemu-system-x86_64 -machine pc -accel tcg` booting the test
/// kernel with `-kernel`/`-append`, console on stdout (COM1), optionally
/// inside a [`TestNetns`] with a tap NIC. Killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct QemuGuest {
    child: Child,
    argv: Vec<String>,
    started: Instant,
    console: Arc<Console>,
    stderr: Arc<Mutex<Vec<u8>>>,
    status: Option<ExitStatus>,
}

impl QemuGuest {
    /// A builder with defaults: [`kernel_path`], empty command line, 8 MiB,
    /// no NIC, no namespace.
    pub fn builder() -> GuestBuilder {
        GuestBuilder {
            kernel: None,
            cmdline: String::new(),
            memory_mib: 8,
            netns: None,
            nics: Vec::new(),
            legacy_only: false,
            disk: None,
            disk_writable: false,
            extra: Vec::new(),
        }
    }

    /// PID of the QEMU process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line QEMU was started with.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// When QEMU was spawned.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Waits until a console line starting with `prefix` has arrived (from
    /// the beginning of the console, not just new lines) and returns the
    /// first such line. `None` on timeout or if QEMU closed the console first.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> Option<String> {
        self.wait_for_line_timed(prefix, timeout).map(|(l, _)| l)
    }

    /// Like [`wait_for_line`](Self::wait_for_line), also returning how long
    /// after spawning QEMU the line was read from its stdout.
    pub fn wait_for_line_timed(
        &self,
        prefix: &str,
        timeout: Duration,
    ) -> Option<(String, Duration)> {
        let deadline = Instant::now() + timeout;
        let mut st = self.console.state.lock().unwrap();
        loop {
            if let Some((at, l)) = st.lines.iter().find(|(_, l)| l.starts_with(prefix)) {
                return Some((l.clone(), at.duration_since(self.started)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if st.eof || left.is_zero() {
                return None;
            }
            st = self.console.cond.wait_timeout(st, left).unwrap().0;
        }
    }

    /// All console lines whose text starts with `prefix`, so far.
    pub fn lines_with_prefix(&self, prefix: &str) -> Vec<String> {
        let st = self.console.state.lock().unwrap();
        st.lines
            .iter()
            .filter(|(_, l)| l.starts_with(prefix))
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Everything printed on the console so far ("\n"-separated).
    pub fn console(&self) -> String {
        let st = self.console.state.lock().unwrap();
        let mut s = String::new();
        for (_, l) in &st.lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str(&String::from_utf8_lossy(&st.partial));
        s
    }

    /// What QEMU wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits for QEMU to exit on its own; `None` if still running after
    /// `timeout`. Once it has exited, also waits (up to the same deadline) until
    /// its console has been read to the end, so that [`console`](Self::console)
    /// then holds every line: the reader thread may still be draining the pipe
    /// when the process is reaped (seen as a test missing its last lines under load).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                let mut st = self.console.state.lock().unwrap();
                while !st.eof {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    st = self.console.cond.wait_timeout(st, left).unwrap().0;
                }
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The exit status if QEMU has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Kills QEMU (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// A multi-line description (argv, console, stderr) for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "qemu: {}\n--- console ---\n{}\n--- stderr ---\n{}",
            self.argv.join(" "),
            self.console(),
            self.stderr()
        )
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        self.kill();
    }
}
