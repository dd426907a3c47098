//! `rhyzome.conf`: the daemon's JSON configuration.
//!
//! Keys keep the PascalCase spelling of the original Rhyzome documentation (`BridgeInterface`,
//! `Hostname`, `Bind`). Unknown keys are errors, because a misspelt key silently falling back
//! to a default is the worst kind of configuration bug. A line whose first non-blank
//! characters are `//` is a comment (the packaged file documents every key that way). Parsing is pure and single-threaded;
//! the loaded [`Config`] is immutable and shared read-only.

pub mod hosts;

pub use hosts::HostConfig;
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// Which libvirt domain type guests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DomainTypeSetting {
    /// `kvm` when hardware virtualisation really works here, otherwise `qemu` (TCG).
    #[default]
    Auto,
    Kvm,
    Qemu,
    /// libvirt's `test:///default` driver; only useful for tests.
    Test,
}

/// The configuration file as written, before defaults and checks.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "BridgeInterface")]
    bridge_interface: Option<String>,
    #[serde(rename = "Hostname")]
    hostname: Option<String>,
    #[serde(rename = "Bind")]
    bind: Option<String>,
    #[serde(rename = "MetricsBind")]
    metrics_bind: Option<String>,
    #[serde(rename = "MetricsMaxAgeMillis")]
    metrics_max_age_millis: Option<u64>,
    #[serde(rename = "LibvirtURI")]
    libvirt_uri: Option<String>,
    #[serde(rename = "DomainType")]
    domain_type: Option<DomainTypeSetting>,
    #[serde(rename = "StateDir")]
    state_dir: Option<PathBuf>,
    #[serde(rename = "KernelDirs")]
    kernel_dirs: Option<Vec<PathBuf>>,
    #[serde(rename = "ReconcileIntervalSeconds")]
    reconcile_interval_seconds: Option<u64>,
    #[serde(rename = "RestartBackoffMs")]
    restart_backoff_ms: Option<u64>,
    #[serde(rename = "RestartBackoffMaxMs")]
    restart_backoff_max_ms: Option<u64>,
    #[serde(rename = "RestartStableSeconds")]
    restart_stable_seconds: Option<u64>,
    #[serde(rename = "StopGuestsOnShutdown")]
    stop_guests_on_shutdown: Option<bool>,
    #[serde(rename = "MaxImageBytes")]
    max_image_bytes: Option<u64>,
    #[serde(rename = "VolumePool")]
    volume_pool: Option<String>,
    #[serde(rename = "MaxVolumeUploadBytes")]
    max_volume_upload_bytes: Option<u64>,
    #[serde(rename = "TLSCert")]
    tls_cert: Option<PathBuf>,
    #[serde(rename = "TLSKey")]
    tls_key: Option<PathBuf>,
    #[serde(rename = "Insecure")]
    insecure: Option<bool>,
    #[serde(rename = "CreateRateLimit")]
    create_rate_limit: Option<f64>,
    #[serde(rename = "CreateBurst")]
    create_burst: Option<u32>,
    #[serde(rename = "HeaderTimeoutSeconds")]
    header_timeout_seconds: Option<u64>,
    #[serde(rename = "RequestTimeoutSeconds")]
    request_timeout_seconds: Option<u64>,
    #[serde(rename = "MaxStreamSeconds")]
    max_stream_seconds: Option<u64>,
    #[serde(rename = "MaxStreamsPerCaller")]
    max_streams_per_caller: Option<u32>,
    #[serde(rename = "Socket")]
    socket: Option<PathBuf>,
    #[serde(rename = "SocketGroup")]
    socket_group: Option<String>,
    #[serde(rename = "LinkEmulator")]
    link_emulator: Option<PathBuf>,
    #[serde(rename = "LinkEmulatorNetns")]
    link_emulator_netns: Option<PathBuf>,
    #[serde(rename = "LinkEmulatorAddress")]
    link_emulator_address: Option<std::net::Ipv4Addr>,
    #[serde(rename = "Hosts")]
    hosts: Option<Vec<hosts::RawHost>>,
    #[serde(rename = "FailoverAfterSeconds")]
    failover_after_seconds: Option<u64>,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub bridge_interface: String,
    pub hostname: String,
    /// `Bind` as written, for messages.
    pub bind: String,
    pub bind_addr: SocketAddr,
    /// `MetricsBind`: a loopback address serving `GET /metrics` alone, without a token.
    pub metrics_bind: Option<SocketAddr>,
    /// `MetricsMaxAgeMillis`: how old the domain counters a scrape serves may be (a
    /// background refresher makes one bulk call per interval while scrapes come); zero reads
    /// the hypervisor at every scrape.
    pub metrics_max_age: std::time::Duration,
    pub libvirt_uri: String,
    pub domain_type: DomainTypeSetting,
    pub state_dir: PathBuf,
    pub kernel_dirs: Vec<PathBuf>,
    pub reconcile_interval: std::time::Duration,
    /// First delay of a restart policy's exponential back-off.
    pub restart_backoff: std::time::Duration,
    /// Cap of that back-off.
    pub restart_backoff_max: std::time::Duration,
    /// A run this long resets an instance's restart count.
    pub restart_stable: std::time::Duration,
    /// Destroy every guest when the daemon stops (SIGTERM/SIGINT); by default they keep running.
    pub stop_guests_on_shutdown: bool,
    /// Largest image `POST /v1/images` accepts.
    pub max_image_bytes: u64,
    /// An existing libvirt storage pool to keep volumes in, instead of the daemon's own
    /// (`StateDir/volumes`).
    pub volume_pool: Option<String>,
    /// Largest body `PUT /v1/volumes/{name}/content` accepts.
    pub max_volume_upload_bytes: u64,
    /// Certificate chain and private key (PEM) to serve HTTPS with.
    pub tls: Option<TlsFiles>,
    /// Allow listening beyond loopback with neither TLS nor tokens.
    pub insecure: bool,
    /// Creates per second and burst allowed per caller.
    pub create_rate_limit: f64,
    pub create_burst: u32,
    /// A client must send its request headers within this time (slowloris protection).
    pub header_timeout: std::time::Duration,
    /// A request must be answered within this time (streams excepted once started).
    pub request_timeout: std::time::Duration,
    /// Longest a stream (events, followed console) stays open before the server ends it and
    /// the client reconnects.
    pub max_stream_lifetime: std::time::Duration,
    /// Most streams one caller may hold open at once; beyond, 429.
    pub max_streams_per_caller: usize,
    /// A local UNIX socket to serve the API on as well, where file permissions authenticate.
    pub socket: Option<LocalSocket>,
    /// The link emulator binary of emulated networks (`rhyzome-linkemu`).
    pub link_emulator: PathBuf,
    /// The network namespace libvirtd (so QEMU) runs in, which emulators must enter
    /// (`/run/netns/NAME`); `None` when it is the daemon's own.
    pub link_emulator_netns: Option<PathBuf>,
    /// The controller's address on the network between the hosts, in the emulators'
    /// namespace: where link emulators take frames from guests on remote hosts (each from its
    /// host's `FrameAddress`). `None`: emulated networks stay on the primary host.
    pub link_emulator_address: Option<std::net::Ipv4Addr>,
    /// The libvirt hosts, never empty; the first is the primary (see [`hosts`]).
    pub hosts: Vec<HostConfig>,
    /// How long a host stays unreachable before its `failover` instances are recreated
    /// elsewhere.
    pub failover_after: std::time::Duration,
}

/// `Socket` and `SocketGroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSocket {
    pub path: PathBuf,
    /// Members of this group may use the socket (mode 0660); without it only the daemon's
    /// user may (0600).
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub const DEFAULT_CONFIG_FILE: &str = "rhyzome.conf";
pub const DEFAULT_BRIDGE: &str = "virbr0";
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/rhyzome";
pub const DEFAULT_MAX_STREAM_SECONDS: u64 = 3600;
pub const DEFAULT_MAX_STREAMS_PER_CALLER: u32 = 32;
/// Half of a usual 15 s scrape interval: a scrape's counters are at most this old (plus one
/// bulk call).
pub const DEFAULT_METRICS_MAX_AGE_MILLIS: u64 = 5000;

/// `rhyzome-linkemu` next to the daemon's own binary (where the package and a cargo build
/// put it), else the name alone, looked up in `PATH`.
fn default_link_emulator() -> PathBuf {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("rhyzome-linkemu"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("rhyzome-linkemu"))
}

impl Config {
    /// Reads `path`. A missing file is an error only when the path was given explicitly:
    /// with `explicit == false` a missing `./rhyzome.conf` means "all defaults".
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Config::from_raw(RawConfig::default(), path);
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Config::parse(&text, path)
    }

    /// Parses the text of a configuration file; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let text = &without_comment_lines(text);
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| syntax_error(text, path, e))?;
        Config::from_raw(raw, path)
    }

    fn from_raw(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let bridge_interface = raw
            .bridge_interface
            .unwrap_or_else(|| DEFAULT_BRIDGE.into());
        rhyzome_api::validate::validate_bridge(&bridge_interface)
            .map_err(|e| invalid("BridgeInterface", e.message))?;
        let hostname = raw.hostname.unwrap_or_else(|| "localhost".into());
        if hostname.is_empty() || hostname.len() > 253 || hostname.chars().any(char::is_control) {
            return Err(invalid(
                "Hostname",
                "must be 1 to 253 printable characters".into(),
            ));
        }
        let metrics_max_age_millis = raw
            .metrics_max_age_millis
            .unwrap_or(DEFAULT_METRICS_MAX_AGE_MILLIS);
        if metrics_max_age_millis > 3_600_000 {
            return Err(invalid(
                "MetricsMaxAgeMillis",
                format!("is {metrics_max_age_millis}; it must be at most 3600000 (an hour)"),
            ));
        }
        let bind = raw.bind.unwrap_or_else(|| DEFAULT_BIND.into());
        let bind_addr = parse_bind(&bind).map_err(|m| invalid("Bind", m))?;
        let metrics_bind = match raw.metrics_bind {
            None => None,
            Some(text) => {
                let addr = parse_bind(&text).map_err(|m| invalid("MetricsBind", m))?;
                if !addr.ip().is_loopback() {
                    return Err(invalid(
                        "MetricsBind",
                        format!(
                            "{text:?} is not a loopback address: it serves /metrics without a \
                             token, so only this host may reach it (a scraper elsewhere uses a \
                             token with the metrics role on Bind)"
                        ),
                    ));
                }
                Some(addr)
            }
        };
        let hosts =
            hosts::hosts_from(raw.hosts, raw.libvirt_uri).map_err(|(key, m)| invalid(key, m))?;
        // The primary host's: what single-host code paths (networks, volumes) connect to.
        let libvirt_uri = hosts[0].uri.clone();
        let failover_after_seconds = raw
            .failover_after_seconds
            .unwrap_or(hosts::DEFAULT_FAILOVER_AFTER_SECONDS);
        if !(10..=86_400).contains(&failover_after_seconds) {
            return Err(invalid(
                "FailoverAfterSeconds",
                format!("is {failover_after_seconds}; it must be between 10 and 86400 (a day)"),
            ));
        }
        let state_dir = raw
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(invalid(
                "StateDir",
                format!("{} must be an absolute path", state_dir.display()),
            ));
        }
        // QEMU puts the kernel path in front of the command line and Solo5 drops the first
        // word, so a path with whitespace would shift the unikernel's arguments.
        if state_dir.to_string_lossy().chars().any(char::is_whitespace) {
            return Err(invalid(
                "StateDir",
                "must not contain whitespace: kernels are booted from below it and QEMU \
                 passes their path as the first word of the command line"
                    .into(),
            ));
        }
        let kernel_dirs = raw
            .kernel_dirs
            .unwrap_or_else(|| vec![state_dir.join("kernels")]);
        if let Some(d) = kernel_dirs.iter().find(|d| !d.is_absolute()) {
            return Err(invalid(
                "KernelDirs",
                format!("{} must be an absolute path", d.display()),
            ));
        }
        let interval = raw.reconcile_interval_seconds.unwrap_or(2);
        if !(1..=3600).contains(&interval) {
            return Err(invalid(
                "ReconcileIntervalSeconds",
                format!("is {interval}; it must be between 1 and 3600"),
            ));
        }
        let backoff = raw.restart_backoff_ms.unwrap_or(1000);
        let backoff_max = raw.restart_backoff_max_ms.unwrap_or(60_000);
        if !(1..=3_600_000).contains(&backoff) {
            return Err(invalid(
                "RestartBackoffMs",
                format!("is {backoff}; it must be between 1 and 3600000"),
            ));
        }
        if backoff_max < backoff || backoff_max > 86_400_000 {
            return Err(invalid(
                "RestartBackoffMaxMs",
                format!("is {backoff_max}; it must be at least RestartBackoffMs ({backoff}) and at most 86400000"),
            ));
        }
        let stable = raw.restart_stable_seconds.unwrap_or(60);
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid("TLSKey", "is required when TLSCert is set".into()))
            }
            (None, Some(_)) => {
                return Err(invalid("TLSCert", "is required when TLSKey is set".into()))
            }
        };
        let create_rate_limit = raw.create_rate_limit.unwrap_or(10.0);
        if !(create_rate_limit > 0.0 && create_rate_limit <= 1e6) {
            return Err(invalid(
                "CreateRateLimit",
                format!(
                    "is {create_rate_limit}; it must be above 0 and at most 1000000 per second"
                ),
            ));
        }
        let create_burst = raw.create_burst.unwrap_or(100);
        if create_burst == 0 {
            return Err(invalid("CreateBurst", "must be at least 1".into()));
        }
        let header_timeout = raw.header_timeout_seconds.unwrap_or(10);
        let request_timeout = raw.request_timeout_seconds.unwrap_or(120);
        if header_timeout == 0 || request_timeout == 0 {
            return Err(invalid(
                if header_timeout == 0 {
                    "HeaderTimeoutSeconds"
                } else {
                    "RequestTimeoutSeconds"
                },
                "must be at least 1".into(),
            ));
        }
        let max_stream_seconds = raw.max_stream_seconds.unwrap_or(DEFAULT_MAX_STREAM_SECONDS);
        if !(1..=7 * 86_400).contains(&max_stream_seconds) {
            return Err(invalid(
                "MaxStreamSeconds",
                format!("is {max_stream_seconds}; it must be between 1 and 604800 (a week)"),
            ));
        }
        let max_streams_per_caller = raw
            .max_streams_per_caller
            .unwrap_or(DEFAULT_MAX_STREAMS_PER_CALLER);
        if !(1..=100_000).contains(&max_streams_per_caller) {
            return Err(invalid(
                "MaxStreamsPerCaller",
                format!("is {max_streams_per_caller}; it must be between 1 and 100000"),
            ));
        }
        let socket =
            local_socket(raw.socket, raw.socket_group).map_err(|(key, m)| invalid(key, m))?;
        let link_emulator_address = match raw.link_emulator_address {
            Some(a) if a.is_loopback() || a.is_unspecified() || a.is_multicast() => {
                return Err(invalid(
                    "LinkEmulatorAddress",
                    format!(
                        "{a} is loopback, unspecified or multicast: give the controller's \
                         address on the network between the hosts"
                    ),
                ))
            }
            Some(a) if hosts.iter().any(|h| h.frame_address == Some(a)) => {
                return Err(invalid(
                    "LinkEmulatorAddress",
                    format!("{a} is also a host's FrameAddress: the emulator would send to itself"),
                ))
            }
            other => other,
        };
        Ok(Config {
            bridge_interface,
            hostname,
            bind,
            bind_addr,
            metrics_bind,
            metrics_max_age: std::time::Duration::from_millis(metrics_max_age_millis),
            libvirt_uri,
            domain_type: raw.domain_type.unwrap_or_default(),
            state_dir,
            kernel_dirs,
            reconcile_interval: std::time::Duration::from_secs(interval),
            restart_backoff: std::time::Duration::from_millis(backoff),
            restart_backoff_max: std::time::Duration::from_millis(backoff_max),
            restart_stable: std::time::Duration::from_secs(stable),
            stop_guests_on_shutdown: raw.stop_guests_on_shutdown.unwrap_or(false),
            max_image_bytes: max_image_bytes(raw.max_image_bytes)
                .map_err(|m| invalid("MaxImageBytes", m))?,
            volume_pool: match raw.volume_pool {
                Some(p) if p.is_empty() || p.chars().any(|c| c.is_control() || c == '/') => {
                    return Err(invalid(
                        "VolumePool",
                        format!("{p:?} is not a libvirt pool name"),
                    ))
                }
                p => p,
            },
            max_volume_upload_bytes: raw
                .max_volume_upload_bytes
                .unwrap_or(DEFAULT_MAX_VOLUME_UPLOAD_BYTES),
            tls,
            insecure: raw.insecure.unwrap_or(false),
            create_rate_limit,
            create_burst,
            header_timeout: std::time::Duration::from_secs(header_timeout),
            request_timeout: std::time::Duration::from_secs(request_timeout),
            max_stream_lifetime: std::time::Duration::from_secs(max_stream_seconds),
            max_streams_per_caller: max_streams_per_caller as usize,
            socket,
            hosts,
            failover_after: std::time::Duration::from_secs(failover_after_seconds),
            link_emulator: raw.link_emulator.unwrap_or_else(default_link_emulator),
            link_emulator_netns: match raw.link_emulator_netns {
                Some(p) if !p.is_absolute() => {
                    return Err(invalid(
                        "LinkEmulatorNetns",
                        format!("{} is not an absolute path", p.display()),
                    ))
                }
                other => other,
            },
            link_emulator_address,
        })
    }
}

/// The kernel's limit on a socket path (`sun_path`) is 107 bytes; 80 leaves room for the
/// private directory the socket is first bound in.
const MAX_SOCKET_PATH_CONFIGURED: usize = 80;

fn local_socket(
    path: Option<PathBuf>,
    group: Option<String>,
) -> Result<Option<LocalSocket>, (&'static str, String)> {
    let Some(path) = path else {
        return match group {
            Some(_) => Err(("SocketGroup", "is only meaningful with Socket".into())),
            None => Ok(None),
        };
    };
    if !path.is_absolute() {
        return Err((
            "Socket",
            format!("{} must be an absolute path", path.display()),
        ));
    }
    // It is bound in a private directory beside its final place first (see
    // http::local_socket), 23 bytes longer: both must fit the kernel's limit.
    if path.as_os_str().len() > MAX_SOCKET_PATH_CONFIGURED {
        return Err((
            "Socket",
            format!(
                "{} is too long for a UNIX socket: at most {MAX_SOCKET_PATH_CONFIGURED} bytes",
                path.display()
            ),
        ));
    }
    if let Some(g) = &group {
        let ok = !g.is_empty()
            && g.len() <= 32
            && g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(("SocketGroup", format!("{g:?} is not a group name")));
        }
    }
    Ok(Some(LocalSocket { path, group }))
}

/// Default of `MaxVolumeUploadBytes`: 16 GiB.
pub const DEFAULT_MAX_VOLUME_UPLOAD_BYTES: u64 = 16 << 30;

/// Default of `MaxImageBytes`: Solo5 unikernels are a few MiB.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 64 << 20;

/// `MaxImageBytes`: at least 1 KiB (nothing smaller is a kernel), at most 16 GiB.
fn max_image_bytes(v: Option<u64>) -> Result<u64, String> {
    let v = v.unwrap_or(DEFAULT_MAX_IMAGE_BYTES);
    if !(1024..=16 << 30).contains(&v) {
        return Err(format!("is {v}; it must be between 1024 and 17179869184"));
    }
    Ok(v)
}

/// `Bind` uses Go's spelling: `:8080` is every interface, `HOST:PORT` one address.
fn parse_bind(bind: &str) -> Result<SocketAddr, String> {
    let with_host = if bind.starts_with(':') {
        format!("0.0.0.0{bind}")
    } else {
        bind.to_string()
    };
    let mut addrs = with_host.to_socket_addrs().map_err(|e| {
        format!(
            "{bind:?} is not an address to listen on ({e}); use \":8080\" or \"127.0.0.1:8080\""
        )
    })?;
    addrs
        .next()
        .ok_or_else(|| format!("{bind:?} resolves to no address"))
}

/// Blanks every line that starts (after blanks) with `//`, keeping the line count so that
/// error positions still match the file. Such a line is never inside a JSON string: a string
/// cannot contain a raw line break.
fn without_comment_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| {
            if line.trim_start().starts_with("//") {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// serde_json reports where it noticed the problem. For a missing comma that is the start of
/// the next key, so the message also names the end of the previous value, where the comma
/// belongs.
fn syntax_error(text: &str, path: &Path, e: serde_json::Error) -> ConfigError {
    let mut message = e.to_string();
    // serde_json appends " at line L column C"; the position is reported separately.
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    if message.starts_with("expected `,` or `}`") || message.starts_with("expected `,` or `]`") {
        if let Some((line, column)) = end_of_previous_token(text, e.line(), e.column()) {
            message = format!(
                "missing ',' after line {line} column {column} ({message})",
                message = message
            );
        }
    }
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message,
    }
}

/// Position (1-based) of the last non-whitespace character before `line:column`.
fn end_of_previous_token(text: &str, line: usize, column: usize) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut l = line.checked_sub(1)?;
    let mut upto = column.saturating_sub(1);
    loop {
        let current: Vec<char> = lines.get(l)?.chars().collect();
        let end = upto.min(current.len());
        if let Some(i) = current[..end].iter().rposition(|c| !c.is_whitespace()) {
            return Some((l + 1, i + 1));
        }
        l = l.checked_sub(1)?;
        upto = usize::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("rhyzome.conf"))
    }

    #[test]
    fn defaults_apply_to_an_empty_object() {
        let c = parse("{}").unwrap();
        assert_eq!(c.bridge_interface, "virbr0");
        assert_eq!(c.hostname, "localhost");
        assert_eq!(c.bind_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.libvirt_uri, "qemu:///system");
        assert_eq!(c.domain_type, DomainTypeSetting::Auto);
        assert_eq!(
            c.kernel_dirs,
            vec![PathBuf::from("/var/lib/rhyzome/kernels")]
        );
        assert_eq!(c.max_stream_lifetime, std::time::Duration::from_secs(3600));
        assert_eq!(c.max_streams_per_caller, 32);
    }

    #[test]
    fn the_link_emulator_address_is_an_address_between_hosts() {
        let c = parse(r#"{"LinkEmulatorAddress": "10.8.0.1"}"#).unwrap();
        assert_eq!(c.link_emulator_address, Some("10.8.0.1".parse().unwrap()));
        assert_eq!(parse("{}").unwrap().link_emulator_address, None);
        let e = parse(r#"{"LinkEmulatorAddress": "127.0.0.1"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LinkEmulatorAddress") && e.contains("loopback"),
            "{e}"
        );
        assert!(parse(r#"{"LinkEmulatorAddress": "10.8.0"}"#).is_err());
    }

    #[test]
    fn the_original_example_is_accepted() {
        let c = parse(
            r#"{
  "BridgeInterface": "virbr0",
  "Hostname": "localhost",
  "Bind": ":8080"
}"#,
        )
        .unwrap();
        assert_eq!(c.bind_addr, "0.0.0.0:8080".parse().unwrap());
    }

    #[test]
    fn the_original_examples_missing_comma_is_pointed_at() {
        let text = "{\n  \"BridgeInterface\": \"virbr0\"\n  \"Hostname\": \"localhost\",\n  \"Bind\": \":8080\"\n}\n";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.starts_with("rhyzome.conf:3:3: "), "{e}");
        assert!(e.contains("missing ',' after line 2 column 29"), "{e}");
    }

    #[test]
    fn comment_lines_are_ignored_and_positions_still_match() {
        let text = "// Rhyzome\n{\n  // the lab bridge\n  \"BridgeInterface\": \"rzbr0\",\n  //\"Bind\": \":8080\",\n  \"Hostname\": \"a // b\"\n}\n";
        let c = parse(text).unwrap();
        assert_eq!(c.bridge_interface, "rzbr0");
        assert_eq!(c.bind_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.hostname, "a // b", "// inside a value is not a comment");
        let e = parse("// one\n// two\n{\"Bind\" 1}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("rhyzome.conf:3:"), "{e}");
        let e = parse("{\"Bind\": \":8080\" // trailing\n}")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("rhyzome.conf:1:"),
            "only whole lines are comments: {e}"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse(r#"{"BridgeInterfase": "br0"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `BridgeInterfase`"), "{e}");
    }

    #[test]
    fn a_local_socket_is_optional_and_checked() {
        assert_eq!(parse("{}").unwrap().socket, None);
        let c = parse(r#"{"Socket": "/run/rhyzome/api.sock", "SocketGroup": "rhyzome"}"#).unwrap();
        assert_eq!(
            c.socket,
            Some(LocalSocket {
                path: "/run/rhyzome/api.sock".into(),
                group: Some("rhyzome".into())
            })
        );
        for (text, key) in [
            (r#"{"Socket": "api.sock"}"#, "Socket: "),
            (r#"{"SocketGroup": "rhyzome"}"#, "SocketGroup: "),
            (
                r#"{"Socket": "/run/a.sock", "SocketGroup": "a b"}"#,
                "SocketGroup: ",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let long = format!(r#"{{"Socket": "/{}"}}"#, "a".repeat(80));
        let e = parse(&long).unwrap_err().to_string();
        assert!(e.contains("too long for a UNIX socket"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = parse(r#"{"Bind": "nonsense"}"#).unwrap_err().to_string();
        assert!(e.contains("Bind:"), "{e}");
        let e = parse(r#"{"DomainType": "xen"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown variant `xen`"), "{e}");
        let e = parse(r#"{"StateDir": "relative"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("StateDir:"), "{e}");
        let e = parse(r#"{"StateDir": "/a b"}"#).unwrap_err().to_string();
        assert!(e.contains("whitespace"), "{e}");
        let e = parse(r#"{"TLSCert": "/c.pem"}"#).unwrap_err().to_string();
        assert!(e.contains("TLSKey: is required"), "{e}");
        let e = parse(r#"{"CreateRateLimit": 0}"#).unwrap_err().to_string();
        assert!(e.contains("CreateRateLimit:"), "{e}");
        let e = parse(r#"{"RestartBackoffMs": 500, "RestartBackoffMaxMs": 100}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("RestartBackoffMaxMs:"), "{e}");
        let e = parse(r#"{"BridgeInterface": "br0'/>"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("BridgeInterface:"), "{e}");
        for bad in [
            r#"{"MaxStreamSeconds": 0}"#,
            r#"{"MaxStreamSeconds": 604801}"#,
            r#"{"MaxStreamsPerCaller": 0}"#,
            r#"{"MetricsMaxAgeMillis": 3600001}"#,
        ] {
            let e = parse(bad).unwrap_err().to_string();
            let key = bad.split('"').nth(1).unwrap();
            assert!(e.contains(&format!("{key}:")), "{bad}: {e}");
        }
        let c = parse(r#"{"MaxStreamSeconds": 60, "MaxStreamsPerCaller": 4}"#).unwrap();
        assert_eq!(
            (c.max_stream_lifetime.as_secs(), c.max_streams_per_caller),
            (60, 4)
        );
        assert_eq!(c.metrics_max_age.as_millis(), 5000);
        let c = parse(r#"{"MetricsMaxAgeMillis": 0}"#).unwrap();
        assert!(c.metrics_max_age.is_zero());
    }

    #[test]
    fn a_missing_default_file_means_defaults_but_an_explicit_one_is_an_error() {
        let p = Path::new("/nonexistent/rhyzome.conf");
        assert!(Config::load(p, false).is_ok());
        assert!(matches!(
            Config::load(p, true),
            Err(ConfigError::Read { .. })
        ));
    }
}
