//! `rhyzomectl network rm NAME...`.

use super::Context;
use clap::Args;

#[derive(Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

pub fn run(ctx: &Context, names: &[String]) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let mut failed = 0;
    for name in names {
        match client.delete_network(name) {
            Ok(()) => println!("deleted network {name}"),
            Err(e) => {
                eprintln!("rhyzomectl: {name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} networks not deleted", names.len());
    }
    Ok(())
}
