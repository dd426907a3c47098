//! `rhyzomectl testbed scale NAME GROUP=COUNT... [--dry-run]`.

use super::Context;
use crate::output;
use clap::Args;
use rhyzome_api::TestbedScale;
use std::collections::BTreeMap;

#[derive(Args)]
pub struct ScaleArgs {
    pub name: String,
    /// New counts, GROUP=COUNT (one or more). They last until the next `testbed apply`.
    #[arg(required = true, value_name = "GROUP=COUNT")]
    pub counts: Vec<String>,
    /// Print the plan only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `GROUP=COUNT` words as the request's map; the count's range is the daemon's to check.
fn parse_counts(words: &[String]) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for word in words {
        let Some((group, count)) = word.split_once('=') else {
            anyhow::bail!("{word:?}: write GROUP=COUNT");
        };
        let count: i64 = count
            .parse()
            .map_err(|_| anyhow::anyhow!("{word:?}: the count is not a whole number"))?;
        if counts.insert(group.to_string(), count).is_some() {
            anyhow::bail!("group {group:?} is given twice");
        }
    }
    Ok(counts)
}

pub fn run(ctx: &Context, a: ScaleArgs) -> anyhow::Result<()> {
    let plan = ctx.client()?.scale_testbed(
        &a.name,
        &TestbedScale {
            counts: parse_counts(&a.counts)?,
            dry_run: Some(a.dry_run),
        },
    )?;
    if ctx.json() {
        return output::json(&plan);
    }
    super::apply::print_plan(&plan);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_group_equals_number() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = parse_counts(&words(&["nodes=40", "seed=2"])).unwrap();
        assert_eq!(c, [("nodes".into(), 40), ("seed".into(), 2)].into());
        assert!(parse_counts(&words(&["nodes"])).is_err());
        assert!(parse_counts(&words(&["nodes=x"])).is_err());
        assert!(parse_counts(&words(&["nodes=1", "nodes=2"])).is_err());
        // Negative counts reach the daemon, which names the field.
        assert_eq!(parse_counts(&words(&["nodes=-1"])).unwrap()["nodes"], -1);
    }
}
