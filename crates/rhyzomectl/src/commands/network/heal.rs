//! `rhyzomectl network heal NAME`: remove every partition of an emulated network.

use super::Context;
use clap::Args;

#[derive(Args)]
pub struct HealArgs {
    /// Network name.
    pub name: String,
}

pub fn run(ctx: &Context, a: &HealArgs) -> anyhow::Result<()> {
    let answer = ctx.client()?.heal_network(&a.name)?;
    super::conditions::print(ctx, &answer)
}
