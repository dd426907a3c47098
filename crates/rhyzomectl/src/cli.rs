//! The top of the command-line grammar (clap derive): the global options and the nouns. Each
//! noun's verbs and each verb's arguments are defined next to the code that runs them, under
//! `commands/`. Every verb has `--help`.

use clap::{Parser, Subcommand, ValueEnum};

/// The help heading of the options every command takes, so that a command's `--help` shows
/// them apart from its own.
const GLOBAL_OPTIONS: &str = "Global options";

#[derive(Parser)]
#[command(
    name = "rhyzomectl",
    version,
    about = "Control a Rhyzome daemon: deploy and manage unikernels"
)]
pub struct Cli {
    /// Base URL of the rhyzomesrv API, or its local socket as unix:///PATH [default: the
    /// configured server, else http://127.0.0.1:8080].
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, env = "RHYZOME_SERVER")]
    pub server: Option<String>,
    /// Named server from the client configuration file (see `rhyzomectl config`).
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, env = "RHYZOME_CONTEXT")]
    pub context: Option<String>,
    /// API token (rhz_...).
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, env = "RHYZOME_TOKEN",
          hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA (or self-signed certificate) to trust for https.
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Trust only the server certificate with this SHA-256 fingerprint (sha256:...).
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS, value_name = "FP",
          conflicts_with = "ca")]
    pub fingerprint: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, help_heading = GLOBAL_OPTIONS, value_enum,
          default_value_t = Output::Table)]
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
    Instance(crate::commands::instance::InstanceCommand),
    /// Manage uploaded unikernel images.
    #[command(subcommand)]
    Image(crate::commands::image::ImageCommand),
    /// Manage networks whose addresses the daemon gives out.
    #[command(subcommand)]
    Network(crate::commands::network::NetworkCommand),
    /// Manage volumes: block storage that outlives instances.
    #[command(subcommand)]
    Volume(crate::commands::volume::VolumeCommand),
    /// Show the libvirt hosts the daemon drives.
    #[command(subcommand)]
    Host(crate::commands::host::HostCommand),
    /// Manage test beds: groups of instances applied from one TOML file.
    #[command(subcommand)]
    Testbed(crate::commands::testbed::TestbedCommand),
    /// Show what the daemon is and how it runs guests.
    Info,
    /// Print instance state changes as they happen (until interrupted).
    Events(crate::commands::events::EventsArgs),
    /// Manage the client configuration file (named servers, tokens, trust).
    #[command(subcommand)]
    Config(crate::commands::config::ConfigCommand),
    /// Print a shell completion script.
    Completions(crate::commands::completions::CompletionsArgs),
    /// Write the manual pages (one per command) into a directory; used to build the package.
    #[command(hide = true)]
    Man(crate::commands::completions::ManArgs),
}

#[cfg(test)]
mod tests {
    /// clap checks a command's definition (e.g. two arguments with one short option) only
    /// when that command is parsed; this checks every one at once.
    #[test]
    fn every_command_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
