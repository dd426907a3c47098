//! `rhyzomectl network link NAME CONDITIONS...`: the default conditions of every NIC on an
//! emulated network. The terms given change the defaults and keep the others (the CLI reads
//! the current ones first); `--clear` starts from none.

use super::Context;
use clap::Args;

#[derive(Args)]
pub struct LinkArgs {
    /// Network name.
    pub name: String,
    /// Default conditions: latency=20ms jitter=5ms loss=1%[/25%] rate=10mbit down up.
    #[arg(required_unless_present = "clear")]
    pub conditions: Vec<String>,
    /// Remove every default first.
    #[arg(long)]
    pub clear: bool,
}

pub fn run(ctx: &Context, a: &LinkArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let conditions = super::super::changed_conditions(&a.conditions, a.clear, || {
        Ok(client.network_conditions(&a.name)?.defaults)
    })?;
    let answer = client.set_network_link(&a.name, &conditions)?;
    super::conditions::print(ctx, &answer)
}
