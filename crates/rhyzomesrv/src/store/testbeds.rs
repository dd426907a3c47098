//! Test beds as stored (`TESTBED_TABLES` in the parent module): the file last applied, the
//! members (one row per instance the bed owns, with the spec it was created from) and the
//! managed networks the bed owns. Every write is one statement or one transaction on the
//! store's single connection, so readers never see half an apply.
//!
//! The `desired` column holds `present` or `deleting`, or, once a bed has been scaled or had a
//! fault injected, a JSON object `{"state": "present", "scale": {"nodes": 40}, "faults": 3}`
//! ([`Overrides`]): the counts `testbed scale` set (kept until the next apply of a file) and
//! the number of faults injected so far (which seeds the next fault's picks). A JSON text in
//! the existing column needs no migration, and a bare state is still read as one.

use super::{Store, StoreError};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a bed's desired state holds besides its file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    /// Group counts set by `testbed scale`, overriding the file's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scale: BTreeMap<String, u32>,
    /// Faults injected so far.
    #[serde(default)]
    pub faults: u64,
}

#[derive(Serialize, Deserialize)]
struct DesiredJson {
    state: String,
    #[serde(flatten)]
    overrides: Overrides,
}

/// The `desired` column's text for `state` with `overrides`: the bare state when there are
/// none, as before overrides existed.
fn encode_desired(state: &str, overrides: &Overrides) -> String {
    if *overrides == Overrides::default() {
        return state.to_string();
    }
    serde_json::to_string(&DesiredJson {
        state: state.to_string(),
        overrides: overrides.clone(),
    })
    .expect("plain data serializes")
}

fn decode_desired(text: String) -> rusqlite::Result<(String, Overrides)> {
    if !text.starts_with('{') {
        return Ok((text, Overrides::default()));
    }
    let d: DesiredJson = serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok((d.state, d.overrides))
}

/// A test bed as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestbedRecord {
    pub name: String,
    pub owner: String,
    pub owner_prefix: Option<String>,
    /// The TOML text last applied.
    pub file: String,
    /// `present` or `deleting`.
    pub desired: String,
    /// Scaled counts and the fault count, stored with `desired`.
    pub overrides: Overrides,
    pub applied_at: String,
    pub applied_ms: i64,
    pub last_error: Option<String>,
    /// The images pushed for the file's `kernel_file`s, by path as written
    /// (`testbeds.kernel_files`). Written with the file in one statement: a file whose images
    /// were not stored with it would no longer parse.
    pub kernel_files: BTreeMap<String, String>,
}

/// One instance a bed owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub group: String,
    pub index: u32,
    pub instance: String,
    /// The `InstanceSpec` as JSON: equal text, equal instance.
    pub spec: String,
    /// When it was first seen ready (ms since the epoch).
    pub ready_ms: Option<i64>,
}

const BED_COLUMNS: &str =
    "name, owner, owner_prefix, file, desired, applied_at, applied_ms, last_error, kernel_files";

/// The `kernel_files` column's text: NULL when there are none, as before the column existed.
fn encode_kernel_files(kernel_files: &BTreeMap<String, String>) -> Option<String> {
    (!kernel_files.is_empty()).then(|| serde_json::to_string(kernel_files).unwrap_or_default())
}

fn decode_kernel_files(text: Option<String>) -> rusqlite::Result<BTreeMap<String, String>> {
    match text {
        None => Ok(BTreeMap::new()),
        Some(t) => serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(e))
        }),
    }
}

fn bed_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TestbedRecord> {
    let (desired, overrides) = decode_desired(r.get(4)?)?;
    Ok(TestbedRecord {
        name: r.get(0)?,
        owner: r.get(1)?,
        owner_prefix: r.get(2)?,
        file: r.get(3)?,
        desired,
        overrides,
        applied_at: r.get(5)?,
        applied_ms: r.get(6)?,
        last_error: r.get(7)?,
        kernel_files: decode_kernel_files(r.get(8)?)?,
    })
}

impl Store {
    /// Writes a bed's desired state: inserted, or its file and time replaced.
    pub fn put_testbed(&self, r: &TestbedRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO testbeds (name, owner, owner_prefix, file, desired, applied_at, \
             applied_ms, last_error, kernel_files) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8) \
             ON CONFLICT(name) DO UPDATE SET file = excluded.file, desired = excluded.desired, \
             applied_at = excluded.applied_at, applied_ms = excluded.applied_ms, \
             last_error = NULL, kernel_files = excluded.kernel_files",
            params![
                r.name,
                r.owner,
                r.owner_prefix,
                r.file,
                encode_desired(&r.desired, &r.overrides),
                r.applied_at,
                r.applied_ms,
                encode_kernel_files(&r.kernel_files)
            ],
        )?;
        Ok(())
    }

    pub fn testbed(&self, name: &str) -> Result<Option<TestbedRecord>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {BED_COLUMNS} FROM testbeds WHERE name = ?1"),
                [name],
                bed_from_row,
            )
            .optional()?)
    }

    pub fn testbeds(&self) -> Result<Vec<TestbedRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare(&format!("SELECT {BED_COLUMNS} FROM testbeds ORDER BY name"))?;
        let rows = stmt.query_map([], bed_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_testbed_desired(&self, name: &str, desired: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE testbeds SET desired = ?2 WHERE name = ?1",
            params![name, desired],
        )?;
        Ok(())
    }

    /// Replaces a bed's overrides, its state kept.
    pub fn set_testbed_overrides(
        &self,
        name: &str,
        state: &str,
        overrides: &Overrides,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE testbeds SET desired = ?2 WHERE name = ?1",
            params![name, encode_desired(state, overrides)],
        )?;
        Ok(())
    }

    pub fn set_testbed_error(&self, name: &str, error: Option<&str>) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE testbeds SET last_error = ?2 WHERE name = ?1",
            params![name, error],
        )?;
        Ok(())
    }

    /// Removes a bed with its member and network rows.
    pub fn remove_testbed(&self, name: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM testbeds WHERE name = ?1", [name])?;
        Ok(())
    }

    pub fn testbed_members(&self, bed: &str) -> Result<Vec<MemberRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT group_name, idx, instance, spec, ready_ms FROM testbed_members \
             WHERE testbed = ?1 ORDER BY group_name, idx",
        )?;
        let rows = stmt.query_map([bed], |r| {
            Ok(MemberRecord {
                group: r.get(0)?,
                index: r.get(1)?,
                instance: r.get(2)?,
                spec: r.get(3)?,
                ready_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records (or replaces) a member before its instance is created.
    pub fn put_testbed_member(&self, bed: &str, m: &MemberRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO testbed_members (testbed, group_name, idx, instance, spec, ready_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(testbed, group_name, idx) DO UPDATE \
             SET instance = excluded.instance, spec = excluded.spec, ready_ms = excluded.ready_ms",
            params![bed, m.group, m.index, m.instance, m.spec, m.ready_ms],
        )?;
        Ok(())
    }

    pub fn set_member_ready(&self, instance: &str, ready_ms: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE testbed_members SET ready_ms = ?2 WHERE instance = ?1 AND ready_ms IS NULL",
            params![instance, ready_ms],
        )?;
        Ok(())
    }

    pub fn remove_testbed_member(&self, instance: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM testbed_members WHERE instance = ?1",
            [instance],
        )?;
        Ok(())
    }

    pub fn testbed_networks(&self, bed: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT network FROM testbed_networks WHERE testbed = ?1 ORDER BY network")?;
        let rows = stmt.query_map([bed], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that the bed owns a network, before the network is created.
    pub fn put_testbed_network(&self, bed: &str, network: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO testbed_networks (testbed, network) VALUES (?1, ?2)",
            params![bed, network],
        )?;
        Ok(())
    }

    pub fn remove_testbed_network(&self, network: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM testbed_networks WHERE network = ?1", [network])?;
        Ok(())
    }
}
