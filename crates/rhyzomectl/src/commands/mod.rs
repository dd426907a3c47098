//! Dispatch from parsed arguments to one module per noun/verb.

mod completions;
mod events;
mod info;
mod instance;

use crate::cli::{Cli, Command};
use rhyzome_api::client::Client;

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context {
        output: cli.output,
        server: cli.server,
    };
    match cli.command {
        Command::Instance(cmd) => instance::run(&ctx, cmd),
        Command::Info => info::run(&ctx),
        Command::Events { instance } => events::run(&ctx, instance.as_deref()),
        Command::Completions { shell } => completions::run(shell),
    }
}

pub struct Context {
    pub output: crate::cli::Output,
    pub server: String,
}

impl Context {
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.server)?)
    }

    pub fn json(&self) -> bool {
        self.output == crate::cli::Output::Json
    }
}
