//! `rhyzomectl testbed destroy NAME`.

use super::Context;
use clap::Args;

#[derive(Args)]
pub struct DestroyArgs {
    pub name: String,
}

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<()> {
    ctx.client()?.delete_testbed(name)?;
    if !ctx.json() {
        println!("test bed {name} destroyed");
    }
    Ok(())
}
