//! Files only the daemon's user may read: the database (token hashes, quotas, every
//! instance's parameters), the audit log and the console logs. New ones are created 0600;
//! existing ones with looser modes (made by an earlier version, or by hand) are narrowed,
//! with a warning. Called at start-up, and for a console log before its guest starts; each
//! call touches one file, so there are no concurrency concerns.

use std::io::ErrorKind;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Makes `path` owner-only: creates it (empty, 0600) when `create` and it does not exist,
/// and takes group and other permissions away from an existing one.
pub fn owner_only(path: &Path, create: bool) -> std::io::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound && create => {
            return std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map(drop);
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "readable by others; made owner-only");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_owner_only_and_narrows_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new");
        owner_only(&new, true).unwrap();
        assert_eq!(mode(&new), 0o600);

        let old = dir.path().join("old");
        std::fs::write(&old, b"secret").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        owner_only(&old, false).unwrap();
        assert_eq!(mode(&old), 0o600);
        assert_eq!(std::fs::read(&old).unwrap(), b"secret");

        let absent = dir.path().join("absent");
        owner_only(&absent, false).unwrap();
        assert!(!absent.exists());
    }
}
