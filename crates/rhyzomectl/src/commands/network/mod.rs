//! `rhyzomectl network VERB`: managed networks, and the conditions of emulated ones.

mod conditions;
mod create;
mod heal;
mod link;
mod list;
mod partition;
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
    /// Set the default link conditions of every NIC on an emulated network.
    Link(link::LinkArgs),
    /// Cut an emulated network both ways between two label selectors.
    Partition(partition::PartitionArgs),
    /// Remove every partition of an emulated network.
    Heal(heal::HealArgs),
    /// Show what applies now on an emulated network, per NIC and per partition.
    Conditions(conditions::ConditionsArgs),
}

pub fn run(ctx: &Context, cmd: NetworkCommand) -> anyhow::Result<()> {
    match cmd {
        NetworkCommand::Create(a) => create::run(ctx, a),
        NetworkCommand::List => list::run(ctx),
        NetworkCommand::Show(a) => show::run(ctx, &a.name),
        NetworkCommand::Rm(a) => rm::run(ctx, &a.names),
        NetworkCommand::Link(a) => link::run(ctx, &a),
        NetworkCommand::Partition(a) => partition::run(ctx, &a),
        NetworkCommand::Heal(a) => heal::run(ctx, &a),
        NetworkCommand::Conditions(a) => conditions::run(ctx, &a),
    }
}
