//! `rhyzomectl instance VERB`.

mod console;
mod create;
mod delete;
mod lifecycle;
mod list;
mod show;
mod stats;

use super::Context;
use crate::cli::InstanceCommand;

pub fn run(ctx: &Context, cmd: InstanceCommand) -> anyhow::Result<()> {
    match cmd {
        InstanceCommand::Create(args) => create::run(ctx, *args),
        InstanceCommand::List => list::run(ctx),
        InstanceCommand::Show { name } => show::run(ctx, &name),
        InstanceCommand::Console(args) => console::run(ctx, &args),
        InstanceCommand::Stats { name } => stats::run(ctx, &name),
        InstanceCommand::Start(a) => lifecycle::run(ctx, lifecycle::Verb::Start, &a.names),
        InstanceCommand::Stop(a) => lifecycle::run(ctx, lifecycle::Verb::Stop, &a.names),
        InstanceCommand::Restart(a) => lifecycle::run(ctx, lifecycle::Verb::Restart, &a.names),
        InstanceCommand::Delete(a) => delete::run(ctx, &a),
    }
}
