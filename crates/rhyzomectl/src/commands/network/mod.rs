//! `rhyzomectl network VERB`: managed networks.

mod create;
mod list;
mod rm;
mod show;

use super::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Create a managed network: libvirt makes its bridge, and instances attached to it get
    /// addresses from its subnet.
    Create(create::CreateArgs),
    /// List managed networks.
    #[command(alias = "ls")]
    List,
    /// Show a network: subnet, gateway, mode, bridge, addresses in use and free.
    Show(show::ShowArgs),
    /// Delete managed networks (refused while instances are attached).
    #[command(alias = "delete")]
    Rm(rm::RmArgs),
}

pub fn run(ctx: &Context, cmd: NetworkCommand) -> anyhow::Result<()> {
    match cmd {
        NetworkCommand::Create(a) => create::run(ctx, a),
        NetworkCommand::List => list::run(ctx),
        NetworkCommand::Show(a) => show::run(ctx, &a.name),
        NetworkCommand::Rm(a) => rm::run(ctx, &a.names),
    }
}
