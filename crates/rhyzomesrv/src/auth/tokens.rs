//! Bearer tokens, kept as SHA-256 hashes in the daemon's SQLite database (table `tokens`,
//! whose schema the store's migrations own).
//!
//! A token is `rhz_` followed by 64 hex digits of kernel randomness; it is shown once, when
//! created, and only its hash is stored, so a copy of the database grants nothing. Lookups go
//! by hash, so comparing secrets never depends on their content. The store has its own
//! connection to the database file and may be used by `rhyzomesrv token ...` while the daemon
//! runs (SQLite's WAL journal allows that); revocations take effect at the next request.

use super::{Caller, Quota, Role};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a token named {0:?} already exists")]
    Exists(String),
    #[error("no token named {0:?}")]
    NotFound(String),
    #[error("token name {0:?}: use 1 to 63 characters of a-z, 0-9, '-', '_', '.'")]
    BadName(String),
    #[error("cannot read random bytes: {0}")]
    Random(#[source] std::io::Error),
    #[error("the token database holds an invalid {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A token as listed (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub prefix: Option<String>,
    pub quota: Quota,
    pub created_at: String,
}

pub struct TokenStore {
    conn: Mutex<Connection>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl TokenStore {
    pub fn open(state_dir: &Path) -> Result<TokenStore, TokenError> {
        let conn = crate::store::open_database(state_dir)?;
        // The table is part of the store's versioned schema; this creates or migrates it
        // when the token command runs before the daemon ever opened the database.
        crate::store::migrate(&conn)?;
        Ok(TokenStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any token exists, i.e. whether authentication is on.
    pub fn any(&self) -> Result<bool, TokenError> {
        Ok(self
            .conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM tokens)", [], |r| r.get(0))?)
    }

    /// Creates a token and returns its secret, which is not stored anywhere.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        prefix: Option<&str>,
        quota: &Quota,
    ) -> Result<String, TokenError> {
        if name.is_empty()
            || name.len() > 63
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        {
            return Err(TokenError::BadName(name.to_string()));
        }
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut secret))
            .map_err(TokenError::Random)?;
        let token = format!("rhz_{}", hex::encode(secret));
        let quota_json = serde_json::to_string(quota).expect("quota serialises");
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        match self.conn().execute(
            "INSERT INTO tokens (name, hash, role, prefix, quota, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![name, hash(&token), role.as_str(), prefix, quota_json, now],
        ) {
            Ok(_) => Ok(token),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(TokenError::Exists(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        match self
            .conn()
            .execute("DELETE FROM tokens WHERE name = ?1", [name])?
        {
            0 => Err(TokenError::NotFound(name.to_string())),
            _ => Ok(()),
        }
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, role, prefix, quota, created_at FROM tokens ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (name, role, prefix, quota, created_at) = row?;
            let (role, quota) = decode(&role, &quota)?;
            Ok(TokenInfo {
                name,
                role,
                prefix,
                quota,
                created_at,
            })
        })
        .collect()
    }

    /// The caller a presented token stands for, if it is valid.
    pub fn authenticate(&self, token: &str) -> Result<Option<Caller>, TokenError> {
        let row = self
            .conn()
            .query_row(
                "SELECT name, role, prefix, quota FROM tokens WHERE hash = ?1",
                [hash(token)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((name, role, prefix, quota)) = row else {
            return Ok(None);
        };
        let (role, quota) = decode(&role, &quota)?;
        Ok(Some(Caller {
            name,
            role,
            prefix,
            quota,
        }))
    }
}

fn decode(role: &str, quota: &str) -> Result<(Role, Quota), TokenError> {
    let role = Role::parse(role).ok_or_else(|| TokenError::Corrupt {
        what: "role",
        value: role.to_string(),
    })?;
    let quota = serde_json::from_str(quota).map_err(|_| TokenError::Corrupt {
        what: "quota",
        value: quota.to_string(),
    })?;
    Ok((role, quota))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_until_revoked_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        assert!(!store.any().unwrap());
        let quota = Quota {
            max_instances: Some(3),
            ..Default::default()
        };
        let token = store
            .create("alice", Role::Operator, Some("alice-"), &quota)
            .unwrap();
        assert!(token.starts_with("rhz_") && token.len() == 68);
        assert!(store.any().unwrap());
        let caller = store.authenticate(&token).unwrap().unwrap();
        assert_eq!(caller.name, "alice");
        assert_eq!(caller.role, Role::Operator);
        assert_eq!(caller.prefix.as_deref(), Some("alice-"));
        assert_eq!(caller.quota, quota);
        assert!(store.authenticate("rhz_wrong").unwrap().is_none());
        assert!(matches!(
            store.create("alice", Role::Viewer, None, &Quota::default()),
            Err(TokenError::Exists(_))
        ));
        assert!(matches!(
            store.create("Bad Name", Role::Viewer, None, &Quota::default()),
            Err(TokenError::BadName(_))
        ));
        let db = std::fs::read(dir.path().join("rhyzome.db")).unwrap();
        let wal = std::fs::read(dir.path().join("rhyzome.db-wal")).unwrap_or_default();
        for bytes in [db, wal] {
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
        }
        assert_eq!(store.list().unwrap().len(), 1);
        store.revoke("alice").unwrap();
        assert!(store.authenticate(&token).unwrap().is_none());
        assert!(matches!(
            store.revoke("alice"),
            Err(TokenError::NotFound(_))
        ));
    }
}
