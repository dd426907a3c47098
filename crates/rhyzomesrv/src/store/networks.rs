//! Managed networks and the addresses given out on them, in the same SQLite database as
//! instances (`NETWORK_TABLES` in the parent module). An address is part of an instance's NIC
//! attachment (`instance_attachments.network_id` and `.address`).
//!
//! Address allocation is race-free by construction: the lowest free address is chosen and
//! written inside the transaction that inserts the instance (one connection behind a mutex,
//! so transactions never interleave), and a unique index on `(network_id, address)` refuses a
//! duplicate even if that ever changed. An address goes with its instance (`ON DELETE
//! CASCADE`); a network an attachment names cannot be removed (the foreign key refuses it).

use super::attachments::Attachment;
use super::{encoding, Store, StoreError};
use rhyzome_api::networks::Ipv4Subnet;
use rhyzome_api::{ForwardMode, LinkConditions};
use rusqlite::{named_params, OptionalExtension};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The columns of `networks` that make a [`NetworkRecord`].
const NETWORK_COLUMNS: &str =
    "id, name, subnet, gateway, mode, dhcp, bridge, owner, created_at, emulator_port, seed";

/// The UDP ports on 127.0.0.1 (of libvirtd's network namespace) that emulators and the NICs
/// of emulated networks are given: below Linux's ephemeral range (32768 and up), so no
/// outgoing socket takes one by chance.
pub const EMULATOR_PORTS: std::ops::RangeInclusive<u16> = 24000..=31999;

/// A managed network as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub subnet: Ipv4Subnet,
    pub gateway: Ipv4Addr,
    pub mode: ForwardMode,
    pub dhcp: bool,
    pub bridge: String,
    pub owner: String,
    pub created_at: String,
    /// For an emulated network, where its emulator listens; `None` for a plain one.
    pub emulator: Option<Emulator>,
}

/// The emulator of an emulated network as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emulator {
    /// Its UDP port on 127.0.0.1, every NIC's `<source port>`.
    pub port: u16,
    pub seed: u64,
}

/// What an emulated network applies besides its NICs' own conditions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shaping {
    /// Every NIC's conditions where its own leave a field unset.
    pub defaults: LinkConditions,
    /// Pairs of label selectors between whose instances nothing passes.
    pub partitions: Vec<[String; 2]>,
}

/// An address given to one NIC of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRow {
    pub network: String,
    pub instance_id: String,
    pub instance: String,
    /// The manifest device of the NIC; `None` for an instance's single NIC.
    pub device: Option<String>,
    pub ip: Ipv4Addr,
    pub mac: String,
}

fn network_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<NetworkRecord, StoreError>> {
    let subnet: String = r.get("subnet")?;
    let gateway: String = r.get("gateway")?;
    let mode: String = r.get("mode")?;
    let record = || -> Result<NetworkRecord, StoreError> {
        Ok(NetworkRecord {
            id: r.get("id")?,
            name: r.get("name")?,
            subnet: Ipv4Subnet::parse(&subnet).map_err(|_| StoreError::Corrupt {
                what: "network subnet",
                value: subnet.clone(),
            })?,
            gateway: gateway.parse().map_err(|_| StoreError::Corrupt {
                what: "network gateway",
                value: gateway.clone(),
            })?,
            mode: encoding::forward_mode_from_sql(&mode)?,
            dhcp: r.get("dhcp")?,
            bridge: r.get("bridge")?,
            owner: r.get("owner")?,
            created_at: r.get("created_at")?,
            emulator: match r.get::<_, Option<u16>>("emulator_port")? {
                // SQLite integers are signed: the seed is stored as its bit pattern.
                Some(port) => Some(Emulator {
                    port,
                    seed: r.get::<_, Option<i64>>("seed")?.unwrap_or(0) as u64,
                }),
                None => None,
            },
        })
    };
    Ok(record())
}

fn address_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AddressRow> {
    let ip: u32 = r.get("address")?;
    Ok(AddressRow {
        network: r.get("network")?,
        instance_id: r.get("instance_id")?,
        instance: r.get("instance")?,
        device: r.get("device")?,
        ip: Ipv4Addr::from(ip),
        mac: r.get("mac")?,
    })
}

/// Why an address could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefusal {
    #[error("{ip} is already used by another instance on network {network:?}")]
    Taken { network: String, ip: Ipv4Addr },
    #[error("{ip} is not a host address of network {network:?} ({subnet})")]
    Outside {
        network: String,
        ip: Ipv4Addr,
        subnet: Ipv4Subnet,
    },
    #[error("{ip} is the gateway of network {network:?}")]
    Gateway { network: String, ip: Ipv4Addr },
    #[error("network {network:?} ({subnet}) has no free address left")]
    Full { network: String, subnet: Ipv4Subnet },
    #[error("network {0:?} does not exist")]
    NoNetwork(String),
    #[error("every UDP port of emulated networks is taken ({}-{})", EMULATOR_PORTS.start(), EMULATOR_PORTS.end())]
    NoEmulatorPort,
}

/// The first port of [`EMULATOR_PORTS`], counted from this daemon's own place in the range,
/// that no emulator and no NIC has, nor any of `also` (given in the same transaction, not
/// yet written).
///
/// Every daemon on one libvirt host binds these ports on the same loopback (libvirt's
/// network namespace): its emulators and its guests' QEMU NICs. Each daemon starts counting
/// at an offset drawn from its identity, so that two daemons sharing a host (or the tests'
/// daemons on the lab) do not all take 24000 first and fail to bind. It makes a clash
/// unlikely, not impossible: neither daemon sees the other's ports, and a clash shows as an
/// emulator or a guest that cannot bind its port.
pub(super) fn free_emulator_port(
    conn: &rusqlite::Connection,
    also: &[u16],
) -> Result<u16, StoreError> {
    use sha2::Digest;
    let identity = super::daemon_identity(conn)?;
    let digest = sha2::Sha256::digest(format!("rhyzome-emulator-ports:{identity}").as_bytes());
    let span = u32::from(*EMULATOR_PORTS.end() - *EMULATOR_PORTS.start()) + 1;
    let offset = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % span;
    let mut used: HashSet<u16> = also.iter().copied().collect();
    let mut stmt = conn.prepare_cached(
        "SELECT emulator_port FROM networks WHERE emulator_port IS NOT NULL \
         UNION SELECT emulator_port FROM instance_attachments WHERE emulator_port IS NOT NULL",
    )?;
    for port in stmt.query_map([], |r| r.get::<_, u16>(0))? {
        used.insert(port?);
    }
    let start = u32::from(*EMULATOR_PORTS.start());
    (0..span)
        .map(|i| (start + (offset + i) % span) as u16)
        .find(|p| !used.contains(p))
        .ok_or(StoreError::Address(AddressRefusal::NoEmulatorPort))
}

/// Gives each attachment on a managed network its address, inside the caller's transaction:
/// the one it asks for, checked, or the lowest free host address that is not the gateway.
pub(super) fn allocate(
    tx: &rusqlite::Transaction<'_>,
    attachments: &[Attachment],
) -> Result<Vec<Attachment>, StoreError> {
    let mut given: Vec<Attachment> = Vec::with_capacity(attachments.len());
    for a in attachments {
        let Some(network_id) = &a.network else {
            given.push(a.clone());
            continue;
        };
        let network = tx
            .query_row(
                &format!("SELECT {NETWORK_COLUMNS} FROM networks WHERE id = ?1"),
                [network_id],
                network_from_row,
            )
            .optional()?
            .transpose()?
            .ok_or_else(|| StoreError::Address(AddressRefusal::NoNetwork(network_id.clone())))?;
        let mut used: HashSet<u32> = {
            let mut stmt = tx.prepare_cached(
                "SELECT address FROM instance_attachments \
                 WHERE network_id = ?1 AND address IS NOT NULL",
            )?;
            let rows = stmt.query_map([&network.id], |r| r.get::<_, u32>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        // Earlier NICs of this same instance.
        used.extend(
            given
                .iter()
                .filter(|g| g.network.as_ref() == Some(network_id))
                .filter_map(|g| g.address.map(u32::from)),
        );
        let ip = match a.address {
            Some(ip) => {
                let refusal = if !network.subnet.is_host(ip) {
                    Some(AddressRefusal::Outside {
                        network: network.name.clone(),
                        ip,
                        subnet: network.subnet,
                    })
                } else if ip == network.gateway {
                    Some(AddressRefusal::Gateway {
                        network: network.name.clone(),
                        ip,
                    })
                } else if used.contains(&u32::from(ip)) {
                    Some(AddressRefusal::Taken {
                        network: network.name.clone(),
                        ip,
                    })
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    return Err(StoreError::Address(refusal));
                }
                ip
            }
            None => network
                .subnet
                .hosts()
                .find(|ip| *ip != network.gateway && !used.contains(&u32::from(*ip)))
                .ok_or_else(|| {
                    StoreError::Address(AddressRefusal::Full {
                        network: network.name.clone(),
                        subnet: network.subnet,
                    })
                })?,
        };
        let emulator_port = match network.emulator {
            Some(_) => {
                let earlier: Vec<u16> = given.iter().filter_map(|g| g.emulator_port).collect();
                Some(free_emulator_port(tx, &earlier)?)
            }
            None => None,
        };
        given.push(Attachment {
            address: Some(ip),
            emulator_port,
            ..a.clone()
        });
    }
    Ok(given)
}

/// `SELECT` of address rows with their network's and instance's names.
const SELECT_ADDRESSES: &str = "SELECT n.name AS network, a.instance_id, i.name AS instance, \
     a.device, a.address, a.mac FROM instance_attachments a \
     JOIN networks n ON n.id = a.network_id JOIN instances i ON i.id = a.instance_id";

impl Store {
    /// Records a network; its name and bridge must be free. An emulated one is given its
    /// emulator's port here (whatever `n.emulator.port` said), in the same statement's lock:
    /// the record as stored is returned.
    pub fn insert_network(&self, n: &NetworkRecord) -> Result<NetworkRecord, StoreError> {
        let conn = self.conn();
        let mut n = n.clone();
        if let Some(emulator) = &mut n.emulator {
            emulator.port = free_emulator_port(&conn, &[])?;
        }
        let res = conn.execute(
            &format!(
                "INSERT INTO networks ({NETWORK_COLUMNS}) VALUES (:id, :name, :subnet, \
                 :gateway, :mode, :dhcp, :bridge, :owner, :created_at, :emulator_port, :seed)"
            ),
            named_params! {
                ":id": n.id,
                ":name": n.name,
                ":subnet": n.subnet.to_string(),
                ":gateway": n.gateway.to_string(),
                ":mode": encoding::forward_mode_to_sql(n.mode),
                ":dhcp": n.dhcp,
                ":bridge": n.bridge,
                ":owner": n.owner,
                ":created_at": n.created_at,
                ":emulator_port": n.emulator.map(|e| e.port),
                ":seed": n.emulator.map(|e| e.seed as i64),
            },
        );
        match res {
            Ok(_) => Ok(n),
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && msg.contains("networks.name") =>
            {
                Err(StoreError::NameTaken(n.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every managed network, by name.
    pub fn networks(&self) -> Result<Vec<NetworkRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {NETWORK_COLUMNS} FROM networks ORDER BY name"
        ))?;
        let rows = stmt.query_map([], network_from_row)?;
        rows.map(|r| r?).collect()
    }

    pub fn network_by_name(&self, name: &str) -> Result<Option<NetworkRecord>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {NETWORK_COLUMNS} FROM networks WHERE name = ?1"),
                [name],
                network_from_row,
            )
            .optional()?
            .transpose()
    }

    pub fn network_by_id(&self, id: &str) -> Result<Option<NetworkRecord>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {NETWORK_COLUMNS} FROM networks WHERE id = ?1"),
                [id],
                network_from_row,
            )
            .optional()?
            .transpose()
    }

    /// The default conditions and the partitions (pairs of label selectors) of a network.
    pub fn network_shaping(&self, id: &str) -> Result<Shaping, StoreError> {
        let (link, partitions): (Option<String>, Option<String>) = self.conn().query_row(
            "SELECT link, partitions FROM networks WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let corrupt = |what: &'static str, value: &str| StoreError::Corrupt {
            what,
            value: value.to_string(),
        };
        Ok(Shaping {
            defaults: match link {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|_| corrupt("network link", &text))?
                }
                None => LinkConditions::default(),
            },
            partitions: match partitions {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|_| corrupt("network partitions", &text))?
                }
                None => Vec::new(),
            },
        })
    }

    /// Replaces the default conditions and partitions of a network.
    pub fn set_network_shaping(&self, id: &str, shaping: &Shaping) -> Result<(), StoreError> {
        // Plain structs of numbers and strings: serialising them cannot fail.
        let defaults = serde_json::to_string(&shaping.defaults).unwrap_or_default();
        let partitions = serde_json::to_string(&shaping.partitions).unwrap_or_default();
        self.conn().execute(
            "UPDATE networks SET link = ?2, partitions = ?3 WHERE id = ?1",
            rusqlite::params![id, defaults, partitions],
        )?;
        Ok(())
    }

    /// Removes a network record; refused (by the schema) while addresses are given out on it.
    pub fn remove_network(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM networks WHERE id = ?1", [id])?;
        Ok(())
    }

    /// The addresses given out on the network `name`, lowest first.
    pub fn network_addresses(&self, name: &str) -> Result<Vec<AddressRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_ADDRESSES} WHERE n.name = ?1 ORDER BY a.address"
        ))?;
        let rows = stmt.query_map([name], address_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The addresses of the instance `instance_id`, in NIC order.
    pub fn instance_addresses(&self, instance_id: &str) -> Result<Vec<AddressRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_ADDRESSES} WHERE a.instance_id = ?1 ORDER BY a.idx"
        ))?;
        let rows = stmt.query_map([instance_id], address_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
