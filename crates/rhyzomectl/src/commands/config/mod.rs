//! `rhyzomectl config set|use|list`: the client configuration file.

mod list;
mod set;
mod use_server;

use crate::cli::{ConfigCommand, Globals};

pub fn run(cmd: ConfigCommand, globals: &Globals) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Set(args) => set::run(args, globals),
        ConfigCommand::Use { name } => use_server::run(&name),
        ConfigCommand::List => list::run(),
    }
}
