//! The routes of the libvirt host, for the overlap check of a new network.
//!
//! "The host" is where libvirtd runs, which need not be the daemon's own network namespace:
//! the lab runs libvirtd in a namespace of its own, and the bridge of a managed network is made
//! there. libvirt's interface driver reports no addresses, and its own check at network start
//! only refuses a subnet that equals a route exactly (a /16 around a /24 passes). So, for a
//! local libvirt, the daemon asks the kernel who listens on libvirt's socket (`SO_PEERCRED`)
//! and reads that process's routing table, `/proc/PID/net/route`, which the kernel shows for
//! the process's own network namespace. A remote libvirt (a URI with a host) cannot be looked
//! at this way: then there is no answer, and libvirt's own check at start is the only one.

use crate::backend::network::HostRoute;
use rhyzome_api::networks::Ipv4Subnet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where libvirt's socket is, when `uri` names a libvirt on this machine.
pub fn local_socket(uri: &str) -> Option<PathBuf> {
    let (scheme, rest) = uri.split_once("://")?;
    let driver = scheme.split('+').next()?;
    let transport = scheme.split_once('+').map(|(_, t)| t);
    if driver == "test" || !matches!(transport, None | Some("unix")) {
        return None;
    }
    // `qemu:///system`: no host before the path.
    if !rest.starts_with('/') {
        return None;
    }
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    let socket = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("socket="))
        .map(PathBuf::from);
    Some(socket.unwrap_or_else(|| PathBuf::from("/run/libvirt/libvirt-sock")))
}

/// The process listening on the UNIX socket at `path`.
fn peer_pid(path: &std::path::Path) -> std::io::Result<i32> {
    use std::os::fd::AsRawFd;
    let stream = std::os::unix::net::UnixStream::connect(path)?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is a `ucred` owned
    // here, and the descriptor belongs to `stream`, alive for the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.pid)
}

/// The routes of the libvirt host behind `uri`, or `None` when it cannot be looked at.
pub fn routes(uri: &str) -> std::io::Result<Option<Vec<HostRoute>>> {
    let Some(socket) = local_socket(uri) else {
        return Ok(None);
    };
    let pid = peer_pid(&socket)?;
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/route"))?;
    Ok(Some(parse_route_table(&table)))
}

/// `/proc/net/route`: a header, then `Iface Destination Gateway Flags ... Mask ...` with
/// addresses as little-endian hex. The default route (`0.0.0.0/0`) covers everything and
/// says nothing about addresses, so it is left out.
pub fn parse_route_table(table: &str) -> Vec<HostRoute> {
    // The kernel prints each `__be32` as a native integer: its native bytes are the address.
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (interface, destination, mask) = (fields.first()?, fields.get(1)?, fields.get(7)?);
            let destination = Ipv4Addr::from(hex(destination)?);
            let prefix = u32::from_ne_bytes(hex(mask)?).count_ones() as u8;
            (prefix > 0).then(|| HostRoute {
                interface: interface.to_string(),
                subnet: Ipv4Subnet::containing(destination, prefix),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_tables_are_read_as_the_kernel_writes_them() {
        // The lab's libvirtd namespace, from /proc/PID/net/route.
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     rzbr0\t0064A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = parse_route_table(table);
        assert_eq!(
            routes,
            vec![
                HostRoute {
                    interface: "rzbr0".into(),
                    subnet: Ipv4Subnet::parse("192.168.100.0/24").unwrap()
                },
                HostRoute {
                    interface: "eth0".into(),
                    subnet: Ipv4Subnet::parse("10.0.0.0/16").unwrap()
                },
            ]
        );
    }

    #[test]
    fn only_local_uris_have_a_socket() {
        assert_eq!(
            local_socket("qemu:///system?socket=/run/rhyzome-lab/x/libvirt/libvirt-sock"),
            Some(PathBuf::from("/run/rhyzome-lab/x/libvirt/libvirt-sock"))
        );
        assert_eq!(
            local_socket("qemu:///system"),
            Some(PathBuf::from("/run/libvirt/libvirt-sock"))
        );
        assert_eq!(local_socket("qemu+ssh://host/system"), None);
        assert_eq!(local_socket("qemu+tcp://10.0.0.2/system"), None);
        assert_eq!(local_socket("test:///default"), None);
    }
}
