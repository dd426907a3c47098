//! Readiness probes of test-bed nodes over the network (`ready = { udp = {...} }` and
//! `ready = { ping = true }`): one UDP request and its answer, or one ICMP echo.
//!
//! Where the probe is sent from: a guest's address is on a bridge or an emulator's tap inside
//! the network namespace where libvirt runs QEMU, which may not be the daemon's. When the
//! configuration names that namespace (`LinkEmulatorNetns`, the same one the link emulators
//! run in), each probe's socket is made by a short-lived thread that first enters it
//! (`setns` changes only the calling thread's namespace, and a socket stays in the namespace
//! it was made in), so the daemon itself never leaves its own. Without it, probes go out from
//! the daemon's own namespace.
//!
//! Concurrency: every call blocks for at most its timeout; callers run them on the blocking
//! pool. The ICMP probe needs a raw socket (root or CAP_NET_RAW), like the daemon's libvirt
//! access does in practice.

use rhyzome_api::testbed::UdpProbe;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot enter network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("probe socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Makes a socket with `make`, inside `netns` when given.
fn socket_in(
    netns: Option<&Path>,
    make: impl FnOnce() -> std::io::Result<OwnedFd> + Send + 'static,
) -> Result<OwnedFd, ProbeError> {
    let Some(path) = netns.map(Path::to_path_buf) else {
        return Ok(make()?);
    };
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).map_err(|source| ProbeError::Netns {
            path: path.clone(),
            source,
        })?;
        // SAFETY: setns on a descriptor we hold; it affects this thread only, which ends here.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(ProbeError::Netns {
                path,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(make()?)
    })
    .join()
    .map_err(|_| ProbeError::Socket(std::io::Error::other("probe thread panicked")))?
}

fn raw_socket(domain: i32, kind: i32, protocol: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `probe.send` to `addr:probe.port` and waits up to `timeout` for a datagram from
/// there containing `probe.expect`.
pub fn udp(
    netns: Option<&Path>,
    addr: Ipv4Addr,
    probe: &UdpProbe,
    timeout: Duration,
) -> Result<bool, ProbeError> {
    let fd = socket_in(netns, || {
        raw_socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP)
    })?;
    let socket = UdpSocket::from(fd);
    let target = SocketAddrV4::new(addr, probe.port);
    socket.send_to(probe.send.as_bytes(), target)?;
    answered(&socket, timeout, |reply, from| {
        from == target.into() && String::from_utf8_lossy(reply).contains(&probe.expect)
    })
}

/// Reads datagrams from `socket` until `accept` takes one (`true`) or `timeout` passes
/// (`false`). An ICMP error queued for an earlier datagram ("connection refused") means no
/// answer yet.
fn answered(
    socket: &UdpSocket,
    timeout: Duration,
    mut accept: impl FnMut(&[u8], std::net::SocketAddr) -> bool,
) -> Result<bool, ProbeError> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if accept(&buf[..n], from) {
                    return Ok(true);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                break
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// The Internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one ICMP echo request to `addr` and waits up to `timeout` for its reply.
pub fn ping(netns: Option<&Path>, addr: Ipv4Addr, timeout: Duration) -> Result<bool, ProbeError> {
    let fd = socket_in(netns, || {
        raw_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)
    })?;
    // A raw socket's send_to and recv_from are those of a datagram socket; UdpSocket is
    // only the safe wrapper around the descriptor here.
    let socket = UdpSocket::from(fd);
    let id = (std::process::id() as u16) ^ (u32::from(addr) as u16);
    let seq: u16 = rand_seq();
    let mut packet = vec![8u8, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(b"rhyzome-ready");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    socket.send_to(&packet, SocketAddrV4::new(addr, 0))?;
    answered(&socket, timeout, |packet, from| {
        if from.ip() != std::net::IpAddr::V4(addr) || packet.is_empty() {
            return false;
        }
        // A raw IPv4 socket receives the IP header first.
        let header = usize::from(packet[0] & 0x0f) * 4;
        let icmp = packet.get(header..).unwrap_or(&[]);
        icmp.len() >= 8
            && icmp[0] == 0
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
    })
}

fn rand_seq() -> u16 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos() as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_the_internet_checksum() {
        // RFC 1071's example words sum to 0xddf2 before the complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn a_udp_probe_on_loopback_reads_the_answer_and_times_out_without_one() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let answer = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"status");
            server.send_to(b"name=x uptime_ms=5", from).unwrap();
        });
        let probe = UdpProbe {
            port,
            send: "status".into(),
            expect: "uptime_ms=".into(),
        };
        assert!(udp(None, Ipv4Addr::LOCALHOST, &probe, Duration::from_secs(5)).unwrap());
        answer.join().unwrap();
        // Nobody answers now: false after the timeout, not an error.
        assert!(!udp(
            None,
            Ipv4Addr::LOCALHOST,
            &probe,
            Duration::from_millis(200)
        )
        .unwrap());
    }

    #[test]
    fn ping_answers_on_loopback() {
        assert!(ping(None, Ipv4Addr::LOCALHOST, Duration::from_secs(2)).unwrap());
    }
}
