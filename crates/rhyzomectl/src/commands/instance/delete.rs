//! `rhyzomectl instance delete NAME...` and `--prefix PREFIX` (a whole test bed), with
//! several deletes in flight at once.

use super::Context;
use clap::Args;

#[derive(Args)]
pub struct DeleteArgs {
    /// Instance names.
    #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
    pub names: Vec<String>,
    /// Delete every instance whose name starts with PREFIX (a whole test bed).
    #[arg(long, value_parser = non_empty_prefix)]
    pub prefix: Option<String>,
    /// With --prefix: only list what would be deleted.
    #[arg(long, requires = "prefix")]
    pub dry_run: bool,
    /// How many deletes are in flight at once.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
}

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

fn non_empty_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("an empty prefix would match every instance; name them instead".into())
    } else {
        Ok(s.to_string())
    }
}
