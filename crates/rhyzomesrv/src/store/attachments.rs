//! The NICs of instances: one ordered list of attachments per instance, in the table
//! `instance_attachments` (since version 5; before it, a single NIC lived in
//! `instances.bridge/mac` and several in `instance_nics`). Each entry joins a bridge with a
//! MAC, optionally for a Solo5 manifest device at a fixed PCI slot.
//!
//! MACs are unique over the whole table (a `UNIQUE` constraint, not a check by hand), so no
//! two NICs of any instances share one. Rows go with their instance (`ON DELETE CASCADE`).
//! The same connection mutex as [`super::Store`] serialises access; each table's columns are
//! listed once here and read by name.

use super::StoreError;
use rhyzome_api::LinkConditions;
use rusqlite::{named_params, Connection, Row};
use std::collections::HashMap;

/// One NIC of an instance, as stored. Later kinds of attachment (a managed network, an
/// address, link conditions) are more fields of this one row type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The Solo5 manifest device the NIC serves (images with several network devices);
    /// `None` for an instance's single NIC.
    pub device: Option<String>,
    pub bridge: String,
    pub mac: String,
    /// Fixed PCI slot on bus 0; `None` lets libvirt choose.
    pub pci_slot: Option<u8>,
    /// The link conditions set on this NIC (since version 7; empty before).
    pub conditions: LinkConditions,
    /// The managed network (its id) whose bridge this is, when the NIC is on one (since
    /// version 6).
    pub network: Option<String>,
    /// Its address on that network. Before the insert, an address asked for (or `None` for
    /// the lowest free one); as stored, the address given.
    pub address: Option<std::net::Ipv4Addr>,
    /// On an emulated network: the NIC's own UDP port on 127.0.0.1 (given with the address;
    /// since version 8).
    pub emulator_port: Option<u16>,
}

/// The table of a new database; older ones reach it through migration 4 -> 5.
pub(super) const TABLE: &str = "
CREATE TABLE instance_attachments (
    instance_id TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    device      TEXT,
    bridge      TEXT NOT NULL,
    mac         TEXT NOT NULL UNIQUE,
    pci_slot    INTEGER,
    PRIMARY KEY (instance_id, idx)
);
";

/// The columns that make an [`Attachment`], in every write and read.
const COLUMNS: &str = "device, bridge, mac, pci_slot, network_id, address, latency_ms, jitter_ms, \
                       loss_percent, loss_correlation_percent, rate_bps, down, emulator_port";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Attachment> {
    Ok(Attachment {
        device: r.get("device")?,
        bridge: r.get("bridge")?,
        mac: r.get("mac")?,
        pci_slot: r.get("pci_slot")?,
        network: r.get("network_id")?,
        address: r
            .get::<_, Option<u32>>("address")?
            .map(std::net::Ipv4Addr::from),
        emulator_port: r.get("emulator_port")?,
        conditions: LinkConditions {
            latency_ms: r.get("latency_ms")?,
            jitter_ms: r.get("jitter_ms")?,
            loss_percent: r.get("loss_percent")?,
            loss_correlation_percent: r.get("loss_correlation_percent")?,
            rate_bps: r.get("rate_bps")?,
            down: r.get("down")?,
        },
    })
}

/// Writes the attachments of a new instance, in order, inside the caller's transaction. A MAC
/// some NIC already has is [`StoreError::MacTaken`].
pub(super) fn write(
    tx: &rusqlite::Transaction<'_>,
    instance_id: &str,
    attachments: &[Attachment],
) -> Result<(), StoreError> {
    for (idx, a) in attachments.iter().enumerate() {
        let res = tx.execute(
            &format!(
                "INSERT INTO instance_attachments (instance_id, idx, {COLUMNS}) \
                 VALUES (:instance_id, :idx, :device, :bridge, :mac, :pci_slot, :network_id, \
                 :address, :latency_ms, :jitter_ms, :loss_percent, :loss_correlation_percent, \
                 :rate_bps, :down, :emulator_port)"
            ),
            named_params! {
                ":instance_id": instance_id,
                ":idx": idx as i64,
                ":device": a.device,
                ":bridge": a.bridge,
                ":mac": a.mac,
                ":pci_slot": a.pci_slot,
                ":network_id": a.network,
                ":address": a.address.map(u32::from),
                ":latency_ms": a.conditions.latency_ms,
                ":jitter_ms": a.conditions.jitter_ms,
                ":loss_percent": a.conditions.loss_percent,
                ":loss_correlation_percent": a.conditions.loss_correlation_percent,
                ":rate_bps": a.conditions.rate_bps,
                ":down": a.conditions.down,
                ":emulator_port": a.emulator_port,
            },
        );
        match res {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && msg.contains("instance_attachments.mac") =>
            {
                return Err(StoreError::MacTaken(a.mac.clone()))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The attachments of one instance, in order.
pub(super) fn of_instance(
    conn: &Connection,
    instance_id: &str,
) -> Result<Vec<Attachment>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM instance_attachments WHERE instance_id = ?1 ORDER BY idx"
    ))?;
    let rows = stmt.query_map([instance_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The attachments of every instance that has any, by instance id, each list in order.
pub(super) fn of_all(conn: &Connection) -> Result<HashMap<String, Vec<Attachment>>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT instance_id, {COLUMNS} FROM instance_attachments ORDER BY instance_id, idx"
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>("instance_id")?, from_row(r)?))
    })?;
    let mut out: HashMap<String, Vec<Attachment>> = HashMap::new();
    for row in rows {
        let (id, a) = row?;
        out.entry(id).or_default().push(a);
    }
    Ok(out)
}

/// Replaces the conditions of the NIC at `idx` of an instance; `false` when it has none there.
pub(super) fn set_conditions(
    conn: &Connection,
    instance_id: &str,
    idx: usize,
    c: &LinkConditions,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE instance_attachments SET latency_ms = :latency_ms, jitter_ms = :jitter_ms, \
         loss_percent = :loss_percent, loss_correlation_percent = :loss_correlation_percent, \
         rate_bps = :rate_bps, down = :down WHERE instance_id = :instance_id AND idx = :idx",
        named_params! {
            ":instance_id": instance_id,
            ":idx": idx as i64,
            ":latency_ms": c.latency_ms,
            ":jitter_ms": c.jitter_ms,
            ":loss_percent": c.loss_percent,
            ":loss_correlation_percent": c.loss_correlation_percent,
            ":rate_bps": c.rate_bps,
            ":down": c.down,
        },
    )?;
    Ok(changed == 1)
}
