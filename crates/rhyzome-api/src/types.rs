//! Request and response bodies. Field names are the JSON names; every request type rejects
//! unknown fields so that a typo is reported instead of silently ignored.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a client asks for when it creates an instance. Exactly one of `kernel` and `image`
/// names what it boots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, try_from = "crate::images::InstanceSpecWire")]
pub struct InstanceSpec {
    /// Instance name: a DNS label, 1 to 63 characters of `[a-z0-9-]`, not starting or ending
    /// with `-`.
    #[schema(
        example = "msgrouter",
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub name: String,
    /// Absolute path of the unikernel image on the server. It must resolve, after following
    /// symlinks, inside one of the daemon's `KernelDirs`.
    /// Empty when `image` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(example = "/var/lib/rhyzome/kernels/msgrouter.virtio")]
    pub kernel: String,
    /// Reference of an uploaded image to boot instead of `kernel`: `name[:tag]` or
    /// `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "web:1.0")]
    pub image: Option<String>,
    /// For images whose Solo5 manifest declares several network devices: the bridge of each
    /// device, by device name (`{"service": "br0", "admin": "br1"}`). Each device gets a NIC,
    /// in manifest order. Not allowed together with `network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nets: Option<std::collections::BTreeMap<String, String>>,
    /// For images whose Solo5 manifest declares block devices: the volume of each device, by
    /// device name (`{"storage": {"volume": "data"}}`). Every declared device needs one; each
    /// becomes a virtio-blk disk, in manifest order. A volume is attached read-write to one
    /// instance at a time, or read-only (`read_only`) to any number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<std::collections::BTreeMap<String, crate::volumes::VolumeMount>>,
    /// Command line handed to the unikernel, at most 8191 bytes, no control characters.
    #[serde(default)]
    #[schema(
        example = "--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.43/24",
        max_length = 8191,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub kernel_parameters: String,
    /// Guest memory in MiB, 2 to 65536 (default 32).
    #[serde(default)]
    #[schema(minimum = 2, maximum = 65536)]
    pub memory_mib: Option<u32>,
    /// Virtual CPUs, 1 to 64 (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64)]
    pub vcpus: Option<u32>,
    /// Network attachment; when absent the instance joins the daemon's `BridgeInterface`.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
    /// What to do when the unikernel ends by itself (default: `never` restart).
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    /// Start-up order when the daemon starts guests: lower numbers first, and a group waits
    /// until the previous one runs (default 0).
    #[serde(default)]
    pub startup_priority: Option<i32>,
    /// Start the instance again when the daemon finds its guest gone without an exit (after a
    /// host reboot, for example). Default `false`.
    #[serde(default)]
    pub autostart: Option<bool>,
    /// Labels (`{"group": "eu"}`) that select the instance for `GET /v1/instances?selector=`
    /// and for network partitions. Keys: 1 to 63 characters of `[a-z0-9._-]`, starting and
    /// ending with a letter or digit; values: 0 to 63 characters of `[A-Za-z0-9._-]`; at most
    /// 32 labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Link conditions of every NIC of the instance (see `LinkConditions`). On a plain
    /// network only `rate_bps` can be honoured; the others need an emulated network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkConditions>,
    /// The host to run on (`Hosts[].Name`); without it the scheduler chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "b")]
    pub host: Option<String>,
    /// Only hosts with all these labels (`{"rack": "2"}`) are considered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_selector: Option<std::collections::BTreeMap<String, String>>,
    /// How the scheduler ranks hosts: `spread` (default) or `binpack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::hosts::PlacementPolicy>,
    /// Recreate the instance on another host when its host stays unreachable for the
    /// daemon's `FailoverAfterSeconds`. Not allowed with `host` or a read-write volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<bool>,
}

/// When an instance that ended by itself is started again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    pub policy: RestartMode,
    /// Give up (state `failed`) after this many consecutive restarts. Default 5.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// With `on_failure`: the exit codes that count as failure. Default: every code but 0. A
    /// crash always counts.
    #[serde(default)]
    pub exit_codes: Option<Vec<i32>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    #[default]
    Never,
    OnFailure,
    Always,
}

impl RestartMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartMode::Never => "never",
            RestartMode::OnFailure => "on_failure",
            RestartMode::Always => "always",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "never" => RestartMode::Never,
            "on_failure" => RestartMode::OnFailure,
            "always" => RestartMode::Always,
            _ => return None,
        })
    }
}

/// Consecutive restarts after which a policy without `max_retries` gives up.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

/// How an instance is connected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// `bridge` (the default) or `none`.
    #[serde(default)]
    pub mode: NetworkMode,
    /// Host bridge to join; defaults to the daemon's `BridgeInterface`. Only with mode `bridge`.
    #[serde(default)]
    pub bridge: Option<String>,
    /// MAC address of the virtio NIC, `xx:xx:xx:xx:xx:xx`; derived from the name when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// A managed network to join instead of a host bridge: the NIC gets an IPv4 address from
    /// its subnet (see `/v1/networks`). Not with `bridge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "lab")]
    pub name: Option<String>,
    /// With `name`: the address to give the NIC, instead of the lowest free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "10.20.0.5")]
    pub ipv4: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    #[default]
    Bridge,
    None,
}

/// Lifecycle state of an instance as the daemon last observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Accepted and stored; the domain is not created yet.
    Pending,
    /// The domain is being created.
    Starting,
    /// The domain runs.
    Running,
    /// Stopped on request, or destroyed outside rhyzome (`virsh destroy`, another tool; then
    /// `last_error` is "domain destroyed outside rhyzome").
    Stopped,
    /// The unikernel exited by itself; see `exit_code`.
    Exited,
    /// The unikernel aborted (Solo5 `ABORT`) or libvirt reported a crash.
    Crashed,
    /// The daemon could not run it; see `last_error`.
    Failed,
    /// Its host cannot be reached: the guest may still run there. The daemon keeps trying,
    /// and adopts the guest when the host answers again.
    Unknown,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Stopped => "stopped",
            InstanceState::Exited => "exited",
            InstanceState::Crashed => "crashed",
            InstanceState::Failed => "failed",
            InstanceState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => InstanceState::Pending,
            "starting" => InstanceState::Starting,
            "running" => InstanceState::Running,
            "stopped" => InstanceState::Stopped,
            "exited" => InstanceState::Exited,
            "crashed" => InstanceState::Crashed,
            "failed" => InstanceState::Failed,
            "unknown" => InstanceState::Unknown,
            _ => return None,
        })
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The network an instance is attached to, as resolved by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NetworkAttachment {
    pub bridge: String,
    pub mac: String,
    /// On a managed network: the address it gave (`A.B.C.D/N`). Otherwise the address given
    /// by `--ipv4` in the kernel parameters, if any (informational: the unikernel configures
    /// itself).
    pub ipv4: Option<String>,
    /// The managed network the NIC is on, if it is on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// What a running instance uses now, as the hypervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStats {
    pub name: String,
    /// CPU time the guest has used since it started, in nanoseconds.
    pub cpu_time_ns: u64,
    /// Memory given to the guest, in KiB.
    pub memory_kib: u64,
    /// Resident memory of the guest's QEMU process, in KiB, when libvirt reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib: Option<u64>,
    /// Counters of every NIC, in the instance's NIC order.
    pub nics: Vec<NicStats>,
}

/// Traffic counters of one NIC, from the host's side of its tap, as seen by the guest: `rx`
/// is what the guest received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NicStats {
    pub mac: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// One NIC of an instance, as an entry of its ordered `attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NicAttachment {
    /// The Solo5 manifest device the NIC serves, for an image that declares several network
    /// devices; absent for an instance's single NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub bridge: String,
    pub mac: String,
    /// Fixed PCI slot on bus 0 (Solo5 assigns NICs to manifest devices in PCI slot order);
    /// absent when libvirt chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_slot: Option<u8>,
    /// The link conditions set on this NIC; absent when none is.
    #[serde(default, skip_serializing_if = "LinkConditions::is_empty")]
    pub conditions: LinkConditions,
    /// The managed network the NIC is on, if it is on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The address the managed network gave it (`A.B.C.D/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
}

/// One NIC of an instance whose image declares several network devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InterfaceAttachment {
    /// The manifest device the NIC serves.
    pub device: String,
    pub bridge: String,
    pub mac: String,
    /// PCI slot on bus 0 (Solo5 assigns NICs to manifest devices in PCI slot order).
    pub pci_slot: u8,
    /// The managed network the NIC is on, if it is on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The address the managed network gave it (`A.B.C.D/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
}

/// Where an instance's devices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSource {
    /// The image's Solo5 manifest: the instance gets exactly the devices it declares (Solo5
    /// aborts at boot on any virtio device it does not declare).
    Manifest,
    /// The kernel has no Solo5 manifest: one NIC, as `network` says (unless its mode is
    /// `none`).
    Default,
}

impl DeviceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceSource::Manifest => "manifest",
            DeviceSource::Default => "default",
        }
    }
}

/// Which devices an instance got, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceSelection {
    pub source: DeviceSource,
    /// The devices the image's manifest declares, in manifest order (empty for `default`).
    pub manifest_devices: Vec<crate::images::ManifestDevice>,
    /// How many NICs the instance has.
    pub nics: u32,
    /// One line for people, e.g. `no devices: the image's Solo5 manifest declares none`.
    pub summary: String,
}

/// An instance as the daemon stores and observes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    /// Stable identifier; also the libvirt domain UUID.
    pub id: String,
    pub name: String,
    /// Name of the libvirt domain that runs the instance.
    pub domain_name: String,
    /// The kernel path as requested.
    pub kernel: String,
    /// SHA-256 of the kernel image the instance boots (the daemon keeps its own copy).
    pub kernel_sha256: String,
    /// The image reference the instance was created from (`null` for a server path kernel).
    #[serde(default)]
    pub image: Option<String>,
    /// Every NIC of the instance, in order (for an image with several network devices,
    /// manifest and PCI slot order); empty without a network. `network` and `interfaces`
    /// say the same for older clients.
    #[serde(default)]
    pub attachments: Vec<NicAttachment>,
    /// Every NIC when the image's manifest declares several network devices, in manifest
    /// (and PCI slot) order; empty otherwise (`network` describes the single NIC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceAttachment>,
    /// Its volumes, one per block device of its image's manifest, in manifest order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volumes::VolumeAttachment>,
    /// The kernel parameters as written, placeholders and all.
    pub kernel_parameters: String,
    /// What reaches the unikernel: `kernel_parameters` with `{ip}`, `{cidr}`, ... filled in
    /// from the instance's own addresses.
    #[serde(default)]
    pub kernel_parameters_expanded: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// The first NIC (of `attachments`); `null` when the instance has no network.
    pub network: Option<NetworkAttachment>,
    /// Which devices the instance got, and why: those its image's Solo5 manifest declares,
    /// or, for a kernel without one, the default NIC. `null` only from daemons that predate
    /// device selection.
    #[serde(default)]
    pub devices: Option<DeviceSelection>,
    pub state: InstanceState,
    /// Whether the daemon keeps the instance running (`running`) or not (`stopped`).
    pub desired_state: DesiredState,
    /// Exit code recovered from the console (`Solo5: solo5_exit(N) called`).
    pub exit_code: Option<i32>,
    /// Why the last operation on this instance failed, if it did.
    pub last_error: Option<String>,
    /// RFC 3339 time of creation.
    pub created_at: String,
    /// RFC 3339 time the domain was last started, if it runs or ran.
    pub started_at: Option<String>,
    /// RFC 3339 time of the last change of `state`.
    pub state_changed_at: String,
    pub restart: RestartPolicy,
    /// Restarts made by the restart policy since the instance last ran stably.
    pub restart_count: u32,
    /// When the restart policy will start the instance again, if it will.
    pub next_restart_at: Option<String>,
    pub startup_priority: i32,
    pub autostart: bool,
    /// The token that created it (`anonymous` while authentication is off).
    pub owner: String,
    /// Its labels, as given at creation.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The host it runs on and why (`null` only from daemons that predate hosts).
    #[serde(default)]
    pub placement: Option<crate::hosts::Placement>,
    /// Whether it is recreated on another host when its host stays unreachable.
    #[serde(default)]
    pub failover: bool,
}

/// A change of an instance's state, as streamed by `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// RFC 3339 time of the change.
    pub time: String,
    /// The instance's name; `network:NAME` for an event of a network (state
    /// `emulator_restarted`: its link emulator had died and was started again).
    pub instance: String,
    /// The new state; `deleted` when the instance is gone; `ready` when a test bed's
    /// instance passed its group's readiness check (its state stays `running`).
    pub state: String,
    pub exit_code: Option<i32>,
    /// Why, when the daemon knows (`restart 2/5 in 400ms`, `crash loop: ...`).
    pub reason: Option<String>,
    pub restart_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    Running,
    Stopped,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }
}

/// `GET /v1/instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceList {
    pub instances: Vec<Instance>,
}

/// `GET /v1/info`: what this daemon is and how it runs guests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    pub hostname: String,
    /// The daemon's identity: a UUID made at its first start and kept in its database. Every
    /// domain it creates carries it, and it destroys no domain that does not. Empty from
    /// daemons older than identities.
    #[serde(default)]
    pub daemon_id: String,
    pub version: String,
    /// libvirt domain type used for guests: `kvm`, `qemu` or `test`.
    pub domain_type: String,
    pub libvirt_uri: String,
    pub default_bridge: String,
    /// Who asked, so that a client (the dashboard) offers only what its token allows. Absent
    /// from daemons before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<CallerInfo>,
}

/// The caller of `GET /v1/info` as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CallerInfo {
    /// The token's name; `anonymous` while no token exists, `local:uid=N` on the local socket.
    pub name: String,
    /// `metrics`, `viewer`, `operator` or `admin`.
    pub role: String,
    /// The name prefix the token is limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Every error response has this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable kind, for example `invalid_field`, `not_found`, `conflict`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault, as a dotted path (`network.mac`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Query of `GET /v1/instances`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstanceListQuery {
    /// Only instances carrying every one of these labels: `key=value[,key=value...]`.
    #[serde(default)]
    pub selector: Option<String>,
}

/// Query of `GET /v1/instances/{name}/console`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    /// Return at most this many bytes from the end of the console log (default: up to 1 MiB).
    #[serde(default, deserialize_with = "crate::types::byte_count")]
    pub tail_bytes: Option<u64>,
    /// Return only the last N lines.
    #[serde(default, deserialize_with = "crate::types::byte_count")]
    pub tail: Option<u64>,
    /// Only the output of the current (or last) run.
    #[serde(default)]
    pub current_run: Option<bool>,
    /// Only output written since this time: RFC 3339 (`2026-11-27T07:00:00Z`) or a duration
    /// back from now (`10m`, `90s`, `2h`). Resolved to the reconciler's sampling interval.
    #[serde(default)]
    pub since: Option<String>,
    /// Keep the response open and stream new output as it is written.
    #[serde(default)]
    pub follow: Option<bool>,
    /// Start at this byte offset of the log: the `Console-Offset` of an earlier response plus
    /// the bytes received since, to go on without loss or repetition. A log now shorter than
    /// this was rotated and is read from its beginning.
    #[serde(default, deserialize_with = "crate::types::byte_count")]
    pub after: Option<u64>,
}

/// A count or offset given in a query: the documented `int64` range, never more, so that what
/// the document calls invalid is refused (400) rather than quietly accepted.
fn byte_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<u64>::deserialize(d)?;
    match value {
        Some(v) if v > i64::MAX as u64 => Err(serde::de::Error::custom(format!(
            "{v} is more than the largest allowed, {}",
            i64::MAX
        ))),
        _ => Ok(value),
    }
}

/// `PUT /v1/instances/{name}/link`: the conditions of every NIC of the instance, replacing
/// those set before (an empty object clears them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceLink {
    pub conditions: LinkConditions,
}

/// Link conditions of a NIC, or a network's defaults for its NICs. They apply to the frames
/// a NIC sends into the network, so a round trip between two NICs carries both NICs'
/// latency. An absent field is not set here: a NIC's absent field takes the network's
/// default, and a network's absent field means no such condition. On a plain (not emulated)
/// network only `rate` can be honoured (by libvirt's `<bandwidth>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkConditions {
    /// Added one-way delay, in milliseconds (0 to 60000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 60000, example = 40)]
    pub latency_ms: Option<f64>,
    /// Each frame's delay varies uniformly by up to this many milliseconds either way (0 to
    /// 60000; frames are never reordered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 60000, example = 5)]
    pub jitter_ms: Option<f64>,
    /// Share of frames dropped, in percent (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100, example = 1)]
    pub loss_percent: Option<f64>,
    /// How much a frame's fate follows the previous frame's, in percent (0 to 100): the
    /// lag-one correlation of a two-state loss process whose average stays `loss_percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 100, example = 25)]
    pub loss_correlation_percent: Option<f64>,
    /// Bandwidth in bits per second (1000 to 100000000000); a full queue drops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1000, maximum = 100000000000_i64, example = 10000000)]
    pub rate_bps: Option<i64>,
    /// The link is cut: every frame is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<bool>,
}

/// Equality is total: the fields are finite (JSON has no NaN, and `validate_conditions` and
/// `parse_conditions` refuse non-finite values), so the types that hold conditions can stay
/// `Eq` like the rest of the API.
impl Eq for LinkConditions {}

impl LinkConditions {
    /// `self`, with each field it leaves unset taken from `defaults`.
    pub fn or(self, defaults: LinkConditions) -> LinkConditions {
        LinkConditions {
            latency_ms: self.latency_ms.or(defaults.latency_ms),
            jitter_ms: self.jitter_ms.or(defaults.jitter_ms),
            loss_percent: self.loss_percent.or(defaults.loss_percent),
            loss_correlation_percent: self
                .loss_correlation_percent
                .or(defaults.loss_correlation_percent),
            rate_bps: self.rate_bps.or(defaults.rate_bps),
            down: self.down.or(defaults.down),
        }
    }

    /// Whether any field is set.
    pub fn is_empty(&self) -> bool {
        *self == LinkConditions::default()
    }

    /// Whether a condition other than `rate` is set, which only an emulated network honours.
    pub fn needs_emulation(&self) -> bool {
        LinkConditions {
            rate_bps: None,
            ..*self
        } != LinkConditions::default()
    }
}

impl std::fmt::Display for LinkConditions {
    /// The text form `parse_conditions` reads: `latency=40ms,jitter=5ms,loss=1%/25%,rate=10000000bit,down`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = self.latency_ms {
            parts.push(format!("latency={v}ms"));
        }
        if let Some(v) = self.jitter_ms {
            parts.push(format!("jitter={v}ms"));
        }
        match (self.loss_percent, self.loss_correlation_percent) {
            (Some(l), Some(c)) => parts.push(format!("loss={l}%/{c}%")),
            (Some(l), None) => parts.push(format!("loss={l}%")),
            (None, Some(c)) => parts.push(format!("loss-correlation={c}%")),
            (None, None) => {}
        }
        if let Some(v) = self.rate_bps {
            parts.push(format!("rate={v}bit"));
        }
        match self.down {
            Some(true) => parts.push("down".into()),
            Some(false) => parts.push("up".into()),
            None => {}
        }
        if parts.is_empty() {
            return f.write_str("-");
        }
        f.write_str(&parts.join(","))
    }
}
