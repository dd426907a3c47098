//! `rhyzomectl testbed VERB`: test beds applied from a TOML file (see docs/testbeds.md).

mod apply;
mod collect;
mod destroy;
mod list;
mod status;
mod wait;

use super::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum TestbedCommand {
    /// Apply a test-bed file: print the plan, and (unless --dry-run) carry it out.
    Apply(apply::ApplyArgs),
    /// List test beds with their readiness.
    #[command(alias = "ls")]
    List,
    /// Show a test bed: per group, desired, created, running, ready, exited, failed.
    Status(status::StatusArgs),
    /// Wait until every group of a test bed is ready.
    Wait(wait::WaitArgs),
    /// Download a test bed's results (summaries, the file, every console) into a directory.
    Collect(collect::CollectArgs),
    /// Destroy a test bed: its instances, its networks, then the bed.
    #[command(alias = "rm")]
    Destroy(destroy::DestroyArgs),
}

pub fn run(ctx: &Context, cmd: TestbedCommand) -> anyhow::Result<()> {
    match cmd {
        TestbedCommand::Apply(a) => apply::run(ctx, a),
        TestbedCommand::List => list::run(ctx),
        TestbedCommand::Status(a) => status::run(ctx, &a.name),
        TestbedCommand::Wait(a) => wait::run(ctx, &a.name, a.timeout.into()),
        TestbedCommand::Collect(a) => collect::run(ctx, &a),
        TestbedCommand::Destroy(a) => destroy::run(ctx, &a.name),
    }
}
