//! `rhyzomectl volume resize NAME --size 128M`.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct ResizeArgs {
    pub name: String,
    /// New size (larger than the current one): 128M, 2G.
    #[arg(long, value_parser = super::size_arg)]
    pub size: u64,
}

pub fn run(ctx: &Context, a: &ResizeArgs) -> anyhow::Result<()> {
    let v = ctx.client()?.resize_volume(&a.name, a.size)?;
    if ctx.json() {
        return output::json(&v);
    }
    println!("{}: {}", v.name, output::size(v.size_bytes));
    Ok(())
}
