//! `rhyzomectl network partition NAME --between SELECTOR SELECTOR`: cut an emulated network
//! both ways between the instances matching two label selectors.

use super::Context;
use clap::Args;

#[derive(Args)]
pub struct PartitionArgs {
    /// Network name.
    pub name: String,
    /// Two label selectors, e.g. `--between group=eu group=us`.
    #[arg(long, num_args = 2, value_names = ["SELECTOR", "SELECTOR"], required = true)]
    pub between: Vec<String>,
}

pub fn run(ctx: &Context, a: &PartitionArgs) -> anyhow::Result<()> {
    for selector in &a.between {
        rhyzome_api::validate::parse_selector(selector, "between")?;
    }
    let answer = ctx
        .client()?
        .partition_network(&a.name, &a.between[0], &a.between[1])?;
    super::conditions::print(ctx, &answer)
}
