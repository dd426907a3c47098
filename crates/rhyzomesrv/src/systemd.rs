//! The daemon's side of systemd's service protocol, without libsystemd:
//! - readiness and watchdog notifications (`sd_notify(3)`): one datagram per message to the
//!   UNIX socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace);
//! - the watchdog interval from `$WATCHDOG_USEC` (honoured only when `$WATCHDOG_PID`, if set,
//!   is this process);
//! - whether stderr is connected to the journal (`$JOURNAL_STREAM`), which picks the log
//!   format in [`crate::logging`].
//!
//! Outside systemd none of these variables is set and every function here does nothing.
//! Sending is a single non-blocking `sendto`, safe from any thread or task.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor an @abstract name")]
    BadAddress(String),
    #[error("cannot notify systemd on {socket:?}: {source}")]
    Send {
        socket: String,
        #[source]
        source: std::io::Error,
    },
}

/// Sends `state` (for example `READY=1`) to the service manager, if there is one.
/// Returns whether a message was sent: `Ok(false)` when `$NOTIFY_SOCKET` is not set.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    match std::env::var("NOTIFY_SOCKET") {
        Ok(socket) if !socket.is_empty() => send_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `socket` (a `$NOTIFY_SOCKET` value).
pub fn send_to(socket: &str, state: &str) -> Result<(), NotifyError> {
    let failed = |source| NotifyError::Send {
        socket: socket.to_string(),
        source,
    };
    let sender = UnixDatagram::unbound().map_err(failed)?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(failed)?;
        sender
            .send_to_addr(state.as_bytes(), &addr)
            .map_err(failed)?;
    } else if socket.starts_with('/') {
        sender.send_to(state.as_bytes(), socket).map_err(failed)?;
    } else {
        return Err(NotifyError::BadAddress(socket.to_string()));
    }
    Ok(())
}

/// Tells systemd the daemon is ready (`Type=notify`), logging rather than failing: a lost
/// notification makes systemd time the start-up out, which is reported there.
pub fn notify_ready() {
    match notify("READY=1\nSTATUS=serving the API") {
        Ok(true) => tracing::info!("told systemd the daemon is ready"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "cannot report readiness"),
    }
}

/// Tells systemd the daemon is stopping, so that a stop is not mistaken for a crash.
pub fn notify_stopping() {
    if let Err(e) = notify("STOPPING=1") {
        tracing::warn!(error = %e, "cannot report stopping");
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// advises; `None` when no watchdog is configured for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(&usec, pid.as_deref(), std::process::id())
}

fn watchdog_interval_from(usec: &str, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec.parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

/// Feeds the watchdog from the async runtime for as long as the returned task runs: if the
/// runtime stops making progress (a deadlock, a starved executor) the pings stop and
/// systemd restarts the daemon. `None` when no watchdog is configured.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    tracing::info!(?interval, "feeding the systemd watchdog");
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            if let Err(e) = notify("WATCHDOG=1") {
                tracing::warn!(error = %e, "cannot ping the watchdog");
            }
        }
    }))
}

/// Whether stderr is the journal's stream: `$JOURNAL_STREAM` names its device and inode
/// (`DEV:INODE`), and a child that inherited the variable but writes elsewhere must not
/// believe it (systemd.exec(5)).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(expected) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    // fstat of a duplicate of fd 2: the file closes the duplicate, never stderr itself.
    let stderr = std::io::stderr();
    let fd = std::os::fd::AsFd::as_fd(&stderr);
    let Ok(owned) = fd.try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(owned).metadata() else {
        return false;
    };
    expected == format!("{}:{}", meta.dev(), meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_message_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("rhyzome-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(&format!("@{name}"), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn bad_or_absent_sockets_are_errors() {
        assert!(matches!(
            send_to("relative", "READY=1"),
            Err(NotifyError::BadAddress(_))
        ));
        assert!(matches!(
            send_to("/nonexistent/notify", "READY=1"),
            Err(NotifyError::Send { .. })
        ));
    }

    #[test]
    fn the_watchdog_interval_is_half_the_timeout_and_only_for_its_pid() {
        assert_eq!(
            watchdog_interval_from("30000000", None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from("30000000", Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval_from("30000000", Some("8"), 7), None);
        assert_eq!(watchdog_interval_from("0", None, 7), None);
        assert_eq!(watchdog_interval_from("soon", None, 7), None);
    }
}
