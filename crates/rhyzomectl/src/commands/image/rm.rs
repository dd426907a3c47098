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
    let mut failed = 0;
    for r in references {
        match client.delete_image(r) {
            Ok(()) => println!("deleted {r}"),
            Err(e) => {
                eprintln!("rhyzomectl: {r}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} images not deleted", references.len());
    }
    Ok(())
}
