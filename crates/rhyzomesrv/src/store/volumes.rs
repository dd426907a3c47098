//! Volumes as the daemon records them, in the same SQLite database as instances.
//!
//! The store is the daemon's proof of ownership for volumes: libvirt volumes carry no
//! metadata, so a libvirt volume is the daemon's only if a row here names it, either a
//! `volumes` row (a finished volume) or a `volume_pending` row (written before the libvirt
//! volume is created, removed once it is recorded or deleted). A crash in between leaves a
//! pending row, and the next start deletes that volume: it is provably the daemon's, and no
//! user ever saw it.
//!
//! Users name volumes; libvirt volumes are named by the daemon (`rhyzome-vol-<uuid>`), so that
//! no user string reaches a file name, and an upload can fill a fresh libvirt volume and swap
//! it in (one row update) only once the digest matched. Attachments (`instance_volumes`) go
//! with their instance (`ON DELETE CASCADE`) and hold their volume (`REFERENCES`, no cascade:
//! a volume in use cannot be deleted even by a bug elsewhere); so does a clone its base.

use super::{Store, StoreError};
use rusqlite::{named_params, params, OptionalExtension};
use std::collections::HashSet;

/// The volume tables (schema version 5).
pub(super) const VOLUME_TABLES: &str = "
CREATE TABLE volumes (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    owner        TEXT NOT NULL,
    pool         TEXT NOT NULL,
    libvirt_name TEXT NOT NULL,
    format       TEXT NOT NULL,
    capacity     INTEGER NOT NULL,
    base_id      TEXT REFERENCES volumes(id),
    created_at   TEXT NOT NULL,
    UNIQUE (pool, libvirt_name)
);
CREATE TABLE volume_pending (
    pool         TEXT NOT NULL,
    libvirt_name TEXT NOT NULL,
    PRIMARY KEY (pool, libvirt_name)
);
CREATE TABLE instance_volumes (
    instance_id TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    device      TEXT NOT NULL,
    volume_id   TEXT NOT NULL REFERENCES volumes(id),
    read_only   INTEGER NOT NULL,
    PRIMARY KEY (instance_id, idx)
);
";

/// The columns of `volumes`, in every write and read of a whole row.
const VOLUME_COLUMNS: &str =
    "id, name, owner, pool, libvirt_name, format, capacity, base_id, created_at";

/// A volume as stored. `format` is `raw` or `qcow2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRow {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub pool: String,
    pub libvirt_name: String,
    pub format: String,
    pub capacity: u64,
    /// The volume this one is a copy-on-write child of.
    pub base_id: Option<String>,
    pub created_at: String,
}

/// One block device of an instance, in manifest order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRow {
    pub device: String,
    pub volume_id: String,
    pub read_only: bool,
}

/// Who uses a volume: an instance, its device, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeUser {
    pub instance: String,
    pub device: String,
    pub read_only: bool,
}

fn volume_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VolumeRow> {
    Ok(VolumeRow {
        id: r.get("id")?,
        name: r.get("name")?,
        owner: r.get("owner")?,
        pool: r.get("pool")?,
        libvirt_name: r.get("libvirt_name")?,
        format: r.get("format")?,
        capacity: r.get::<_, i64>("capacity")? as u64,
        base_id: r.get("base_id")?,
        created_at: r.get("created_at")?,
    })
}

fn name_taken(e: rusqlite::Error, name: &str) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.code == rusqlite::ErrorCode::ConstraintViolation
                && msg.contains("volumes.name") =>
        {
            StoreError::NameTaken(name.to_string())
        }
        _ => e.into(),
    }
}

/// Writes an instance's attachments, inside the caller's transaction (see
/// [`Store::insert_with_boot`]).
pub(super) fn write_attachments(
    tx: &rusqlite::Transaction<'_>,
    instance_id: &str,
    attachments: &[AttachmentRow],
) -> Result<(), StoreError> {
    for (i, a) in attachments.iter().enumerate() {
        tx.execute(
            "INSERT INTO instance_volumes (instance_id, idx, device, volume_id, read_only) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![instance_id, i as i64, a.device, a.volume_id, a.read_only],
        )?;
    }
    Ok(())
}

impl Store {
    /// Records that the daemon is about to create `libvirt_name` in `pool`.
    pub fn insert_pending_volume(&self, pool: &str, libvirt_name: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO volume_pending (pool, libvirt_name) VALUES (?1, ?2)",
            [pool, libvirt_name],
        )?;
        Ok(())
    }

    /// Forgets a pending libvirt volume (it was deleted).
    pub fn remove_pending_volume(&self, pool: &str, libvirt_name: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM volume_pending WHERE pool = ?1 AND libvirt_name = ?2",
            [pool, libvirt_name],
        )?;
        Ok(())
    }

    /// Pending libvirt volumes that no volume row names: left by a crash or a failed
    /// operation, the daemon's to delete.
    pub fn abandoned_volumes(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT p.pool, p.libvirt_name FROM volume_pending p WHERE NOT EXISTS \
             (SELECT 1 FROM volumes v WHERE v.pool = p.pool AND v.libvirt_name = p.libvirt_name)",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a finished volume, and that its libvirt volume is no longer pending.
    pub fn insert_volume(&self, v: &VolumeRow) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO volumes ({VOLUME_COLUMNS}) VALUES (:id, :name, :owner, :pool, \
                 :libvirt_name, :format, :capacity, :base_id, :created_at)"
            ),
            named_params! {
                ":id": v.id,
                ":name": v.name,
                ":owner": v.owner,
                ":pool": v.pool,
                ":libvirt_name": v.libvirt_name,
                ":format": v.format,
                ":capacity": v.capacity as i64,
                ":base_id": v.base_id,
                ":created_at": v.created_at,
            },
        )
        .map_err(|e| name_taken(e, &v.name))?;
        tx.execute(
            "DELETE FROM volume_pending WHERE pool = ?1 AND libvirt_name = ?2",
            [&v.pool, &v.libvirt_name],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn volume_by_name(&self, name: &str) -> Result<Option<VolumeRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {VOLUME_COLUMNS} FROM volumes WHERE name = ?1"),
                [name],
                volume_from_row,
            )
            .optional()?)
    }

    pub fn volume_by_id(&self, id: &str) -> Result<Option<VolumeRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {VOLUME_COLUMNS} FROM volumes WHERE id = ?1"),
                [id],
                volume_from_row,
            )
            .optional()?)
    }

    /// Every volume, by name.
    pub fn volumes(&self) -> Result<Vec<VolumeRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {VOLUME_COLUMNS} FROM volumes ORDER BY name"
        ))?;
        let rows = stmt.query_map([], volume_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes a volume's row, keeping its libvirt volume pending until it is deleted (so
    /// that a crash in between still deletes it at the next start).
    pub fn remove_volume(&self, v: &VolumeRow) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO volume_pending (pool, libvirt_name) VALUES (?1, ?2)",
            [&v.pool, &v.libvirt_name],
        )?;
        tx.execute("DELETE FROM volumes WHERE id = ?1", [&v.id])?;
        tx.commit()?;
        Ok(())
    }

    /// Points a volume at a new libvirt volume (an upload finished), and marks the old one
    /// pending, for deletion.
    pub fn swap_volume_content(
        &self,
        id: &str,
        new_libvirt_name: &str,
        capacity: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO volume_pending (pool, libvirt_name) \
             SELECT pool, libvirt_name FROM volumes WHERE id = ?1",
            [id],
        )?;
        tx.execute(
            "UPDATE volumes SET libvirt_name = ?2, capacity = ?3 WHERE id = ?1",
            params![id, new_libvirt_name, capacity as i64],
        )?;
        tx.execute(
            "DELETE FROM volume_pending WHERE libvirt_name = ?1 \
             AND pool = (SELECT pool FROM volumes WHERE id = ?2)",
            [new_libvirt_name, id],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_volume_capacity(&self, id: &str, capacity: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE volumes SET capacity = ?2 WHERE id = ?1",
            params![id, capacity as i64],
        )?;
        Ok(())
    }

    /// Names of the volumes that are copy-on-write children of `id`.
    pub fn clones_of(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM volumes WHERE base_id = ?1 ORDER BY name")?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The instances that attach volume `id` (deleted ones included until their record goes).
    pub fn users_of_volume(&self, id: &str) -> Result<Vec<VolumeUser>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT i.name, a.device, a.read_only FROM instance_volumes a \
             JOIN instances i ON i.id = a.instance_id WHERE a.volume_id = ?1 ORDER BY i.name",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(VolumeUser {
                instance: r.get(0)?,
                device: r.get(1)?,
                read_only: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The ids of the instances that attach at least one volume.
    pub fn instances_with_volumes(&self) -> Result<HashSet<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT instance_id FROM instance_volumes")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The block devices of an instance, in manifest order.
    pub fn instance_volumes(&self, instance_id: &str) -> Result<Vec<AttachmentRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT device, volume_id, read_only FROM instance_volumes \
             WHERE instance_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([instance_id], |r| {
            Ok(AttachmentRow {
                device: r.get(0)?,
                volume_id: r.get(1)?,
                read_only: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, libvirt_name: &str) -> VolumeRow {
        VolumeRow {
            id: format!("id-{name}"),
            name: name.into(),
            owner: "anonymous".into(),
            pool: "p".into(),
            libvirt_name: libvirt_name.into(),
            format: "raw".into(),
            capacity: 1 << 20,
            base_id: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn a_pending_volume_is_abandoned_until_recorded() {
        let s = Store::in_memory().unwrap();
        s.insert_pending_volume("p", "rhyzome-vol-1").unwrap();
        assert_eq!(
            s.abandoned_volumes().unwrap(),
            vec![("p".to_string(), "rhyzome-vol-1".to_string())]
        );
        s.insert_volume(&row("data", "rhyzome-vol-1")).unwrap();
        assert!(s.abandoned_volumes().unwrap().is_empty());
        assert_eq!(
            s.volume_by_name("data").unwrap().unwrap().libvirt_name,
            "rhyzome-vol-1"
        );
    }

    #[test]
    fn names_are_unique() {
        let s = Store::in_memory().unwrap();
        s.insert_volume(&row("data", "a")).unwrap();
        let mut again = row("data", "b");
        again.id = "other".into();
        assert!(matches!(
            s.insert_volume(&again),
            Err(StoreError::NameTaken(n)) if n == "data"
        ));
    }

    #[test]
    fn a_swap_leaves_the_old_content_pending_and_a_removal_its_own() {
        let s = Store::in_memory().unwrap();
        s.insert_volume(&row("data", "old")).unwrap();
        s.insert_pending_volume("p", "new").unwrap();
        s.swap_volume_content("id-data", "new", 4096).unwrap();
        assert_eq!(
            s.abandoned_volumes().unwrap(),
            vec![("p".to_string(), "old".to_string())]
        );
        let v = s.volume_by_name("data").unwrap().unwrap();
        assert_eq!((v.libvirt_name.as_str(), v.capacity), ("new", 4096));
        s.remove_pending_volume("p", "old").unwrap();
        s.remove_volume(&v).unwrap();
        assert_eq!(
            s.abandoned_volumes().unwrap(),
            vec![("p".to_string(), "new".to_string())]
        );
    }

    #[test]
    fn a_base_cannot_be_removed_before_its_clones() {
        let s = Store::in_memory().unwrap();
        let base = row("base", "a");
        s.insert_volume(&base).unwrap();
        let mut child = row("child", "b");
        child.base_id = Some(base.id.clone());
        s.insert_volume(&child).unwrap();
        assert_eq!(s.clones_of(&base.id).unwrap(), vec!["child".to_string()]);
        assert!(s.remove_volume(&base).is_err());
        assert!(s.volume_by_name("base").unwrap().is_some());
    }
}
