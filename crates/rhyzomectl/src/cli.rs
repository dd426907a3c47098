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
    Console {
        /// Instance name.
        name: String,
        /// Only the last N bytes.
        #[arg(long)]
        tail_bytes: Option<u64>,
    },
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
}
