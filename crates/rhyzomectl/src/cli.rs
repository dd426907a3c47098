//! Command-line grammar (clap derive). Every verb has `--help`.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "rhyzomectl",
    version,
    about = "Control a Rhyzome daemon: deploy and manage unikernels"
)]
pub struct Cli {
    /// Base URL of the rhyzomesrv API.
    #[arg(
        long,
        global = true,
        env = "RHYZOME_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
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
    /// Show what the daemon is and how it runs guests.
    Info,
    /// Print instance state changes as they happen (until interrupted).
    Events {
        /// Only this instance's events.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Print a shell completion script.
    Completions {
        /// Shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Create an instance and boot it.
    Create(CreateArgs),
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
    /// Start stopped or ended instances.
    Start(NamesArgs),
    /// Stop instances (their guests are destroyed).
    Stop(NamesArgs),
    /// Restart instances.
    Restart(NamesArgs),
    /// Delete instances, their guests and console logs.
    #[command(alias = "rm")]
    Delete(NamesArgs),
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
    #[arg(long)]
    pub kernel: String,
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
