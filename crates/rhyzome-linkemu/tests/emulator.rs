//! The emulator binary on loopback, with UDP sockets standing in for QEMU's NICs (exactly
//! what QEMU's `-netdev socket,udp=` does: one Ethernet frame per datagram): switching,
//! run-time changes, partitions, the state file across a kill, refusal of a second
//! emulator on the same control socket, and NICs of other hosts (another loopback address
//! stands in for the network between hosts) heard only from their own address and port.

use rhyzome_api::LinkConditions;
use rhyzome_linkemu::protocol::{call, Request, Response};
use rhyzome_linkemu::state::{NetworkState, Partition, PortSpec};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BROADCAST: [u8; 6] = [0xff; 6];

struct Nic {
    sock: UdpSocket,
    mac: [u8; 6],
    /// The emulator's address this NIC sends to: 127.0.0.1, or its remote address when the
    /// NIC stands in for one on another host.
    emulator: Ipv4Addr,
}

impl Nic {
    fn new(n: u8) -> Nic {
        Nic::at(n, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
    }

    /// A NIC with address `own` that sends to the emulator at `emulator`.
    fn at(n: u8, own: Ipv4Addr, emulator: Ipv4Addr) -> Nic {
        let sock = UdpSocket::bind((own, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        Nic {
            sock,
            mac: [2, 0, 0, 0, 0, n],
            emulator,
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    fn send(&self, emulator: u16, dst: [u8; 6], tag: u32) {
        let mut frame = Vec::with_capacity(64);
        frame.extend_from_slice(&dst);
        frame.extend_from_slice(&self.mac);
        frame.extend_from_slice(&[0x88, 0xb5]);
        frame.extend_from_slice(&tag.to_be_bytes());
        frame.resize(64, 0);
        self.sock
            .send_to(&frame, (self.emulator, emulator))
            .unwrap();
    }

    /// The tag of the next frame within the read timeout.
    fn recv(&self) -> Option<u32> {
        let mut buf = [0u8; 2048];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        assert!(n >= 18);
        Some(u32::from_be_bytes(buf[14..18].try_into().unwrap()))
    }

    fn drain(&self) {
        self.sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        while self.sock.recv_from(&mut buf).is_ok() {}
        self.sock.set_nonblocking(false).unwrap();
    }
}

struct Emulator {
    child: Child,
    state: PathBuf,
    control: PathBuf,
}

impl Emulator {
    fn start(dir: &Path) -> Emulator {
        let state = dir.join("net.json");
        let control = dir.join("net.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_rhyzome-linkemu"))
            .args(["run", "--state"])
            .arg(&state)
            .arg("--control")
            .arg(&control)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&control).is_err() {
            assert!(
                Instant::now() < deadline,
                "the emulator did not open its control socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Emulator {
            child,
            state,
            control,
        }
    }

    fn call(&self, request: &Request) -> Response {
        let mut s = UnixStream::connect(&self.control).unwrap();
        call(&mut s, request).unwrap()
    }

    fn put(&self, state: &NetworkState) {
        let r = self.call(&Request::Put {
            state: state.clone(),
        });
        assert!(r.ok, "{:?}", r.error);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn state_of(listen: u16, nics: &[(&str, &Nic)]) -> NetworkState {
    NetworkState {
        listen: format!("127.0.0.1:{listen}").parse().unwrap(),
        remote_listen: None,
        tap: None,
        seed: 1,
        ports: nics
            .iter()
            .map(|(name, nic)| {
                (
                    name.to_string(),
                    PortSpec {
                        peer_port: nic.port(),
                        peer_address: None,
                        conditions: LinkConditions::default(),
                    },
                )
            })
            .collect(),
        partitions: Vec::new(),
    }
}

/// One-way time of a frame from `a` to `b`.
fn one_way(listen: u16, a: &Nic, b: &Nic, tag: u32) -> Duration {
    b.drain();
    let t = Instant::now();
    a.send(listen, b.mac, tag);
    loop {
        match b.recv() {
            Some(got) if got == tag => return t.elapsed(),
            Some(_) => continue,
            None => panic!("frame {tag} did not arrive"),
        }
    }
}

#[test]
fn switches_shapes_partitions_and_restores_its_state_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let (n1, n2, n3) = (Nic::new(1), Nic::new(2), Nic::new(3));
    let mut state = state_of(listen, &[("n1", &n1), ("n2", &n2), ("n3", &n3)]);
    state.save(&dir.path().join("net.json")).unwrap();
    let emulator = Emulator::start(dir.path());
    // Whoever can connect can change every link: the control socket is the owner's only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&emulator.control).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Flooded until learned, then unicast to the one port.
    n1.send(listen, BROADCAST, 1);
    assert_eq!((n2.recv(), n3.recv()), (Some(1), Some(1)));
    n2.send(listen, n1.mac, 2);
    assert_eq!(n1.recv(), Some(2));
    assert_eq!(n3.recv(), None, "a learned unicast frame is not flooded");
    // A sender that is no port of the network is ignored.
    let stranger = Nic::new(9);
    stranger.send(listen, BROADCAST, 3);
    assert_eq!(n1.recv(), None);

    // A run-time change: the next frame after the answer already carries the latency.
    let base = one_way(listen, &n1, &n2, 10);
    assert!(base < Duration::from_millis(20), "{base:?}");
    state.ports.get_mut("n1").unwrap().conditions = LinkConditions {
        latency_ms: Some(50.0),
        ..Default::default()
    };
    emulator.put(&state);
    let shaped = one_way(listen, &n1, &n2, 11);
    assert!(
        shaped >= Duration::from_millis(50) && shaped < Duration::from_millis(80),
        "{shaped:?}"
    );
    // Only what n1 sends is delayed.
    assert!(one_way(listen, &n2, &n1, 12) < Duration::from_millis(20));

    // A partition between {n1} and {n2}: cut both ways, n3 still reachable.
    state.partitions = vec![Partition {
        a: vec!["n1".into()],
        b: vec!["n2".into()],
    }];
    emulator.put(&state);
    n2.send(listen, BROADCAST, 20);
    assert_eq!((n1.recv(), n3.recv()), (None, Some(20)));
    n1.send(listen, n2.mac, 21);
    assert_eq!(n2.recv(), None);
    let stats = emulator.call(&Request::Stats).stats.unwrap();
    assert!(stats.ports["n2"].blocked_by_partition >= 1, "{stats:?}");

    // Killed: a new emulator restores the latency and the partition from the state file.
    drop(emulator);
    let emulator = Emulator::start(dir.path());
    assert_eq!(emulator.call(&Request::Get).state.unwrap(), state);
    n3.send(listen, BROADCAST, 30); // let it learn n3 again
    assert_eq!(n1.recv(), Some(30));
    n2.send(listen, BROADCAST, 31);
    assert_eq!(n1.recv(), None, "the partition survived the restart");
    let shaped = one_way(listen, &n1, &n3, 32);
    assert!(shaped >= Duration::from_millis(50), "{shaped:?}");

    // Heal.
    state.partitions.clear();
    emulator.put(&state);
    n2.drain();
    n2.send(listen, BROADCAST, 40);
    assert_eq!(n1.recv(), Some(40));

    // A second emulator on the same control socket refuses to start.
    let second = Command::new(env!("CARGO_BIN_EXE_rhyzome-linkemu"))
        .args(["run", "--state"])
        .arg(&emulator.state)
        .arg("--control")
        .arg(&emulator.control)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already answers"));

    // A bad state is refused and changes nothing.
    let mut bad = state.clone();
    bad.partitions = vec![Partition {
        a: vec!["nobody".into()],
        b: vec!["n1".into()],
    }];
    let r = emulator.call(&Request::Put { state: bad });
    assert!(!r.ok && r.error.unwrap().contains("nobody"));
    assert_eq!(NetworkState::load(&emulator.state).unwrap(), state);
}

#[test]
fn loss_with_a_seed_drops_the_same_frames_twice() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let (n1, n2) = (Nic::new(1), Nic::new(2));
    let mut state = state_of(listen, &[("n1", &n1), ("n2", &n2)]);
    state.seed = 1234;
    state.save(&dir.path().join("net.json")).unwrap();
    let emulator = Emulator::start(dir.path());
    n2.send(listen, BROADCAST, 0);
    assert_eq!(n1.recv(), Some(0));
    n2.sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    let run = |state: &mut NetworkState| -> Vec<u32> {
        // Re-applying the conditions restarts the link's generator.
        state.ports.get_mut("n1").unwrap().conditions = LinkConditions::default();
        emulator.put(state);
        state.ports.get_mut("n1").unwrap().conditions = LinkConditions {
            loss_percent: Some(30.0),
            ..Default::default()
        };
        emulator.put(state);
        for tag in 1..=200 {
            n1.send(listen, n2.mac, tag);
        }
        let mut got = Vec::new();
        while let Some(tag) = n2.recv() {
            got.push(tag);
        }
        got
    };
    let first = run(&mut state);
    let lost = 200 - first.len();
    assert!((40..=80).contains(&lost), "{lost} of 200 lost");
    assert_eq!(
        run(&mut state),
        first,
        "the same seed drops the same frames"
    );
}

#[test]
fn a_nic_on_another_host_is_heard_only_from_its_own_address_on_the_remote_socket() {
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let here = Nic::new(1);
    // 127.0.0.2 is the controller's address between hosts, 127.0.0.3 the other host's.
    let (controller, host_b) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let there = Nic::at(2, host_b, controller);
    let state = state_of(listen, &[("here", &here)]);
    state.save(&dir.path().join("net.json")).unwrap();
    let emulator = Emulator::start(dir.path());

    // A remote port needs the remote socket; the first put that brings both binds it.
    let mut with_remote = state_of(listen, &[("here", &here), ("there", &there)]);
    with_remote.ports.get_mut("there").unwrap().peer_address = Some(host_b);
    let refused = emulator.call(&Request::Put {
        state: with_remote.clone(),
    });
    assert!(
        !refused.ok,
        "a remote port without a remote listening address"
    );
    with_remote.remote_listen = Some(SocketAddrV4::new(controller, listen));
    emulator.put(&with_remote);

    // Both ways across "hosts"; what reaches the remote NIC comes from the remote socket.
    here.send(listen, BROADCAST, 1);
    let mut buf = [0u8; 2048];
    let (_, from) = there
        .sock
        .recv_from(&mut buf)
        .expect("flooded to the remote NIC");
    assert_eq!(from, std::net::SocketAddr::from((controller, listen)));
    there.send(listen, here.mac, 2);
    assert_eq!(here.recv(), Some(2));

    // The remote NIC's port from another address, and its own address on the loopback
    // socket, are both dropped and counted.
    let impostor = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 4), there.port())).unwrap();
    let stats = |e: &Emulator| e.call(&Request::Stats).stats.unwrap();
    let before = stats(&emulator).rejected;
    let mut frame = vec![0u8; 64];
    frame[..6].copy_from_slice(&here.mac);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    impostor.send_to(&frame, (controller, listen)).unwrap();
    there.sock.send_to(&frame, ("127.0.0.1", listen)).unwrap();
    assert_eq!(here.recv(), None, "neither impostor frame is switched");
    assert_eq!(stats(&emulator).rejected, before + 2);
    assert_eq!(stats(&emulator).ports["there"].link.offered, 1);

    // The remote address is persisted: a restarted emulator binds it again from its file.
    drop(emulator);
    let emulator = Emulator::start(dir.path());
    there.send(listen, here.mac, 3);
    assert_eq!(here.recv(), Some(3));
    drop(emulator);
}
