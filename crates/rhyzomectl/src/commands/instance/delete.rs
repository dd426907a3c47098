//! `rhyzomectl instance delete NAME...` and `--prefix PREFIX` (a whole test bed), with
//! several deletes in flight at once.

use super::Context;
use crate::cli::DeleteArgs;

/// Deletes every name even if one fails, then fails if any did.
pub fn run(ctx: &Context, a: &DeleteArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let names = match &a.prefix {
        None => a.names.clone(),
        Some(prefix) => {
            let names: Vec<String> = client
                .list_instances()?
                .into_iter()
                .map(|i| i.name)
                .filter(|n| n.starts_with(prefix.as_str()))
                .collect();
            if names.is_empty() {
                println!("no instance name starts with {prefix:?}");
                return Ok(());
            }
            if a.dry_run {
                for name in &names {
                    println!("would delete {name}");
                }
                println!("{} instances start with {prefix:?}", names.len());
                return Ok(());
            }
            names
        }
    };
    let results = crate::parallel::map(&names, a.parallel as usize, |name| {
        let r = client.delete_instance(name);
        match &r {
            Ok(()) => println!("deleted {name}"),
            Err(e) => eprintln!("rhyzomectl: {name}: {e}"),
        }
        r
    });
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} instances could not be deleted", names.len());
    }
    Ok(())
}
