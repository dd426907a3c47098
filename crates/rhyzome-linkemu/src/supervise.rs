//! Starting, adopting, reviving and stopping emulators, for the daemon. Each emulated network
//! has a directory of its own (`<dir>/<network>/`: `state.json`, `control.sock`, `log`); the
//! control socket in it is the proof that the process answering there is one this daemon
//! started, so nothing else is ever signalled.
//!
//! An emulator runs in a session of its own (`setsid` before exec), so it outlives the
//! daemon: traffic flows while the daemon restarts or is upgraded. A daemon that starts
//! finds its emulators by their sockets and adopts them; one that finds an emulator dead
//! starts it again from the state file the emulator itself kept. Children this process
//! started are reaped by [`Supervisor::reap`]; adopted ones belong to init.
//!
//! Every call blocks (process start, socket I/O with short timeouts): the daemon calls them
//! off its async runtime. Calls on different networks may run in parallel; calls that start
//! or stop an emulator take that network's lock here, so the daemon's once-a-second revival
//! never races a stop (it would start an emulator in the directory being removed).

use crate::protocol::{call, Request, Stats};
use crate::state::{NetworkState, StateError};
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a started emulator has to open its control socket. Generous: a test bed's
/// start-up keeps two cores busy with TCG guests, and a process start then waits its turn.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a control request may take: the emulator answers between two frames, but it is
/// one thread among many guests' on a loaded host. A dead emulator refuses the connection at
/// once, so this bounds only a hung one.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("link emulator of network {network}: {what}: {source}")]
    Io {
        network: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("link emulator of network {network} refused the state: {message}")]
    Refused { network: String, message: String },
    #[error("link emulator of network {network} did not open its control socket within {START_TIMEOUT:?}; see {log}")]
    NoStart { network: String, log: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// What [`Supervisor::ensure`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// An emulator already answered (after a daemon restart, an adopted one); it now has the
    /// state.
    Running { pid: u32 },
    /// None answered; one was started.
    Started { pid: u32 },
}

impl Ensured {
    pub fn pid(self) -> u32 {
        match self {
            Ensured::Running { pid } | Ensured::Started { pid } => pid,
        }
    }
}

pub struct Supervisor {
    dir: PathBuf,
    binary: PathBuf,
    netns: Option<PathBuf>,
    children: Mutex<HashMap<String, Child>>,
    /// One lock per network, held by `ensure`, `revive` and `stop`.
    network_locks: Mutex<HashMap<String, std::sync::Arc<Mutex<()>>>>,
}

impl Supervisor {
    /// Emulators under `dir`, run from `binary`, inside the network namespace `netns` (where
    /// libvirt runs QEMU) when given.
    pub fn new(dir: PathBuf, binary: PathBuf, netns: Option<PathBuf>) -> Supervisor {
        Supervisor {
            dir,
            binary,
            netns,
            children: Mutex::new(HashMap::new()),
            network_locks: Mutex::new(HashMap::new()),
        }
    }

    fn network_lock(&self, network: &str) -> std::sync::Arc<Mutex<()>> {
        self.network_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(network.to_string())
            .or_default()
            .clone()
    }

    pub fn network_dir(&self, network: &str) -> PathBuf {
        self.dir.join(network)
    }

    fn control(&self, network: &str) -> PathBuf {
        self.network_dir(network).join("control.sock")
    }

    fn state_file(&self, network: &str) -> PathBuf {
        self.network_dir(network).join("state.json")
    }

    fn log_file(&self, network: &str) -> PathBuf {
        self.network_dir(network).join("log")
    }

    fn io(network: &str, what: &'static str) -> impl FnOnce(std::io::Error) -> SuperviseError {
        let network = network.to_string();
        move |source| SuperviseError::Io {
            network,
            what,
            source,
        }
    }

    fn request(
        &self,
        network: &str,
        request: &Request,
    ) -> Result<crate::protocol::Response, SuperviseError> {
        let mut stream =
            UnixStream::connect(self.control(network)).map_err(Self::io(network, "connect"))?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(CALL_TIMEOUT)))
            .map_err(Self::io(network, "socket timeout"))?;
        call(&mut stream, request).map_err(Self::io(network, "control request"))
    }

    /// The running emulator's counters, or an error when none answers.
    pub fn stats(&self, network: &str) -> Result<Stats, SuperviseError> {
        let r = self.request(network, &Request::Stats)?;
        r.stats.ok_or_else(|| SuperviseError::Refused {
            network: network.into(),
            message: r.error.unwrap_or_else(|| "no statistics".into()),
        })
    }

    /// The state the running emulator applies.
    pub fn state(&self, network: &str) -> Result<NetworkState, SuperviseError> {
        let r = self.request(network, &Request::Get)?;
        r.state.ok_or_else(|| SuperviseError::Refused {
            network: network.into(),
            message: r.error.unwrap_or_else(|| "no state".into()),
        })
    }

    fn put(&self, network: &str, state: &NetworkState) -> Result<(), SuperviseError> {
        let r = self.request(
            network,
            &Request::Put {
                state: state.clone(),
            },
        )?;
        if r.ok {
            Ok(())
        } else {
            Err(SuperviseError::Refused {
                network: network.into(),
                message: r.error.unwrap_or_default(),
            })
        }
    }

    /// Makes the emulator of `network` run with `state`: gives it to the one that answers,
    /// or writes it and starts one.
    pub fn ensure(&self, network: &str, state: &NetworkState) -> Result<Ensured, SuperviseError> {
        let lock = self.network_lock(network);
        let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(stats) = self.stats(network) {
            self.put(network, state)?;
            return Ok(Ensured::Running { pid: stats.pid });
        }
        std::fs::create_dir_all(self.network_dir(network))
            .map_err(Self::io(network, "state directory"))?;
        state.save(&self.state_file(network))?;
        let pid = self.spawn(network)?;
        Ok(Ensured::Started { pid })
    }

    /// Starts the emulator again from its own state file when it does not answer. Returns
    /// the new pid when it had to, `None` when it was alive.
    pub fn revive(&self, network: &str) -> Result<Option<u32>, SuperviseError> {
        let lock = self.network_lock(network);
        let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
        // Stopped (its directory removed) since the caller listed it: nothing to revive.
        if self.stats(network).is_ok() || !self.state_file(network).exists() {
            return Ok(None);
        }
        self.reap();
        self.spawn(network).map(Some)
    }

    fn spawn(&self, network: &str) -> Result<u32, SuperviseError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(network))
            .map_err(Self::io(network, "log file"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("run")
            .arg("--state")
            .arg(self.state_file(network))
            .arg("--control")
            .arg(self.control(network));
        if let Some(netns) = &self.netns {
            cmd.arg("--netns").arg(netns);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(Self::io(network, "log file"))?)
            .stderr(log);
        // SAFETY: setsid is async-signal-safe; it only detaches the child from the daemon's
        // session and process group, so signals to the daemon's group do not reach it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(Self::io(network, "start"))?;
        let pid = child.id();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.stats(network).is_ok() {
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                return Err(SuperviseError::NoStart {
                    network: network.into(),
                    log: self.log_file(network).display().to_string(),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SuperviseError::NoStart {
                    network: network.into(),
                    log: self.log_file(network).display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::info!(network, pid, "link emulator started");
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(network.to_string(), child);
        Ok(pid)
    }

    /// Collects the exit status of emulators this process started that have ended, so they
    /// do not linger as zombies.
    pub fn reap(&self) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|_, child| !matches!(child.try_wait(), Ok(Some(_))));
    }

    /// Stops the emulator of `network` (the pid its own control socket reports) and removes
    /// its directory. Nothing answering is not an error.
    pub fn stop(&self, network: &str) -> Result<(), SuperviseError> {
        let lock = self.network_lock(network);
        let _one_at_a_time = lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(stats) = self.stats(network) {
            // SAFETY: plain kill(2) of the process that answered on our own socket.
            unsafe { libc::kill(stats.pid as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.stats(network).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(mut child) = self
            .children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(network)
        {
            let _ = child.wait();
        }
        match std::fs::remove_dir_all(self.network_dir(network)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Self::io(network, "remove directory")(e))
            }
            _ => Ok(()),
        }
    }

    /// The networks that have an emulator directory here.
    pub fn known(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }
}
