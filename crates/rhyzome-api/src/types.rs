//! Request and response bodies. Field names are the JSON names; every request type rejects
//! unknown fields so that a typo is reported instead of silently ignored.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a client asks for when it creates an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Instance name: a DNS label, 1 to 63 characters of `[a-z0-9-]`, not starting or ending
    /// with `-`.
    #[schema(example = "msgrouter")]
    pub name: String,
    /// Absolute path of the unikernel image on the server. It must resolve, after following
    /// symlinks, inside one of the daemon's `KernelDirs`.
    #[schema(example = "/var/lib/rhyzome/kernels/msgrouter.virtio")]
    pub kernel: String,
    /// Command line handed to the unikernel, at most 8191 bytes, no control characters.
    #[serde(default)]
    #[schema(example = "--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.43/24")]
    pub kernel_parameters: String,
    /// Guest memory in MiB (default 32).
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Virtual CPUs (default 1).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Network attachment; when absent the instance joins the daemon's `BridgeInterface`.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
}

/// How an instance is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    /// Stopped on request.
    Stopped,
    /// The unikernel exited by itself; see `exit_code`.
    Exited,
    /// The unikernel aborted (Solo5 `ABORT`) or libvirt reported a crash.
    Crashed,
    /// The daemon could not run it; see `last_error`.
    Failed,
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
    /// The address given by `--ipv4` in the kernel parameters, if any (informational: the
    /// unikernel configures itself).
    pub ipv4: Option<String>,
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
    pub kernel_parameters: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// `null` when the instance has no network.
    pub network: Option<NetworkAttachment>,
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
    pub version: String,
    /// libvirt domain type used for guests: `kvm`, `qemu` or `test`.
    pub domain_type: String,
    pub libvirt_uri: String,
    pub default_bridge: String,
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

/// Query of `GET /v1/instances/{name}/console`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    /// Return at most this many bytes from the end of the console log (default: up to 1 MiB).
    #[serde(default)]
    pub tail_bytes: Option<u64>,
}
