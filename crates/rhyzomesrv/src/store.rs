//! Desired and observed state of instances, in SQLite under `StateDir`.
//!
//! The store is the daemon's source of truth: a request is written here before libvirt is
//! touched, so that a crash at any point leaves a record the reconciler can finish. One
//! connection behind a mutex serialises access; statements are short (WAL journal,
//! `synchronous = NORMAL`, which survives a process crash), so callers on the async runtime
//! hold the lock only for microseconds. Uniqueness of names and MACs is enforced by the schema,
//! which makes concurrent creates race-free without extra locking.

use rhyzome_api::{DesiredState, InstanceState, RestartPolicy};
use rusqlite::{named_params, params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::Mutex;

pub mod attachments;
mod encoding;
pub mod images;
pub mod labels;
pub mod networks;
pub mod testbeds;
#[cfg(test)]
mod upgrade_tests;
pub mod volumes;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the name {0:?} is already taken")]
    NameTaken(String),
    #[error("the MAC address {0} is already used by another instance")]
    MacTaken(String),
    #[error(transparent)]
    Address(#[from] networks::AddressRefusal),
    #[error("database holds an unknown {what} {value:?}")]
    Corrupt { what: &'static str, value: String },
    #[error(
        "the database is marked schema version 1 but its instances table has columns \
         ({columns}) that no release wrote; refusing to guess how to migrate it"
    )]
    UnknownVersion1 { columns: String },
    #[error(
        "the database has schema version {found}, newer than this rhyzomesrv knows ({known}): \
         it was written by a newer release; run that release (or a newer one) instead"
    )]
    TooNew { found: i32, known: i32 },
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the daemon wants for an instance. `Deleted` records are invisible to clients; they
/// remain only until the reconciler or the delete request has removed the domain and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Running,
    Stopped,
    Deleted,
}

impl Desired {
    fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Deleted => "deleted",
        }
    }
    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "running" => Desired::Running,
            "stopped" => Desired::Stopped,
            "deleted" => Desired::Deleted,
            _ => {
                return Err(StoreError::Corrupt {
                    what: "desired state",
                    value: s.into(),
                })
            }
        })
    }
    pub fn to_api(self) -> DesiredState {
        match self {
            Desired::Running => DesiredState::Running,
            Desired::Stopped | Desired::Deleted => DesiredState::Stopped,
        }
    }
}

/// One instance as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub name: String,
    pub kernel: String,
    pub kernel_sha256: String,
    pub kernel_parameters: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// Its NICs, in order; empty when the instance has no network.
    pub attachments: Vec<attachments::Attachment>,
    /// Its labels (`group=eu`), given at creation.
    pub labels: labels::Labels,
    pub desired: Desired,
    pub state: InstanceState,
    pub exit_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    /// Size of the console log when the current run started: exit lines before it belong to
    /// earlier runs.
    pub console_offset: u64,
    /// Inode of the console log when the current run started: a log with another inode was
    /// made by a virtlogd rotation since, and belongs to the run whole.
    pub console_inode: Option<u64>,
    pub state_changed_at: String,
    pub restart: RestartPolicy,
    pub restart_count: u32,
    /// Unix time in milliseconds at which the restart policy starts the instance again.
    pub next_restart_at_ms: Option<i64>,
    pub startup_priority: i32,
    pub autostart: bool,
    /// Name of the token that created the instance (`anonymous` without authentication);
    /// quotas count per owner.
    pub owner: String,
    /// The host it runs on (`Hosts[].Name`); empty: the primary host (records written
    /// before hosts existed).
    pub host: String,
    /// How and why the host was chosen.
    pub placement: Option<PlacementRecord>,
    /// Recreated on another host when its host stays unreachable.
    pub failover: bool,
}

/// The scheduler's decision for an instance (see `rhyzome_api::Placement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRecord {
    /// `pinned`, `spread`, `binpack` or `failover`.
    pub how: String,
    pub reason: String,
    pub decided_at: String,
}

/// The observed part of a record, which the service updates after acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: InstanceState,
    pub exit_code: Option<i32>,
    pub last_error: Option<String>,
}

const SCHEMA_VERSION: i32 = 12;

/// One step of the schema, from version N to N + 1.
enum Migration {
    /// Statements that make the change.
    Sql(&'static str),
    /// A change that depends on what the database holds.
    Code(fn(&Connection) -> Result<(), StoreError>),
}

/// How a database of each older version becomes the current one, in order: the step that
/// takes version N to N + 1 is `MIGRATIONS[N - 1]`. Every schema change is one of these;
/// nothing creates or alters a table outside them.
const MIGRATIONS: &[Migration] = &[
    // 1 -> 2: the console log's inode at the start of a run.
    Migration::Sql("ALTER TABLE instances ADD COLUMN console_inode INTEGER;"),
    // 2 -> 3: the daemon's identity, which marks the domains it creates (filled in by
    // `Store::init`, like a new database's).
    Migration::Sql(DAEMON_TABLE),
    // 3 -> 4: the image and token tables join the versioned schema.
    Migration::Code(version_4_tables),
    // 4 -> 5: one ordered list of NICs per instance.
    Migration::Code(fold_nics_into_attachments),
    // 5 -> 6: managed networks, and the network and address of each attachment on one.
    Migration::Sql(NETWORK_TABLES),
    // 6 -> 7: instance labels, and link conditions on attachments (issue 14; renumbered by
    // whoever merges it after other branches' migrations).
    Migration::Sql(LABELS_AND_LINK_CONDITIONS),
    // 7 -> 8: volumes, the libvirt volumes being made, and what instances attach.
    Migration::Sql(volumes::VOLUME_TABLES),
    // 8 -> 9: test beds, their members and their networks.
    Migration::Sql(TESTBED_TABLES),
    // 9 -> 10: emulated networks (issue 14; written as 7 -> 8 on its branch, renumbered at
    // the merge after volumes and test beds).
    Migration::Sql(EMULATED_NETWORKS),
    // 10 -> 11: the images pushed for a test bed's `kernel_file`s.
    Migration::Sql(TESTBED_KERNEL_FILES),
    // 11 -> 12: the host of each instance, how it was chosen, and failover.
    Migration::Sql(INSTANCE_HOSTS),
];

/// 11 -> 12 (also run on a new database after the version 11 tables): the host an instance
/// runs on (`''`: the primary host, which every instance written before hosts ran on), the
/// scheduler's decision (NULL: none was recorded) and whether it fails over.
const INSTANCE_HOSTS: &str = "
ALTER TABLE instances ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN placement_how TEXT;
ALTER TABLE instances ADD COLUMN placement_reason TEXT;
ALTER TABLE instances ADD COLUMN placed_at TEXT;
ALTER TABLE instances ADD COLUMN failover INTEGER NOT NULL DEFAULT 0;
";

/// 10 -> 11 (also run on a new database after the version 10 tables): for each `kernel_file`
/// of a bed's file, as written there, the image the client pushed for it (JSON: an object of
/// path to `sha256:<hex>`; NULL is none). The file is kept as written, so that what was
/// applied can be shown and collected; the images are what its instances boot.
const TESTBED_KERNEL_FILES: &str = "
ALTER TABLE testbeds ADD COLUMN kernel_files TEXT;
";

/// 9 -> 10 (also run on a new database after the version 9 tables): an emulated network's
/// emulator port and seed (both NULL on a plain network), its default link conditions and its
/// partitions (JSON: a `LinkConditions`, and a list of selector pairs; NULL is none), and
/// each of its NICs' own UDP port.
/// One port is never given twice, whatever the column: unique indexes on each, and the
/// allocation looks at both (`store::networks::free_emulator_port`).
const EMULATED_NETWORKS: &str = "
ALTER TABLE networks ADD COLUMN emulator_port INTEGER;
ALTER TABLE networks ADD COLUMN seed INTEGER;
ALTER TABLE networks ADD COLUMN link TEXT;
ALTER TABLE networks ADD COLUMN partitions TEXT;
ALTER TABLE instance_attachments ADD COLUMN emulator_port INTEGER;
CREATE UNIQUE INDEX networks_emulator_port ON networks (emulator_port);
CREATE UNIQUE INDEX instance_attachments_emulator_port ON instance_attachments (emulator_port);
";

/// 6 -> 7 (also run on a new database after the version 6 tables).
const LABELS_AND_LINK_CONDITIONS: &str = "
CREATE TABLE instance_labels (
    instance_id TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (instance_id, key)
);
ALTER TABLE instance_attachments ADD COLUMN latency_ms REAL;
ALTER TABLE instance_attachments ADD COLUMN jitter_ms REAL;
ALTER TABLE instance_attachments ADD COLUMN loss_percent REAL;
ALTER TABLE instance_attachments ADD COLUMN loss_correlation_percent REAL;
ALTER TABLE instance_attachments ADD COLUMN rate_bps INTEGER;
ALTER TABLE instance_attachments ADD COLUMN down INTEGER;
";

/// 3 -> 4: the tables made outside the versioned schema until then, and `instance_nics`,
/// which version 5 folds into `instance_attachments`.
fn version_4_tables(conn: &Connection) -> Result<(), StoreError> {
    adopt_unversioned_tables(conn)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS instance_nics (
            instance_id TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
            idx         INTEGER NOT NULL,
            device      TEXT NOT NULL,
            bridge      TEXT NOT NULL,
            mac         TEXT NOT NULL UNIQUE,
            pci_slot    INTEGER NOT NULL,
            PRIMARY KEY (instance_id, idx)
        );",
    )?;
    Ok(())
}

/// 4 -> 5: the single NIC of `instances.bridge/mac` and the several of `instance_nics` become
/// one ordered list, `instance_attachments`, where one `UNIQUE` constraint keeps MACs apart.
/// An instance with `instance_nics` rows keeps those (its `instances.mac` repeated the
/// first); one without keeps its single NIC, with no device and no fixed slot.
///
/// SQLite cannot drop a `UNIQUE` column, so `instances` is rebuilt without `bridge` and
/// `mac`. Dropping the old table would cascade to the tables that reference it, so those are
/// rebuilt too, referring to the new table, before the old ones go; renaming the new table
/// then renames those references with it. The statements are frozen here: later versions
/// change the schema with their own migrations.
fn fold_nics_into_attachments(conn: &Connection) -> Result<(), StoreError> {
    let half: i64 = conn.query_row(
        "SELECT count(*) FROM instances WHERE (bridge IS NULL) != (mac IS NULL)",
        [],
        |r| r.get(0),
    )?;
    if half > 0 {
        return Err(StoreError::Corrupt {
            what: "instances with a bridge but no MAC, or a MAC but no bridge",
            value: half.to_string(),
        });
    }
    conn.execute_batch(
        "CREATE TABLE instances_v5 (
            id                TEXT PRIMARY KEY,
            name              TEXT NOT NULL UNIQUE,
            kernel            TEXT NOT NULL,
            kernel_sha256     TEXT NOT NULL,
            kernel_parameters TEXT NOT NULL,
            memory_mib        INTEGER NOT NULL,
            vcpus             INTEGER NOT NULL,
            desired           TEXT NOT NULL,
            state             TEXT NOT NULL,
            exit_code         INTEGER,
            last_error        TEXT,
            created_at        TEXT NOT NULL,
            started_at        TEXT,
            console_offset    INTEGER NOT NULL DEFAULT 0,
            state_changed_at  TEXT NOT NULL,
            restart_mode      TEXT NOT NULL DEFAULT 'never',
            restart_max       INTEGER,
            restart_exit_codes TEXT,
            restart_count     INTEGER NOT NULL DEFAULT 0,
            next_restart_at_ms INTEGER,
            startup_priority  INTEGER NOT NULL DEFAULT 0,
            autostart         INTEGER NOT NULL DEFAULT 0,
            owner             TEXT NOT NULL DEFAULT 'anonymous',
            console_inode     INTEGER
        );
        INSERT INTO instances_v5 (id, name, kernel, kernel_sha256, kernel_parameters,
            memory_mib, vcpus, desired, state, exit_code, last_error, created_at, started_at,
            console_offset, state_changed_at, restart_mode, restart_max, restart_exit_codes,
            restart_count, next_restart_at_ms, startup_priority, autostart, owner,
            console_inode)
        SELECT id, name, kernel, kernel_sha256, kernel_parameters,
            memory_mib, vcpus, desired, state, exit_code, last_error, created_at, started_at,
            console_offset, state_changed_at, restart_mode, restart_max, restart_exit_codes,
            restart_count, next_restart_at_ms, startup_priority, autostart, owner,
            console_inode
        FROM instances;
        CREATE TABLE instance_attachments (
            instance_id TEXT NOT NULL REFERENCES instances_v5(id) ON DELETE CASCADE,
            idx         INTEGER NOT NULL,
            device      TEXT,
            bridge      TEXT NOT NULL,
            mac         TEXT NOT NULL UNIQUE,
            pci_slot    INTEGER,
            PRIMARY KEY (instance_id, idx)
        );
        INSERT INTO instance_attachments (instance_id, idx, device, bridge, mac, pci_slot)
            SELECT instance_id, idx, device, bridge, mac, pci_slot FROM instance_nics;
        INSERT INTO instance_attachments (instance_id, idx, device, bridge, mac, pci_slot)
            SELECT id, 0, NULL, bridge, mac, NULL FROM instances
            WHERE mac IS NOT NULL
              AND id NOT IN (SELECT instance_id FROM instance_nics);
        CREATE TABLE instance_images_v5 (
            instance_id TEXT PRIMARY KEY REFERENCES instances_v5(id) ON DELETE CASCADE,
            image       TEXT NOT NULL
        );
        INSERT INTO instance_images_v5 (instance_id, image)
            SELECT instance_id, image FROM instance_images;
        DROP TABLE instance_nics;
        DROP TABLE instance_images;
        DROP TABLE instances;
        ALTER TABLE instances_v5 RENAME TO instances;
        ALTER TABLE instance_images_v5 RENAME TO instance_images;",
    )?;
    Ok(())
}

/// Until version 4 the image tables and the token table were created on every open with
/// `IF NOT EXISTS`, and `image_tags.tagged_at` was added when missing, whatever the
/// version. A database of versions 1 to 3 may therefore have all of them, some, or none,
/// with or without `tagged_at`; this brings each case to the same tables.
fn adopt_unversioned_tables(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(&IMAGE_TABLES.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))?;
    conn.execute_batch(&TOKENS_TABLE.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))?;
    let has_tagged_at: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('image_tags') WHERE name = 'tagged_at'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_tagged_at {
        // Names given before names had a time keep NULL: the image's own time is shown.
        conn.execute_batch("ALTER TABLE image_tags ADD COLUMN tagged_at TEXT;")?;
    }
    Ok(())
}

/// One row: the identity of the daemon that owns this database.
const DAEMON_TABLE: &str = "
CREATE TABLE daemon (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    id        TEXT NOT NULL
);
";

/// Version 1 was released with three different `instances` tables. Each is recognised by its
/// columns, and the steps from it on bring it to the last one (a97e89b), which the numbered
/// migrations start from.
struct Version1Release {
    /// How many columns its table has, and the last of them.
    columns: usize,
    last_column: &'static str,
    /// The statements that take it to the next release's table.
    to_next: &'static str,
}

const VERSION_1_RELEASES: &[Version1Release] = &[
    // 6407704. `state_changed_at` was never recorded: the best estimate is the last start,
    // else the creation. (`ADD COLUMN ... NOT NULL` needs a default; every insert names the
    // column, so it is never used.)
    Version1Release {
        columns: 16,
        last_column: "console_offset",
        to_next: "ALTER TABLE instances ADD COLUMN state_changed_at TEXT NOT NULL DEFAULT '';
         UPDATE instances SET state_changed_at = COALESCE(started_at, created_at);
         ALTER TABLE instances ADD COLUMN restart_mode TEXT NOT NULL DEFAULT 'never';
         ALTER TABLE instances ADD COLUMN restart_max INTEGER;
         ALTER TABLE instances ADD COLUMN restart_exit_codes TEXT;
         ALTER TABLE instances ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE instances ADD COLUMN next_restart_at_ms INTEGER;
         ALTER TABLE instances ADD COLUMN startup_priority INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE instances ADD COLUMN autostart INTEGER NOT NULL DEFAULT 0;",
    },
    // ca69d2b: restart policies, priorities, autostart.
    Version1Release {
        columns: 24,
        last_column: "autostart",
        to_next: "ALTER TABLE instances ADD COLUMN owner TEXT NOT NULL DEFAULT 'anonymous';",
    },
    // a97e89b: owners.
    Version1Release {
        columns: 25,
        last_column: "owner",
        to_next: "",
    },
];

/// The image metadata and what instances boot from images (see [`images`]). Rows of an
/// instance go with it (`ON DELETE CASCADE`).
const IMAGE_TABLES: &str = "
CREATE TABLE images (
    sha256      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    uploaded_at TEXT NOT NULL,
    inspection  TEXT NOT NULL
);
CREATE TABLE image_tags (
    name   TEXT NOT NULL,
    tag    TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES images(sha256) ON DELETE CASCADE,
    tagged_at TEXT,
    PRIMARY KEY (name, tag)
);
CREATE TABLE instance_images (
    instance_id TEXT PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,
    image       TEXT NOT NULL
);
";

/// Managed networks, and the network and address of each attachment on one (see
/// [`networks`]). Addresses are stored as integers so that "lowest free" is an order; the
/// unique index keeps them unique per network (SQLite lets several rows have no network). An
/// address goes with its attachment, and a network cannot go while an attachment names it.
const NETWORK_TABLES: &str = "
CREATE TABLE networks (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    subnet     TEXT NOT NULL,
    gateway    TEXT NOT NULL,
    mode       TEXT NOT NULL,
    dhcp       INTEGER NOT NULL,
    bridge     TEXT NOT NULL UNIQUE,
    owner      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
ALTER TABLE instance_attachments ADD COLUMN network_id TEXT REFERENCES networks(id);
ALTER TABLE instance_attachments ADD COLUMN address INTEGER;
CREATE UNIQUE INDEX instance_attachments_address ON instance_attachments (network_id, address);
";

/// Test beds (see [`testbeds`]): the applied file is the desired state; each member row is
/// written before its instance is created, with the spec it is (to be) created from, so a
/// crash in between leaves a member whose instance the converger creates, never an
/// instance the bed does not know. Until instances carry labels, membership lives here.
const TESTBED_TABLES: &str = "
CREATE TABLE testbeds (
    name         TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    owner_prefix TEXT,
    file         TEXT NOT NULL,
    desired      TEXT NOT NULL,
    applied_at   TEXT NOT NULL,
    applied_ms   INTEGER NOT NULL,
    last_error   TEXT
);
CREATE TABLE testbed_members (
    testbed    TEXT NOT NULL REFERENCES testbeds(name) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    instance   TEXT NOT NULL UNIQUE,
    spec       TEXT NOT NULL,
    ready_ms   INTEGER,
    PRIMARY KEY (testbed, group_name, idx)
);
CREATE TABLE testbed_networks (
    testbed TEXT NOT NULL REFERENCES testbeds(name) ON DELETE CASCADE,
    network TEXT NOT NULL UNIQUE,
    PRIMARY KEY (testbed, network)
);
";

/// The bearer tokens, read and written by `auth::tokens` through its own connection; their
/// schema is versioned here with the rest of the database.
const TOKENS_TABLE: &str = "
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    prefix     TEXT,
    quota      TEXT NOT NULL,
    created_at TEXT NOT NULL
);
";

/// The instances table of a new database (older ones reach the same columns through the
/// migrations).
const SCHEMA: &str = "
CREATE TABLE instances (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    kernel            TEXT NOT NULL,
    kernel_sha256     TEXT NOT NULL,
    kernel_parameters TEXT NOT NULL,
    memory_mib        INTEGER NOT NULL,
    vcpus             INTEGER NOT NULL,
    desired           TEXT NOT NULL,
    state             TEXT NOT NULL,
    exit_code         INTEGER,
    last_error        TEXT,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    console_offset    INTEGER NOT NULL DEFAULT 0,
    state_changed_at  TEXT NOT NULL,
    restart_mode      TEXT NOT NULL DEFAULT 'never',
    restart_max       INTEGER,
    restart_exit_codes TEXT,
    restart_count     INTEGER NOT NULL DEFAULT 0,
    next_restart_at_ms INTEGER,
    startup_priority  INTEGER NOT NULL DEFAULT 0,
    autostart         INTEGER NOT NULL DEFAULT 0,
    owner             TEXT NOT NULL DEFAULT 'anonymous',
    console_inode     INTEGER
);
";

/// Every column of `instances`: each write of a whole record and each read name them from
/// this one list, and bind and read them by name (`:column`), so no write or read depends
/// on the position of a column.
const INSTANCE_COLUMNS: &[&str] = &[
    "id",
    "name",
    "kernel",
    "kernel_sha256",
    "kernel_parameters",
    "memory_mib",
    "vcpus",
    "desired",
    "state",
    "exit_code",
    "last_error",
    "created_at",
    "started_at",
    "console_offset",
    "console_inode",
    "state_changed_at",
    "restart_mode",
    "restart_max",
    "restart_exit_codes",
    "restart_count",
    "next_restart_at_ms",
    "startup_priority",
    "autostart",
    "owner",
    "host",
    "placement_how",
    "placement_reason",
    "placed_at",
    "failover",
];

/// `SELECT <every column> FROM instances`, to which a read adds its condition.
fn select_instances() -> String {
    format!("SELECT {} FROM instances", INSTANCE_COLUMNS.join(", "))
}

/// `INSERT INTO instances (<every column>) VALUES (:<every column>)`.
fn insert_instance() -> String {
    let placeholders: Vec<String> = INSTANCE_COLUMNS.iter().map(|c| format!(":{c}")).collect();
    format!(
        "INSERT INTO instances ({}) VALUES ({})",
        INSTANCE_COLUMNS.join(", "),
        placeholders.join(", ")
    )
}

/// Opens (creating it and `state_dir` if needed) the daemon's database file, configured as
/// every connection to it must be. Other stores of the daemon (tokens) open their own
/// connection with it.
pub(crate) fn open_database(state_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(state_dir).map_err(|source| StoreError::StateDir {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = state_dir.join("rhyzome.db");
    // Owner-only (see crate::files). SQLite gives the -wal and -shm files it creates the
    // mode of the database file.
    for (file, create) in [
        (path.clone(), true),
        (state_dir.join("rhyzome.db-wal"), false),
        (state_dir.join("rhyzome.db-shm"), false),
    ] {
        crate::files::owner_only(&file, create).map_err(|source| StoreError::StateDir {
            path: file.clone(),
            source,
        })?;
    }
    let conn = Connection::open(&path)?;
    configure(&conn)?;
    // Checked here, before any store creates its tables: a newer release's database must be
    // left exactly as it is.
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}

/// WAL lets readers and one writer work at once; `NORMAL` sync survives a process crash.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Brings a version 1 database of any of the three releases that wrote version 1 to the last
/// of them (see [`VERSION_1_RELEASES`]), inside the caller's transaction; refuses a table no
/// release made.
fn complete_version_1(conn: &Connection) -> Result<(), StoreError> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('instances')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let first_release = VERSION_1_RELEASES
        .iter()
        .position(|r| {
            columns.len() == r.columns && columns.last().map(String::as_str) == Some(r.last_column)
        })
        .ok_or_else(|| StoreError::UnknownVersion1 {
            columns: columns.join(", "),
        })?;
    for release in &VERSION_1_RELEASES[first_release..] {
        conn.execute_batch(release.to_next)?;
    }
    if first_release + 1 < VERSION_1_RELEASES.len() {
        tracing::info!(
            columns = columns.len(),
            "database of an early version 1 release completed to the last version 1"
        );
    }
    Ok(())
}

/// Creates the schema of a new database, or brings an older one to the current version, in
/// one transaction: a crash leaves the old version or the new one. The transaction takes the
/// write lock before it reads the version, so two processes opening one database at once
/// (the daemon and `rhyzomesrv token`) migrate it once. Every connection to the database
/// calls this before using it.
pub(crate) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let version: i32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if version == 0 {
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(DAEMON_TABLE)?;
        // Not plain IMAGE_TABLES and TOKENS_TABLE: before version 4, `rhyzomesrv token`
        // run before the daemon's first start left a version 0 database with a tokens table.
        adopt_unversioned_tables(&tx)?;
        tx.execute_batch(attachments::TABLE)?;
        tx.execute_batch(NETWORK_TABLES)?;
        tx.execute_batch(LABELS_AND_LINK_CONDITIONS)?;
        tx.execute_batch(volumes::VOLUME_TABLES)?;
        tx.execute_batch(TESTBED_TABLES)?;
        tx.execute_batch(EMULATED_NETWORKS)?;
        tx.execute_batch(TESTBED_KERNEL_FILES)?;
        tx.execute_batch(INSTANCE_HOSTS)?;
    } else if (1..SCHEMA_VERSION).contains(&version) {
        if version == 1 {
            complete_version_1(&tx)?;
        }
        for (from, step) in MIGRATIONS.iter().enumerate().skip(version as usize - 1) {
            match step {
                Migration::Sql(sql) => tx.execute_batch(sql)?,
                Migration::Code(step) => step(&tx)?,
            }
            tracing::info!(from = from + 1, to = from + 2, "database schema migrated");
        }
    } else if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found: version,
            known: SCHEMA_VERSION,
        });
    } else {
        return Err(StoreError::Corrupt {
            what: "schema version",
            value: version.to_string(),
        });
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

pub struct Store {
    conn: Mutex<Connection>,
    daemon_id: String,
}

/// Reads the daemon's identity, making it on the first open. `INSERT OR IGNORE` on the
/// single row keeps a concurrent first open (two processes on one state directory) from
/// making two.
fn daemon_identity(conn: &Connection) -> Result<String, StoreError> {
    conn.execute(
        "INSERT OR IGNORE INTO daemon (singleton, id) VALUES (1, ?1)",
        [uuid::Uuid::new_v4().to_string()],
    )?;
    Ok(
        conn.query_row("SELECT id FROM daemon WHERE singleton = 1", [], |row| {
            row.get(0)
        })?,
    )
}

impl Store {
    /// Opens (and creates or migrates) `StateDir/rhyzome.db`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        Store::init(open_database(state_dir)?)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        configure(&conn)?;
        migrate(&conn)?;
        let daemon_id = daemon_identity(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            daemon_id,
        })
    }

    /// This daemon's identity: a random UUID made when its database was created (or
    /// migrated to version 3), the same for as long as the database lives. Every domain the
    /// daemon creates carries it, and it destroys no domain that does not.
    pub fn daemon_id(&self) -> &str {
        &self.daemon_id
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (each statement is
        // atomic), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A number that changes whenever anything is written through this store (SQLite's count
    /// of changed rows on its connection). Equal numbers mean nothing changed in between,
    /// which lets callers cache what they derive from the store.
    pub fn generation(&self) -> u64 {
        self.conn().total_changes()
    }

    pub fn insert(&self, r: &InstanceRecord) -> Result<(), StoreError> {
        self.insert_with_boot(r, None, &[])
    }

    /// Inserts a record with its NIC attachments, the image reference it was created from and
    /// its volumes in one transaction, so a crash cannot leave a record whose guest would boot
    /// with the wrong devices. A MAC any NIC already has is [`StoreError::MacTaken`].
    pub fn insert_with_boot(
        &self,
        r: &InstanceRecord,
        image: Option<&str>,
        volumes: &[volumes::AttachmentRow],
    ) -> Result<(), StoreError> {
        self.insert_with_addresses(r, image, volumes).map(|_| ())
    }

    /// [`Self::insert_with_boot`], giving each attachment on a managed network its address in
    /// the same transaction (the one it asks for, else the lowest free one), and returning
    /// the attachments as written. A refused address leaves nothing written.
    pub fn insert_with_addresses(
        &self,
        r: &InstanceRecord,
        image: Option<&str>,
        volumes: &[volumes::AttachmentRow],
    ) -> Result<Vec<attachments::Attachment>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let res = tx.execute(
            &insert_instance(),
            named_params! {
                ":id": r.id,
                ":name": r.name,
                ":kernel": r.kernel,
                ":kernel_sha256": r.kernel_sha256,
                ":kernel_parameters": r.kernel_parameters,
                ":memory_mib": r.memory_mib,
                ":vcpus": r.vcpus,
                ":desired": r.desired.as_str(),
                ":state": encoding::state_to_sql(r.state),
                ":exit_code": r.exit_code,
                ":last_error": r.last_error,
                ":created_at": r.created_at,
                ":started_at": r.started_at,
                ":console_offset": r.console_offset as i64,
                ":console_inode": r.console_inode.map(|i| i as i64),
                ":state_changed_at": r.state_changed_at,
                ":restart_mode": encoding::restart_mode_to_sql(r.restart.policy),
                ":restart_max": r.restart.max_retries,
                ":restart_exit_codes": encoding::exit_codes_to_sql(r.restart.exit_codes.as_ref()),
                ":restart_count": r.restart_count,
                ":next_restart_at_ms": r.next_restart_at_ms,
                ":startup_priority": r.startup_priority,
                ":autostart": r.autostart,
                ":owner": r.owner,
                ":host": r.host,
                ":placement_how": r.placement.as_ref().map(|p| &p.how),
                ":placement_reason": r.placement.as_ref().map(|p| &p.reason),
                ":placed_at": r.placement.as_ref().map(|p| &p.decided_at),
                ":failover": r.failover,
            },
        );
        match res {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(if msg.contains("instances.name") {
                    StoreError::NameTaken(r.name.clone())
                } else {
                    rusqlite::Error::SqliteFailure(e, Some(msg)).into()
                });
            }
            Err(e) => return Err(e.into()),
        }
        let attachments = networks::allocate(&tx, &r.attachments)?;
        attachments::write(&tx, &r.id, &attachments)?;
        labels::write(&tx, &r.id, &r.labels)?;
        images::write_boot(&tx, &r.id, image)?;
        volumes::write_attachments(&tx, &r.id, volumes)?;
        tx.commit()?;
        Ok(attachments)
    }

    /// Every record, including those being deleted, ordered by name.
    pub fn all(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{} ORDER BY name", select_instances()))?;
        let rows = stmt.query_map([], row_to_record)?;
        let mut records: Vec<InstanceRecord> = rows.map(|r| r?).collect::<Result<_, _>>()?;
        let mut attachments = attachments::of_all(&conn)?;
        let mut labels = labels::of_all(&conn)?;
        for r in &mut records {
            r.attachments = attachments.remove(&r.id).unwrap_or_default();
            r.labels = labels.remove(&r.id).unwrap_or_default();
        }
        Ok(records)
    }

    /// Records clients can see (not being deleted), ordered by name.
    pub fn visible(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|r| r.desired != Desired::Deleted)
            .collect())
    }

    pub fn by_name(&self, name: &str) -> Result<Option<InstanceRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{} WHERE name = ?1", select_instances()))?;
        let Some(mut r) = stmt
            .query_row([name], row_to_record)
            .optional()?
            .transpose()?
        else {
            return Ok(None);
        };
        r.attachments = attachments::of_instance(&conn, &r.id)?;
        r.labels = labels::of_instance(&conn, &r.id)?;
        Ok(Some(r))
    }

    pub fn set_desired(&self, id: &str, desired: Desired) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE instances SET desired = ?2 WHERE id = ?1",
            params![id, desired.as_str()],
        )?;
        Ok(())
    }

    /// Records an observed state at time `at` (RFC 3339).
    pub fn set_observed(&self, id: &str, o: &Observed, at: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE instances SET state = ?2, exit_code = ?3, last_error = ?4, \
             state_changed_at = ?5 WHERE id = ?1",
            params![
                id,
                encoding::state_to_sql(o.state),
                o.exit_code,
                o.last_error,
                at
            ],
        )?;
        Ok(())
    }

    /// Marks the start of a new run.
    pub fn set_started(
        &self,
        id: &str,
        started_at: &str,
        console: crate::console::LogPosition,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE instances SET state = 'starting', exit_code = NULL, last_error = NULL, \
             started_at = ?2, state_changed_at = ?2, console_offset = ?3, console_inode = ?4, \
             next_restart_at_ms = NULL WHERE id = ?1",
            params![
                id,
                started_at,
                console.len as i64,
                console.inode.map(|i| i as i64)
            ],
        )?;
        Ok(())
    }

    /// Sets the link conditions of every NIC of an instance, in one transaction.
    pub fn set_link_conditions(
        &self,
        id: &str,
        conditions: &rhyzome_api::LinkConditions,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let count = attachments::of_instance(&tx, id)?.len();
        for idx in 0..count {
            attachments::set_conditions(&tx, id, idx, conditions)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records the restart policy's bookkeeping.
    pub fn set_restart(
        &self,
        id: &str,
        restart_count: u32,
        next_restart_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE instances SET restart_count = ?2, next_restart_at_ms = ?3 WHERE id = ?1",
            params![id, restart_count, next_restart_at_ms],
        )?;
        Ok(())
    }

    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM instances WHERE id = ?1", [id])?;
        Ok(())
    }

    /// How many instances (deleted ones excluded) each host has, by the `host` column (empty:
    /// the primary).
    pub fn instances_per_host(&self) -> Result<std::collections::HashMap<String, u32>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT host, COUNT(*) FROM instances WHERE desired != 'deleted' GROUP BY host",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Moves an instance to another host (failover), with the decision that did.
    pub fn set_host(
        &self,
        id: &str,
        host: &str,
        placement: &PlacementRecord,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE instances SET host = ?2, placement_how = ?3, placement_reason = ?4,
             placed_at = ?5 WHERE id = ?1",
            rusqlite::params![
                id,
                host,
                placement.how,
                placement.reason,
                placement.decided_at
            ],
        )?;
        Ok(())
    }

    /// How many instances `owner` has, and their memory in MiB (deleted ones excluded).
    pub fn usage_of(&self, owner: &str) -> Result<(u32, u64), StoreError> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*), COALESCE(SUM(memory_mib), 0) FROM instances \
             WHERE owner = ?1 AND desired != 'deleted'",
            [owner],
            |r| Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// Digests of the kernels that some record still boots.
    pub fn referenced_kernels(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT DISTINCT kernel_sha256 FROM instances")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Reads a row of [`select_instances`] by column name. Values the store cannot decode are
/// `Corrupt` (the inner error); SQLite's own errors are the outer one.
fn row_to_record(row: &Row<'_>) -> rusqlite::Result<Result<InstanceRecord, StoreError>> {
    let desired: String = row.get("desired")?;
    let state: String = row.get("state")?;
    let mode: String = row.get("restart_mode")?;
    let codes: Option<String> = row.get("restart_exit_codes")?;
    let decoded = (|| {
        Ok::<_, StoreError>((
            Desired::parse(&desired)?,
            encoding::state_from_sql(state)?,
            encoding::restart_mode_from_sql(mode)?,
            encoding::exit_codes_from_sql(codes)?,
        ))
    })();
    let (desired, state, policy, exit_codes) = match decoded {
        Ok(d) => d,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(InstanceRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        kernel: row.get("kernel")?,
        kernel_sha256: row.get("kernel_sha256")?,
        kernel_parameters: row.get("kernel_parameters")?,
        memory_mib: row.get("memory_mib")?,
        vcpus: row.get("vcpus")?,
        // Another table: the reads that return records fill them in.
        attachments: Vec::new(),
        labels: labels::Labels::new(),
        desired,
        state,
        exit_code: row.get("exit_code")?,
        last_error: row.get("last_error")?,
        created_at: row.get("created_at")?,
        started_at: row.get("started_at")?,
        console_offset: row.get::<_, i64>("console_offset")? as u64,
        console_inode: row
            .get::<_, Option<i64>>("console_inode")?
            .map(|i| i as u64),
        state_changed_at: row.get("state_changed_at")?,
        restart: RestartPolicy {
            policy,
            max_retries: row.get("restart_max")?,
            exit_codes,
        },
        restart_count: row.get("restart_count")?,
        next_restart_at_ms: row.get("next_restart_at_ms")?,
        startup_priority: row.get("startup_priority")?,
        autostart: row.get("autostart")?,
        owner: row.get("owner")?,
        host: row.get("host")?,
        placement: match row.get::<_, Option<String>>("placement_how")? {
            Some(how) => Some(PlacementRecord {
                how,
                reason: row
                    .get::<_, Option<String>>("placement_reason")?
                    .unwrap_or_default(),
                decided_at: row
                    .get::<_, Option<String>>("placed_at")?
                    .unwrap_or_default(),
            }),
            None => None,
        },
        failover: row.get("failover")?,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(name: &str, mac: &str) -> InstanceRecord {
        InstanceRecord {
            id: format!("id-{name}"),
            name: name.into(),
            kernel: "/k".into(),
            kernel_sha256: "ab".into(),
            kernel_parameters: "--ipv4 10.0.0.2/24".into(),
            memory_mib: 32,
            vcpus: 1,
            attachments: vec![attachments::Attachment {
                device: None,
                bridge: "br0".into(),
                mac: mac.into(),
                pci_slot: None,
                conditions: Default::default(),
                network: None,
                address: None,
                emulator_port: None,
            }],
            labels: [("group".to_string(), "eu".to_string())].into(),
            desired: Desired::Running,
            state: InstanceState::Pending,
            exit_code: None,
            last_error: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            started_at: None,
            console_offset: 0,
            console_inode: None,
            state_changed_at: "2026-01-01T00:00:00Z".into(),
            restart: RestartPolicy {
                policy: rhyzome_api::RestartMode::OnFailure,
                max_retries: Some(3),
                exit_codes: Some(vec![1, 2]),
            },
            restart_count: 0,
            next_restart_at_ms: None,
            startup_priority: -2,
            autostart: true,
            owner: "alice".into(),
            host: String::new(),
            placement: None,
            failover: false,
        }
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let r = record("a", "02:00:00:00:00:01");
        {
            let s = Store::open(dir.path()).unwrap();
            s.insert(&r).unwrap();
            s.set_started(
                &r.id,
                "2026-01-01T00:00:01Z",
                crate::console::LogPosition {
                    len: 42,
                    inode: Some(7),
                },
            )
            .unwrap();
            s.set_observed(
                &r.id,
                &Observed {
                    state: InstanceState::Exited,
                    exit_code: Some(3),
                    last_error: None,
                },
                "2026-01-01T00:00:02Z",
            )
            .unwrap();
            s.set_restart(&r.id, 2, Some(1234)).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let got = s.by_name("a").unwrap().unwrap();
        assert_eq!(got.state, InstanceState::Exited);
        assert_eq!(got.exit_code, Some(3));
        assert_eq!((got.console_offset, got.console_inode), (42, Some(7)));
        assert_eq!(got.started_at.as_deref(), Some("2026-01-01T00:00:01Z"));
        assert_eq!(got.state_changed_at, "2026-01-01T00:00:02Z");
        assert_eq!((got.restart_count, got.next_restart_at_ms), (2, Some(1234)));
        assert_eq!(got.restart, r.restart);
        assert_eq!((got.startup_priority, got.autostart), (-2, true));
        assert_eq!(got.labels, r.labels);
        assert_eq!(s.all().unwrap()[0].labels, r.labels);
        assert_eq!(s.usage_of("alice").unwrap(), (1, 32));
        assert_eq!(s.usage_of("bob").unwrap(), (0, 0));
    }

    #[test]
    fn each_database_has_its_own_lasting_identity() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = Store::open(one.path()).unwrap().daemon_id().to_string();
        assert_eq!(Store::open(one.path()).unwrap().daemon_id(), first);
        assert_ne!(Store::open(two.path()).unwrap().daemon_id(), first);
    }

    #[test]
    fn the_database_and_its_journal_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.insert(&record("a", "02:00:00:00:00:01")).unwrap();
        for f in ["rhyzome.db", "rhyzome.db-wal", "rhyzome.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    #[test]
    fn names_and_macs_are_unique() {
        let s = Store::in_memory().unwrap();
        s.insert(&record("a", "02:00:00:00:00:01")).unwrap();
        let mut dup = record("a", "02:00:00:00:00:02");
        dup.id = "other".into();
        assert!(matches!(s.insert(&dup), Err(StoreError::NameTaken(n)) if n == "a"));
        let dup_mac = record("b", "02:00:00:00:00:01");
        assert!(matches!(s.insert(&dup_mac), Err(StoreError::MacTaken(_))));
        assert_eq!(s.all().unwrap().len(), 1);
    }

    #[test]
    fn the_generation_moves_with_every_write_and_only_then() {
        let s = Store::in_memory().unwrap();
        let g0 = s.generation();
        s.all().unwrap();
        assert_eq!(s.generation(), g0);
        let r = record("a", "02:00:00:00:00:01");
        s.insert(&r).unwrap();
        let g1 = s.generation();
        assert!(g1 > g0);
        s.set_restart(&r.id, 1, None).unwrap();
        assert!(s.generation() > g1);
    }

    /// Every field survives a write and a read, each with a value no other field has, so a
    /// column written or read under another's name cannot go unnoticed.
    #[test]
    fn every_column_is_written_and_read_under_its_own_name() {
        let s = Store::in_memory().unwrap();
        let r = InstanceRecord {
            id: "id-1".into(),
            name: "name-2".into(),
            kernel: "kernel-3".into(),
            kernel_sha256: "sha-4".into(),
            kernel_parameters: "params-5".into(),
            memory_mib: 6,
            vcpus: 7,
            attachments: vec![
                attachments::Attachment {
                    device: None,
                    bridge: "bridge-8".into(),
                    mac: "mac-9".into(),
                    pci_slot: None,
                    conditions: Default::default(),
                    network: None,
                    address: None,
                    emulator_port: None,
                },
                attachments::Attachment {
                    device: Some("device-28".into()),
                    bridge: "bridge-29".into(),
                    mac: "mac-30".into(),
                    pci_slot: Some(31),
                    conditions: rhyzome_api::LinkConditions {
                        latency_ms: Some(36.0),
                        jitter_ms: Some(37.0),
                        loss_percent: Some(38.0),
                        loss_correlation_percent: Some(39.0),
                        rate_bps: Some(40_000),
                        down: Some(true),
                    },
                    network: None,
                    address: None,
                    emulator_port: None,
                },
            ],
            labels: [
                ("key-32".to_string(), "value-33".to_string()),
                ("key-34".to_string(), "value-35".to_string()),
            ]
            .into(),
            desired: Desired::Stopped,
            state: InstanceState::Crashed,
            exit_code: Some(12),
            last_error: Some("error-13".into()),
            created_at: "created-14".into(),
            started_at: Some("started-15".into()),
            console_offset: 16,
            console_inode: Some(17),
            state_changed_at: "changed-18".into(),
            restart: RestartPolicy {
                policy: rhyzome_api::RestartMode::Always,
                max_retries: Some(20),
                exit_codes: Some(vec![21, 22]),
            },
            restart_count: 23,
            next_restart_at_ms: Some(24),
            startup_priority: 25,
            autostart: true,
            owner: "owner-27".into(),
            host: String::new(),
            placement: None,
            failover: false,
        };
        s.insert(&r).unwrap();
        assert_eq!(s.by_name("name-2").unwrap(), Some(r.clone()));
        assert_eq!(s.all().unwrap(), [r]);
    }

    #[test]
    fn deleted_records_are_invisible() {
        let s = Store::in_memory().unwrap();
        let r = record("a", "02:00:00:00:00:01");
        s.insert(&r).unwrap();
        s.set_desired(&r.id, Desired::Deleted).unwrap();
        assert!(s.visible().unwrap().is_empty());
        assert_eq!(s.all().unwrap().len(), 1);
    }
}
