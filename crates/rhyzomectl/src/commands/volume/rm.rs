//! `rhyzomectl volume rm NAME...`.

use super::Context;
use clap::Args;

#[derive(Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn run(ctx: &Context, names: &[String]) -> anyhow::Result<()> {
    let client = ctx.client()?;
    super::super::delete_each(names, "volumes", |n| client.delete_volume(n))
}
