//! `rhyzomectl config set|use|list`: the client configuration file.

mod list;
pub mod set;
pub mod use_server;

use crate::cli::Globals;
use clap::Subcommand;
use set::ConfigSetArgs;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Add or change a named server.
    Set(ConfigSetArgs),
    /// Make a named server the default.
    Use(use_server::UseArgs),
    /// List the named servers.
    List,
}

pub fn run(cmd: ConfigCommand, globals: &Globals) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Set(args) => set::run(args, globals),
        ConfigCommand::Use(a) => use_server::run(&a.name),
        ConfigCommand::List => list::run(),
    }
}
