//! The host-side port: a tap device (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`) carrying the
//! network's gateway address, so the host and tests reach guests at their addresses as on a
//! plain bridge. It lives as long as the emulator holds it (not persistent): a dead emulator
//! takes its tap with it, and a restarted one makes it again. Needs CAP_NET_ADMIN in the
//! network namespace the emulator runs in.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("tap {name}: {what}: {source}")]
    Os {
        name: String,
        what: &'static str,
        source: std::io::Error,
    },
}

pub struct Tap {
    file: File,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct IfReqAddr {
    name: [u8; libc::IFNAMSIZ],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

fn ifname(name: &str) -> [u8; libc::IFNAMSIZ] {
    let mut out = [0u8; libc::IFNAMSIZ];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

impl Tap {
    /// Creates (or attaches to) the tap `name`, gives it `address/prefix_len` and brings it up.
    pub fn open(name: &str, address: Ipv4Addr, prefix_len: u8) -> Result<Tap, TapError> {
        let os = |what, source| TapError::Os {
            name: name.to_string(),
            what,
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags_nonblocking()
            .open("/dev/net/tun")
            .map_err(|e| os("open /dev/net/tun", e))?;
        let mut req = IfReqFlags {
            name: ifname(name),
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is laid out as.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(os("TUNSETIFF", std::io::Error::last_os_error()));
        }
        // SAFETY: a plain socket call; the descriptor is owned at once.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os("socket", std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len))
        };
        for (what, request, ip) in [
            ("SIOCSIFADDR", libc::SIOCSIFADDR, address),
            ("SIOCSIFNETMASK", libc::SIOCSIFNETMASK, Ipv4Addr::from(mask)),
        ] {
            let mut req = IfReqAddr {
                name: ifname(name),
                addr: sockaddr(ip),
                _pad: [0; 8],
            };
            // SAFETY: these ioctls read an ifreq with a sockaddr_in, as laid out here.
            if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) } < 0 {
                return Err(os(what, std::io::Error::last_os_error()));
            }
        }
        let mut req = IfReqFlags {
            name: ifname(name),
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq's flags.
        unsafe {
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(os("SIOCGIFFLAGS", std::io::Error::last_os_error()));
            }
            req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) < 0 {
                return Err(os("SIOCSIFFLAGS", std::io::Error::last_os_error()));
            }
        }
        Ok(Tap { file })
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// One frame, or `WouldBlock`.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Read;
        (&self.file).read(buf)
    }

    pub fn write(&self, frame: &[u8]) -> std::io::Result<usize> {
        use std::io::Write;
        (&self.file).write(frame)
    }
}

trait NonBlocking {
    fn custom_flags_nonblocking(&mut self) -> &mut Self;
}

impl NonBlocking for std::fs::OpenOptions {
    fn custom_flags_nonblocking(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
    }
}

/// Moves this (still single-threaded) process into the network namespace at `path`
/// (`/run/netns/NAME`, or `/proc/PID/ns/net`), where libvirt runs QEMU: the NICs' loopback
/// UDP addresses and the tap must be in that namespace.
pub fn enter_netns(path: &std::path::Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: setns on a namespace descriptor we hold; called before any thread is spawned.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
