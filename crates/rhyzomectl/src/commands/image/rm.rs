//! `rhyzomectl image rm REF...`.

use super::Context;
use clap::Args;

#[derive(Args)]
pub struct RmArgs {
    /// NAME[:TAG] or sha256:HEX.
    #[arg(required = true)]
    pub references: Vec<String>,
}

pub fn run(ctx: &Context, references: &[String]) -> anyhow::Result<()> {
    let client = ctx.client()?;
    super::super::delete_each(references, "images", |n| client.delete_image(n))
}
