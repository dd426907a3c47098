//! The API's local UNIX socket (`Socket` in `rhyzome.conf`), where file permissions take the
//! place of tokens: whoever can open the socket may administer the daemon, as with libvirt's
//! own socket. The kernel tells who is on the other end (`SO_PEERCRED`), and that identity is
//! what the audit log records.
//!
//! The socket is bound once at start-up, before anything else runs, on the daemon's main
//! task. It is bound in a private directory and renamed into place only after its owner group
//! and mode are set, so there is no moment at which others can reach it with looser
//! permissions.

use crate::config::LocalSocket;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LocalSocketError {
    #[error("{0}: another rhyzomesrv is already listening there")]
    InUse(PathBuf),
    #[error("{0}: exists and is not a socket; remove it or choose another Socket")]
    NotASocket(PathBuf),
    #[error("SocketGroup {0:?}: no such group on this host")]
    UnknownGroup(String),
    #[error(
        "SocketGroup {group:?}: cannot give the socket to this group ({reason}); the daemon's \
         user must be a member of it"
    )]
    Group { group: String, reason: String },
    #[error("cannot create the socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The process at the other end of a local connection, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPeer {
    pub uid: u32,
    pub pid: Option<i32>,
}

impl LocalPeer {
    pub fn of(stream: &tokio::net::UnixStream) -> Option<LocalPeer> {
        let cred = stream.peer_cred().ok()?;
        Some(LocalPeer {
            uid: cred.uid(),
            pid: cred.pid(),
        })
    }

    /// How the audit log names this peer.
    pub fn describe(&self) -> String {
        match self.pid {
            Some(pid) => format!("unix:uid={},pid={pid}", self.uid),
            None => format!("unix:uid={}", self.uid),
        }
    }
}

/// The socket file, removed when this is dropped (at shutdown, or when start-up fails after
/// the socket was bound), so that clients then get "no such file" rather than a refusal.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "cannot remove the API socket");
            }
        }
    }
}

/// Checks what can be checked without binding: that `SocketGroup` names a group here.
pub fn check(config: &LocalSocket) -> Result<(), LocalSocketError> {
    config.group.as_deref().map(group_id).transpose().map(drop)
}

/// Binds the socket with its final permissions: 0660 and `group` when one is configured,
/// otherwise 0600 (the daemon's user only). A stale socket left by a daemon that died is
/// replaced; a live one is an error.
pub fn bind(
    config: &LocalSocket,
) -> Result<(tokio::net::UnixListener, SocketFile), LocalSocketError> {
    let path = &config.path;
    let io = |source| LocalSocketError::Io {
        path: path.clone(),
        source,
    };
    let gid = config.group.as_deref().map(group_id).transpose()?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io)?;
    remove_stale(path)?;
    // The socket is born in a private directory beside its final place (0700, the daemon's
    // own): bind() creates it with whatever mode the umask leaves and already accepts
    // connections, and there nobody else can reach it, or swap it for a symlink, until its
    // group and mode are set and it is renamed into place.
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(dir)
        .map_err(io)?;
    let born = staging.path().join("s");
    let listener = std::os::unix::net::UnixListener::bind(&born).map_err(io)?;
    if let (Some(gid), Some(group)) = (gid, &config.group) {
        std::os::unix::fs::chown(&born, None, Some(gid)).map_err(|e| LocalSocketError::Group {
            group: group.clone(),
            reason: e.to_string(),
        })?;
    }
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(&born, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    std::fs::rename(&born, path).map_err(io)?;
    let file = SocketFile(path.clone());
    listener.set_nonblocking(true).map_err(io)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(io)?;
    Ok((listener, file))
}

/// Name prefix of the private directory a socket is bound in; with tempfile's six random
/// characters and the socket's own name it adds 23 bytes to the socket's directory.
const STAGING_PREFIX: &str = ".rhyzome-sock-";

fn remove_stale(path: &Path) -> Result<(), LocalSocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LocalSocketError::Io {
                path: path.into(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(LocalSocketError::NotASocket(path.into()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(LocalSocketError::InUse(path.into())),
        Err(_) => std::fs::remove_file(path).map_err(|source| LocalSocketError::Io {
            path: path.into(),
            source,
        }),
    }
}

fn group_id(name: &str) -> Result<u32, LocalSocketError> {
    let unknown = || LocalSocketError::UnknownGroup(name.to_string());
    let cname = std::ffi::CString::new(name).map_err(|_| unknown())?;
    // SAFETY: getgrnam_r writes only into `group` and `buf`, both owned here and large enough
    // (ERANGE otherwise, which is reported as an unknown group); `result` is checked before
    // `group` is read.
    unsafe {
        let mut group: libc::group = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            cname.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return Err(unknown());
        }
        Ok(group.gr_gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_in(dir: &Path, group: Option<&str>) -> LocalSocket {
        LocalSocket {
            path: dir.join("run/api.sock"),
            group: group.map(Into::into),
        }
    }

    #[tokio::test]
    async fn binds_owner_only_and_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = socket_in(dir.path(), None);
        let (first, file) = bind(&cfg).unwrap();
        let mode = std::fs::metadata(&cfg.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir = cfg.path.parent().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("api.sock")],
            "staging left behind"
        );

        let e = bind(&cfg).unwrap_err();
        assert!(matches!(e, LocalSocketError::InUse(_)), "{e}");
        drop(first);
        drop(file);
        assert!(!cfg.path.exists(), "dropping the SocketFile removes it");

        // A killed daemon leaves a socket file nobody listens on; the next start replaces it.
        // (Made with mknod, not by closing a listener: a test running in parallel may fork
        // while holding a copy of the listener's descriptor, which would keep it alive.)
        let stale = std::ffi::CString::new(cfg.path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mknod touches no memory of ours.
        assert_eq!(
            unsafe { libc::mknod(stale.as_ptr(), libc::S_IFSOCK | 0o600, 0) },
            0
        );
        let (_second, _file) = bind(&cfg).expect("a dead daemon's socket is replaced");
    }

    /// The name of this process's group, which it may give its files to.
    fn own_group() -> (String, u32) {
        let out = std::process::Command::new("id")
            .arg("-gn")
            .output()
            .unwrap();
        let name = String::from_utf8(out.stdout).unwrap().trim().to_string();
        // SAFETY: getegid cannot fail and touches no memory.
        (name, unsafe { libc::getegid() })
    }

    #[tokio::test]
    async fn a_group_makes_it_group_writable() {
        let dir = tempfile::tempdir().unwrap();
        let (group, gid) = own_group();
        let cfg = socket_in(dir.path(), Some(&group));
        let _bound = bind(&cfg).unwrap();
        let meta = std::fs::metadata(&cfg.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.gid(), gid);
    }

    #[test]
    fn refuses_unknown_groups_and_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = bind(&socket_in(dir.path(), Some("no-such-group-rhz"))).unwrap_err();
        assert!(matches!(e, LocalSocketError::UnknownGroup(_)), "{e}");
        let cfg = socket_in(dir.path(), None);
        std::fs::create_dir_all(cfg.path.parent().unwrap()).unwrap();
        std::fs::write(&cfg.path, "not a socket").unwrap();
        let e = bind(&cfg).unwrap_err();
        assert!(matches!(e, LocalSocketError::NotASocket(_)), "{e}");
        assert_eq!(std::fs::read(&cfg.path).unwrap(), b"not a socket");
    }
}
