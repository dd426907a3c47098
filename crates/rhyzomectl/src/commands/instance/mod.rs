//! `rhyzomectl instance VERB`.

pub mod console;
pub mod create;
pub mod delete;
pub mod lifecycle;
pub mod link;
mod list;
pub mod show;
pub mod stats;

use super::Context;
use clap::Subcommand;
use console::ConsoleArgs;
use create::CreateArgs;
use delete::DeleteArgs;
use lifecycle::NamesArgs;

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Create an instance and boot it (or a test bed of them, with --count).
    Create(Box<CreateArgs>),
    /// List instances.
    #[command(alias = "ls")]
    List(list::ListArgs),
    /// Show one instance in detail.
    Show(show::ShowArgs),
    /// Print the serial console output recorded so far.
    Console(ConsoleArgs),
    /// Change the link conditions of an instance's NICs (latency=80ms loss=0% ...).
    Link(link::LinkArgs),
    /// CPU time, memory and network counters of a running instance.
    Stats(stats::StatsArgs),
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

pub fn run(ctx: &Context, cmd: InstanceCommand) -> anyhow::Result<()> {
    match cmd {
        InstanceCommand::Create(args) => create::run(ctx, *args),
        InstanceCommand::List(a) => list::run(ctx, &a),
        InstanceCommand::Show(a) => show::run(ctx, &a.name),
        InstanceCommand::Console(args) => console::run(ctx, &args),
        InstanceCommand::Stats(a) => stats::run(ctx, &a.name),
        InstanceCommand::Link(a) => link::run(ctx, &a),
        InstanceCommand::Start(a) => lifecycle::run(ctx, lifecycle::Verb::Start, &a.names),
        InstanceCommand::Stop(a) => lifecycle::run(ctx, lifecycle::Verb::Stop, &a.names),
        InstanceCommand::Restart(a) => lifecycle::run(ctx, lifecycle::Verb::Restart, &a.names),
        InstanceCommand::Delete(a) => delete::run(ctx, &a),
    }
}
