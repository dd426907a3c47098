//! The labels of instances (`group=eu`, `testbed=t1`), in the table `instance_labels`
//! (made by migration 6 -> 7, `LABELS_AND_LINK_CONDITIONS` in `store.rs`). Labels are given at creation and select instances for
//! `instance list --selector` and, later, for network partitions. Rows go with their instance
//! (`ON DELETE CASCADE`); the same connection mutex as [`super::Store`] serialises access.

use super::StoreError;
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};

/// An instance's labels, by key (at most one value per key, kept in key order).
pub type Labels = BTreeMap<String, String>;

/// Writes the labels of a new instance inside the caller's transaction.
pub(super) fn write(
    tx: &rusqlite::Transaction<'_>,
    instance_id: &str,
    labels: &Labels,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO instance_labels (instance_id, key, value) VALUES (?1, ?2, ?3)",
    )?;
    for (key, value) in labels {
        stmt.execute((instance_id, key, value))?;
    }
    Ok(())
}

/// The labels of one instance.
pub(super) fn of_instance(conn: &Connection, instance_id: &str) -> Result<Labels, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT key, value FROM instance_labels WHERE instance_id = ?1")?;
    let rows = stmt.query_map([instance_id], |r| {
        Ok((r.get::<_, String>("key")?, r.get::<_, String>("value")?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The labels of every instance that has any, by instance id.
pub(super) fn of_all(conn: &Connection) -> Result<HashMap<String, Labels>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT instance_id, key, value FROM instance_labels")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>("instance_id")?,
            r.get::<_, String>("key")?,
            r.get::<_, String>("value")?,
        ))
    })?;
    let mut out: HashMap<String, Labels> = HashMap::new();
    for row in rows {
        let (id, key, value) = row?;
        out.entry(id).or_default().insert(key, value);
    }
    Ok(out)
}
