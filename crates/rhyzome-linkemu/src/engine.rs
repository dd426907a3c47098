//! The emulator's event loop: one thread, one `ppoll` over the NICs' UDP sockets (loopback,
//! and the address other hosts send to), the tap, the control socket and its connections,
//! with a timeout at the next queued frame's release. A datagram counts only when its source
//! address and port are those of a NIC of this network, arriving on that NIC's socket; any
//! other is dropped and counted (`rejected`).
//! A frame from a port meets that port's [`Link`] (its sender's conditions); when it passes,
//! the [`Switch`] picks the ports it goes to, minus partitions, and it is sent to each NIC's
//! UDP port (or written to the tap). With no conditions a frame is forwarded in the same
//! wake-up it arrived in, without a copy.
//!
//! A `put` on the control channel rebuilds the port table, reconfigures links whose
//! conditions or seed changed, writes the state file, and answers: it takes effect for the
//! next frame read.

use crate::link::{Admit, Link, Shaping};
use crate::protocol::{PortStats, Request, Response, Stats};
use crate::rng::Rng;
use crate::state::{NetworkState, StateError, HOST_PORT};
use crate::switch::{destination, source, PortId, Switch};
use crate::tap::{Tap, TapError};
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The largest frame read: QEMU sends at most a 64 KiB datagram.
const MAX_FRAME: usize = 65_536;
/// Frames read from one source per wake-up before the others get their turn.
const BURST: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("another emulator already answers on {0}")]
    AlreadyRunning(PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EngineError {
    let what = what.into();
    move |source| EngineError::Io { what, source }
}

struct Port {
    name: String,
    /// The NIC's UDP address; `None` for the tap.
    peer: Option<SocketAddrV4>,
    /// The NIC is on another host: its frames come and go through the remote socket.
    remote: bool,
    link: Link,
    delivered: u64,
    blocked: u64,
}

struct ControlClient {
    stream: UnixStream,
    pending: Vec<u8>,
}

pub struct Emulator {
    state_path: PathBuf,
    state: NetworkState,
    started: Instant,
    udp: UdpSocket,
    /// Bound to `remote_listen`, for NICs on other hosts.
    remote: Option<UdpSocket>,
    tap: Option<Tap>,
    control: UnixListener,
    clients: Vec<ControlClient>,
    ports: Vec<Port>,
    by_peer: HashMap<SocketAddrV4, PortId>,
    switch: Switch,
    scratch: Vec<PortId>,
    /// Datagrams from no NIC of this network (or on the wrong socket), dropped.
    rejected: u64,
}

impl Emulator {
    /// Reads the state file, binds the NICs' socket, makes the tap and opens the control
    /// socket. Refuses to start when another emulator answers on the control socket.
    pub fn start(state_path: &Path, control_path: &Path) -> Result<Emulator, EngineError> {
        let state = NetworkState::load(state_path)?;
        if UnixStream::connect(control_path).is_ok() {
            return Err(EngineError::AlreadyRunning(control_path.to_path_buf()));
        }
        let _ = std::fs::remove_file(control_path);
        let control = UnixListener::bind(control_path)
            .map_err(io(format!("bind {}", control_path.display())))?;
        // Whoever can connect can change every link of the network: the owner only.
        std::fs::set_permissions(
            control_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(io(format!("chmod {}", control_path.display())))?;
        control
            .set_nonblocking(true)
            .map_err(io("control socket"))?;
        let udp = bind(state.listen)?;
        let remote = state.remote_listen.map(bind).transpose()?;
        let tap = match &state.tap {
            Some(t) => Some(Tap::open(&t.name, t.address, t.prefix_len)?),
            None => None,
        };
        let mut emulator = Emulator {
            state_path: state_path.to_path_buf(),
            state: state.clone(),
            started: Instant::now(),
            udp,
            remote,
            tap,
            control,
            clients: Vec::new(),
            ports: Vec::new(),
            by_peer: HashMap::new(),
            switch: Switch::default(),
            scratch: Vec::new(),
            rejected: 0,
        };
        emulator.apply(state);
        Ok(emulator)
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Makes the port table, links and partitions those of `state`. A port keeps its queue
    /// and counters; its link is reconfigured (fresh generator) only when its conditions or
    /// the seed changed, so re-sending the same state changes nothing.
    fn apply(&mut self, state: NetworkState) {
        let seed_changed = state.seed != self.state.seed;
        let mut old: HashMap<String, Port> =
            self.ports.drain(..).map(|p| (p.name.clone(), p)).collect();
        let mut wanted: Vec<(String, Option<SocketAddrV4>, bool, Shaping)> = Vec::new();
        if let Some(tap) = &state.tap {
            wanted.push((
                HOST_PORT.to_string(),
                None,
                false,
                Shaping::from_conditions(&tap.conditions),
            ));
        }
        for (name, spec) in &state.ports {
            let address = spec.peer_address.unwrap_or(*state.listen.ip());
            wanted.push((
                name.clone(),
                Some(SocketAddrV4::new(address, spec.peer_port)),
                spec.peer_address.is_some(),
                Shaping::from_conditions(&spec.conditions),
            ));
        }
        let before: Vec<String> = old.keys().cloned().collect();
        for (name, peer, remote, shaping) in wanted {
            let rng = Rng::for_port(state.seed, &name);
            let port = match old.remove(&name) {
                Some(mut p) => {
                    if seed_changed || *p.link.shaping() != shaping {
                        p.link.reconfigure(shaping, rng);
                    }
                    p.peer = peer;
                    p.remote = remote;
                    p
                }
                None => Port {
                    name,
                    peer,
                    remote,
                    link: Link::new(shaping, rng),
                    delivered: 0,
                    blocked: 0,
                },
            };
            self.ports.push(port);
        }
        // Port numbers may have moved: learn the addresses again (a flood or two).
        if !old.is_empty() || before.len() != self.ports.len() {
            self.switch.forget_all();
        }
        self.by_peer = self
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.peer.map(|a| (a, i)))
            .collect();
        let ids: HashMap<&str, PortId> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        let resolve = |names: &[String]| -> Vec<PortId> {
            names
                .iter()
                .filter_map(|n| ids.get(n.as_str()).copied())
                .collect()
        };
        let partitions: Vec<(Vec<PortId>, Vec<PortId>)> = state
            .partitions
            .iter()
            .map(|p| (resolve(&p.a), resolve(&p.b)))
            .collect();
        self.switch.set_partitions(&partitions);
        self.state = state;
    }

    /// Runs until the process is killed.
    pub fn run(&mut self) -> Result<(), EngineError> {
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let now = self.now();
            let timeout = self
                .ports
                .iter()
                .filter_map(|p| p.link.next_due())
                .min()
                .map(|due| due.saturating_sub(now));
            let mut fds = vec![
                pollfd(self.udp.as_raw_fd()),
                pollfd(self.control.as_raw_fd()),
            ];
            let remote_fd = self.remote.as_ref().map(|r| {
                fds.push(pollfd(r.as_raw_fd()));
                fds.len() - 1
            });
            let tap_fd = self.tap.as_ref().map(|t| {
                fds.push(pollfd(t.fd()));
                fds.len() - 1
            });
            let first_client = fds.len();
            fds.extend(self.clients.iter().map(|c| pollfd(c.stream.as_raw_fd())));
            let ts = timeout.map(|ns| libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            });
            // SAFETY: `fds` is a live array of pollfd; `ts` outlives the call.
            let n = unsafe {
                libc::ppoll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    ts.as_ref().map_or(std::ptr::null(), |t| t as *const _),
                    std::ptr::null(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(EngineError::Io {
                    what: "ppoll".into(),
                    source: e,
                });
            }
            if fds[0].revents != 0 {
                self.read_nics(false, &mut buf);
            }
            if remote_fd.is_some_and(|i| fds[i].revents != 0) {
                self.read_nics(true, &mut buf);
            }
            if tap_fd.is_some_and(|i| fds[i].revents != 0) {
                self.read_tap(&mut buf);
            }
            let readable: Vec<usize> = fds[first_client..]
                .iter()
                .enumerate()
                .filter(|(_, f)| f.revents != 0)
                .map(|(i, _)| i)
                .collect();
            self.serve_clients(&readable);
            if fds[1].revents != 0 {
                self.accept_clients();
            }
            self.release_due();
        }
    }

    /// Reads the loopback socket, or with `remote` the one other hosts send to.
    fn read_nics(&mut self, remote: bool, buf: &mut [u8]) {
        for _ in 0..BURST {
            let socket = match (remote, &self.remote) {
                (false, _) => &self.udp,
                (true, Some(socket)) => socket,
                (true, None) => return,
            };
            match socket.recv_from(buf) {
                Ok((len, std::net::SocketAddr::V4(from))) => {
                    // Only the NICs of this network may send, each on its own socket:
                    // anything else is dropped, not switched.
                    match self.by_peer.get(&from) {
                        Some(&port) if self.ports[port].remote == remote => {
                            let now = self.now();
                            self.ingress(port, &buf[..len], now);
                        }
                        _ => self.rejected += 1,
                    }
                }
                Ok(_) => self.rejected += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive");
                    return;
                }
            }
        }
    }

    fn read_tap(&mut self, buf: &mut [u8]) {
        for _ in 0..BURST {
            let Some(tap) = &self.tap else { return };
            match tap.read(buf) {
                Ok(len) => {
                    let now = self.now();
                    self.ingress(0, &buf[..len], now);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "tap read");
                    return;
                }
            }
        }
    }

    /// A frame `from` sent: learn its source, apply the sender's conditions, and forward it
    /// at once when nothing delays it.
    fn ingress(&mut self, from: PortId, frame: &[u8], now: u64) {
        if frame.len() < 14 {
            return;
        }
        if let Some(src) = source(frame) {
            self.switch.learn(src, from, now);
        }
        if self.ports[from].link.admit(now, frame) == Admit::Now {
            self.forward(from, frame, now);
        }
    }

    fn forward(&mut self, from: PortId, frame: &[u8], now: u64) {
        let Some(dst) = destination(frame) else {
            return;
        };
        let mut out = std::mem::take(&mut self.scratch);
        let blocked = self
            .switch
            .destinations(from, dst, self.ports.len(), now, &mut out);
        self.ports[from].blocked += blocked as u64;
        for &to in &out {
            let port = &self.ports[to];
            let sent = match (port.peer, port.remote, &self.remote) {
                (Some(peer), false, _) => self.udp.send_to(frame, peer).is_ok(),
                (Some(peer), true, Some(remote)) => remote.send_to(frame, peer).is_ok(),
                (Some(_), true, None) => false,
                (None, ..) => self.tap.as_ref().is_some_and(|t| t.write(frame).is_ok()),
            };
            if sent {
                self.ports[to].delivered += 1;
            }
        }
        self.scratch = out;
    }

    fn release_due(&mut self) {
        let now = self.now();
        for from in 0..self.ports.len() {
            while let Some(frame) = self.ports[from].link.pop_due(now) {
                self.forward(from, &frame, now);
            }
        }
    }

    fn accept_clients(&mut self) {
        while let Ok((stream, _)) = self.control.accept() {
            if stream.set_nonblocking(true).is_ok() {
                self.clients.push(ControlClient {
                    stream,
                    pending: Vec::new(),
                });
            }
        }
    }

    /// Reads what the readable clients sent; answers each complete line; drops closed ones.
    fn serve_clients(&mut self, readable: &[usize]) {
        let mut closed = Vec::new();
        for &i in readable {
            let mut chunk = [0u8; 4096];
            loop {
                match std::io::Read::read(&mut self.clients[i].stream, &mut chunk) {
                    Ok(0) => {
                        closed.push(i);
                        break;
                    }
                    Ok(n) => self.clients[i].pending.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed.push(i);
                        break;
                    }
                }
            }
            // A request larger than this is no state the daemon sends.
            if self.clients[i].pending.len() > 16 << 20 {
                closed.push(i);
                continue;
            }
            while let Some(end) = self.clients[i].pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.clients[i].pending.drain(..=end).collect();
                let response = match serde_json::from_slice::<Request>(&line) {
                    Ok(request) => self.handle(request),
                    Err(e) => Response {
                        error: Some(format!("bad request: {e}")),
                        ..Default::default()
                    },
                };
                let mut text = serde_json::to_vec(&response).expect("response serialises");
                text.push(b'\n');
                let stream = &mut self.clients[i].stream;
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(1)));
                if stream.write_all(&text).is_err() {
                    closed.push(i);
                }
                let _ = stream.set_nonblocking(true);
            }
        }
        closed.sort_unstable();
        closed.dedup();
        for i in closed.into_iter().rev() {
            self.clients.swap_remove(i);
        }
    }

    fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Get => Response {
                ok: true,
                state: Some(self.state.clone()),
                ..Default::default()
            },
            Request::Stats => Response {
                ok: true,
                stats: Some(self.stats()),
                ..Default::default()
            },
            Request::Put { state } => match self.put(state) {
                Ok(()) => Response {
                    ok: true,
                    state: Some(self.state.clone()),
                    ..Default::default()
                },
                Err(e) => Response {
                    error: Some(e),
                    ..Default::default()
                },
            },
        }
    }

    fn put(&mut self, state: NetworkState) -> Result<(), String> {
        state.check().map_err(|e| e.to_string())?;
        if state.listen != self.state.listen
            || state
                .tap
                .as_ref()
                .map(|t| (&t.name, t.address, t.prefix_len))
                != self
                    .state
                    .tap
                    .as_ref()
                    .map(|t| (&t.name, t.address, t.prefix_len))
        {
            return Err(
                "the listening address and the tap are fixed for the emulator's life; \
                        start a new emulator to change them"
                    .into(),
            );
        }
        // The remote address may come and go (the first host with guests on this network, a
        // new LinkEmulatorAddress): bound before anything is saved, so a failure changes
        // nothing.
        let remote = if state.remote_listen == self.state.remote_listen {
            None
        } else {
            Some(
                state
                    .remote_listen
                    .map(bind)
                    .transpose()
                    .map_err(|e| e.to_string())?,
            )
        };
        // Persist first: an answer of `ok` means a restart keeps it.
        state.save(&self.state_path).map_err(|e| e.to_string())?;
        if let Some(remote) = remote {
            self.remote = remote;
        }
        tracing::info!(
            ports = state.ports.len(),
            partitions = state.partitions.len(),
            "state applied"
        );
        self.apply(state);
        Ok(())
    }

    fn stats(&self) -> Stats {
        Stats {
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            addresses: self.switch.addresses(),
            rejected: self.rejected,
            ports: self
                .ports
                .iter()
                .map(|p| {
                    let (queued_frames, queued_bytes) = p.link.queued();
                    (
                        p.name.clone(),
                        PortStats {
                            link: p.link.counters,
                            delivered: p.delivered,
                            blocked_by_partition: p.blocked,
                            queued_frames,
                            queued_bytes,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A NICs' socket, non-blocking, with room for bursts.
fn bind(address: SocketAddrV4) -> Result<UdpSocket, EngineError> {
    let udp = UdpSocket::bind(address).map_err(io(format!("bind {address}")))?;
    udp.set_nonblocking(true).map_err(io("udp socket"))?;
    enlarge_buffers(&udp);
    Ok(udp)
}

/// Room for bursts: with the default 208 KiB a burst of small frames arriving while the
/// emulator waits for a core (two cores shared by many guests) is dropped by the kernel
/// before the emulator sees it. Best effort: `SO_RCVBUFFORCE` needs CAP_NET_ADMIN, and
/// without it the kernel's `rmem_max` caps `SO_RCVBUF`.
fn enlarge_buffers(udp: &UdpSocket) {
    const BYTES: libc::c_int = 4 << 20;
    for option in [
        libc::SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
        libc::SO_SNDBUFFORCE,
        libc::SO_SNDBUF,
    ] {
        // SAFETY: setsockopt with a c_int value of the right size on a socket we own.
        unsafe {
            libc::setsockopt(
                udp.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &BYTES as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
