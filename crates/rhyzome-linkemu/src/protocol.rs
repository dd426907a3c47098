//! The control channel: a UNIX stream socket; each request is one line of JSON, and each
//! answer one line of JSON. The daemon sends the whole desired state (`put`), so an emulator
//! and a daemon that both restarted agree again after one request; `get` and `stats` read.

use crate::link::LinkCounters;
use crate::state::NetworkState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The state applied now.
    Get,
    /// Apply this state (listening address and tap must stay those the emulator runs with)
    /// and persist it. Takes effect for the next frame.
    Put { state: NetworkState },
    /// Counters per port.
    Stats,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<NetworkState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub pid: u32,
    /// Milliseconds since this emulator process started (a restart resets it).
    pub uptime_ms: u64,
    /// MAC addresses learned.
    pub addresses: usize,
    /// Datagrams dropped because they came from no NIC of this network (another address or
    /// port than the NICs', or a NIC's on the wrong socket).
    #[serde(default)]
    pub rejected: u64,
    pub ports: BTreeMap<String, PortStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortStats {
    /// What the port's own conditions did to the frames it sent.
    pub link: LinkCounters,
    /// Frames delivered to this port.
    pub delivered: u64,
    /// Deliveries from this port left out by partitions.
    pub blocked_by_partition: u64,
    pub queued_frames: usize,
    pub queued_bytes: usize,
}

/// Sends one request on a connected control socket and reads its answer (for the daemon,
/// tests and the `ctl` command).
pub fn call(
    stream: &mut std::os::unix::net::UnixStream,
    request: &Request,
) -> std::io::Result<Response> {
    use std::io::{BufRead, Write};
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = std::io::BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the emulator closed the control connection",
        ));
    }
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
