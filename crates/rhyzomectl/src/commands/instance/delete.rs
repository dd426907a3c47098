//! `rhyzomectl instance delete NAME...`.

use super::Context;

/// Deletes every name even if one fails, then fails if any did.
pub fn run(ctx: &Context, names: &[String]) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let mut failed = 0;
    for name in names {
        match client.delete_instance(name) {
            Ok(()) => println!("deleted {name}"),
            Err(e) => {
                eprintln!("rhyzomectl: {name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} instances could not be deleted", names.len());
    }
    Ok(())
}
