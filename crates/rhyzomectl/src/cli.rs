//! Command-line grammar (clap derive). Every verb has `--help`.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "rhyzomectl",
    version,
    about = "Control a Rhyzome daemon: deploy and manage unikernels"
)]
pub struct Cli {
    /// Base URL of the rhyzomesrv API, or its local socket as unix:///PATH [default: the
    /// configured server, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "RHYZOME_SERVER")]
    pub server: Option<String>,
    /// Named server from the client configuration file (see `rhyzomectl config`).
    #[arg(long, global = true, env = "RHYZOME_CONTEXT")]
    pub context: Option<String>,
    /// API token (rhz_...).
    #[arg(long, global = true, env = "RHYZOME_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA (or self-signed certificate) to trust for https.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Trust only the server certificate with this SHA-256 fingerprint (sha256:...).
    #[arg(long, global = true, value_name = "FP", conflicts_with = "ca")]
    pub fingerprint: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// The connection options given on the command line or in the environment.
pub struct Globals {
    pub server: Option<String>,
    pub token: Option<String>,
    pub ca: Option<std::path::PathBuf>,
    pub fingerprint: Option<String>,
}

impl Cli {
    pub fn globals(&self) -> Globals {
        Globals {
            server: self.server.clone(),
            token: self.token.clone(),
            ca: self.ca.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// JSON, as the API returns it.
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Manage unikernel instances.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Manage uploaded unikernel images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Show what the daemon is and how it runs guests.
    Info,
    /// Print instance state changes as they happen (until interrupted).
    Events {
        /// Only this instance's events.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Manage the client configuration file (named servers, tokens, trust).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (one per command) into a directory; used to build the package.
    #[command(hide = true)]
    Man {
        #[arg(long)]
        out_dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Add or change a named server.
    Set(ConfigSetArgs),
    /// Make a named server the default.
    Use { name: String },
    /// List the named servers.
    List,
}

/// The entry's values are the global options: `rhyzomectl --server URL --token T
/// [--ca FILE | --fingerprint FP] config set NAME`, or after the name.
#[derive(Args)]
pub struct ConfigSetArgs {
    /// Name of the server entry.
    pub name: String,
    /// Also make it the default.
    #[arg(long = "use")]
    pub use_it: bool,
}

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Create an instance and boot it (or a test bed of them, with --count).
    Create(Box<CreateArgs>),
    /// List instances.
    #[command(alias = "ls")]
    List,
    /// Show one instance in detail.
    Show {
        /// Instance name.
        name: String,
    },
    /// Print the serial console output recorded so far.
    Console(ConsoleArgs),
    /// CPU time, memory and network counters of a running instance.
    Stats {
        /// Instance name.
        name: String,
    },
    /// Start stopped or ended instances.
    Start(NamesArgs),
    /// Stop instances (their guests are destroyed).
    Stop(NamesArgs),
    /// Restart instances.
    Restart(NamesArgs),
    /// Delete instances, their guests and console logs.
    #[command(alias = "rm")]
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct ConsoleArgs {
    /// Instance name.
    pub name: String,
    /// Keep printing new output as it arrives (until the instance is deleted or Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Only the last N bytes.
    #[arg(long, value_name = "N")]
    pub tail_bytes: Option<u64>,
    /// Only the output of the current (or last) run.
    #[arg(long)]
    pub current_run: bool,
    /// Only output since a time (RFC 3339) or for a duration back from now (10m, 90s, 2h).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
}

#[derive(Args)]
pub struct NamesArgs {
    /// Instance names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Instance name: 1 to 63 characters of a-z, 0-9 and '-'.
    #[arg(long)]
    pub name: String,
    /// Path of the unikernel image on the server (inside its KernelDirs).
    #[arg(long, required_unless_present_any = ["image", "kernel_file"], conflicts_with_all = ["image", "kernel_file"])]
    pub kernel: Option<String>,
    /// Boot an uploaded image: NAME[:TAG] or sha256:HEX.
    #[arg(long, conflicts_with = "kernel_file")]
    pub image: Option<String>,
    /// Boot this local file: it is uploaded first unless the server already has it.
    #[arg(long, value_name = "FILE")]
    pub kernel_file: Option<std::path::PathBuf>,
    /// For images whose manifest declares several network devices: the bridge of a device,
    /// DEVICE=BRIDGE (repeat for each device).
    #[arg(long = "net", value_name = "DEVICE=BRIDGE", value_parser = parse_net,
          conflicts_with_all = ["bridge", "mac", "no_network"])]
    pub nets: Vec<(String, String)>,
    /// Command line for the unikernel, e.g. "--ipv4 192.168.100.43/24".
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    pub kernel_parameters: String,
    /// Guest memory in MiB [server default: 32].
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u32>,
    /// Virtual CPUs [server default: 1].
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// Bridge to join [server default: its BridgeInterface].
    #[arg(long, conflicts_with = "no_network")]
    pub bridge: Option<String>,
    /// MAC address of the NIC [default: derived from the name].
    #[arg(long, conflicts_with = "no_network")]
    pub mac: Option<String>,
    /// Give the instance no network device.
    #[arg(long)]
    pub no_network: bool,
    /// Restart policy: never, on-failure[:MAX_RETRIES] or always[:MAX_RETRIES].
    #[arg(long, value_name = "POLICY", value_parser = parse_restart)]
    pub restart: Option<(rhyzome_api::RestartMode, Option<u32>)>,
    /// With --restart on-failure: the exit codes that count as failure (default: all but 0).
    #[arg(
        long,
        value_name = "CODES",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub restart_exit_codes: Option<Vec<i32>>,
    /// Start-up order when the daemon (re)starts guests; lower first [default: 0].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub startup_priority: Option<i32>,
    /// Start the instance again when the daemon finds it gone without an exit (host reboot).
    #[arg(long)]
    pub autostart: bool,
    /// A test bed: create N instances, NAME-1 to NAME-N, or NAME as a template with {i} (the
    /// index, from 1), {i+K} or {i-K}. --kernel-parameters takes the same placeholders, e.g.
    /// "--ipv4 192.168.100.{i+9}/24"; {{ and }} are literal braces.
    #[arg(long, value_name = "N", conflicts_with = "mac",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: Option<u32>,
    /// With --count: how many creates are in flight at once.
    #[arg(long, value_name = "N", default_value_t = 16, requires = "count",
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
}

#[derive(Args)]
pub struct DeleteArgs {
    /// Instance names.
    #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
    pub names: Vec<String>,
    /// Delete every instance whose name starts with PREFIX (a whole test bed).
    #[arg(long, value_parser = non_empty_prefix)]
    pub prefix: Option<String>,
    /// With --prefix: only list what would be deleted.
    #[arg(long, requires = "prefix")]
    pub dry_run: bool,
    /// How many deletes are in flight at once.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
}

fn non_empty_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("an empty prefix would match every instance; name them instead".into())
    } else {
        Ok(s.to_string())
    }
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Upload an image (skipped when the server already has the same content).
    Push(ImagePushArgs),
    /// List images.
    #[command(alias = "ls")]
    List,
    /// Show an image and what inspection found in it (kind, Solo5 target, manifest).
    Show {
        /// NAME[:TAG] or sha256:HEX.
        reference: String,
    },
    /// Delete images (refused while an instance boots one).
    #[command(alias = "delete")]
    Rm {
        /// NAME[:TAG] or sha256:HEX.
        #[arg(required = true)]
        references: Vec<String>,
    },
}

#[derive(Args)]
pub struct ImagePushArgs {
    /// The image file, e.g. a Solo5 virtio unikernel (`*.virtio`).
    pub file: std::path::PathBuf,
    /// Name it NAME[:TAG] (the tag defaults to `latest`).
    #[arg(long)]
    pub name: Option<String>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `DEVICE=BRIDGE`.
fn parse_net(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((d, b)) if !d.is_empty() && !b.is_empty() => Ok((d.to_string(), b.to_string())),
        _ => Err(format!("{s:?}: expected DEVICE=BRIDGE, e.g. service=br0")),
    }
}

/// `never`, `on-failure[:N]`, `always[:N]`.
fn parse_restart(s: &str) -> Result<(rhyzome_api::RestartMode, Option<u32>), String> {
    use rhyzome_api::RestartMode;
    let (mode, max) = match s.split_once(':') {
        Some((m, n)) => (
            m,
            Some(n.parse::<u32>().map_err(|_| {
                format!("{n:?} is not a number of retries (expected e.g. on-failure:5)")
            })?),
        ),
        None => (s, None),
    };
    let mode = match mode {
        "never" | "no" => RestartMode::Never,
        "on-failure" | "on_failure" => RestartMode::OnFailure,
        "always" => RestartMode::Always,
        _ => {
            return Err(format!(
                "{mode:?} is not a restart policy: use never, on-failure[:N] or always[:N]"
            ))
        }
    };
    if mode == RestartMode::Never && max.is_some() {
        return Err("never takes no retry count".into());
    }
    Ok((mode, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhyzome_api::RestartMode;

    #[test]
    fn restart_policies_parse() {
        assert_eq!(parse_restart("never"), Ok((RestartMode::Never, None)));
        assert_eq!(
            parse_restart("on-failure"),
            Ok((RestartMode::OnFailure, None))
        );
        assert_eq!(
            parse_restart("on-failure:3"),
            Ok((RestartMode::OnFailure, Some(3)))
        );
        assert_eq!(
            parse_restart("always:10"),
            Ok((RestartMode::Always, Some(10)))
        );
        assert!(parse_restart("sometimes").is_err());
        assert!(parse_restart("on-failure:x").is_err());
        assert!(parse_restart("never:2").is_err());
    }
}
