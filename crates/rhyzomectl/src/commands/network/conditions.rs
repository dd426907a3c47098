//! `rhyzomectl network conditions NAME`: what applies now on an emulated network, per NIC and
//! per partition; also how the other conditions verbs print their answer.

use super::Context;
use crate::output;
use clap::Args;
use rhyzome_api::NetworkConditions;

#[derive(Args)]
pub struct ConditionsArgs {
    /// Network name.
    pub name: String,
}

pub fn run(ctx: &Context, a: &ConditionsArgs) -> anyhow::Result<()> {
    let conditions = ctx.client()?.network_conditions(&a.name)?;
    print(ctx, &conditions)
}

/// Prints an answer of the conditions verbs: its warnings on stderr, then (or as JSON) the
/// defaults, each NIC, each partition.
pub fn print(ctx: &Context, c: &NetworkConditions) -> anyhow::Result<()> {
    for warning in &c.warnings {
        eprintln!("warning: {warning}");
    }
    if ctx.json() {
        return output::json(c);
    }
    let or_none = |s: String| if s.is_empty() { "-".to_string() } else { s };
    println!("network {} (seed {})", c.network, c.seed);
    println!("defaults: {}", or_none(c.defaults.to_string()));
    for nic in &c.nics {
        let name = match &nic.device {
            Some(device) => format!("{}/{device}", nic.instance),
            None => nic.instance.clone(),
        };
        println!("nic {name}: {}", or_none(nic.conditions.to_string()));
    }
    for p in &c.partitions {
        println!(
            "partition {} [{}] | {} [{}]",
            p.between[0],
            p.sides[0].join(", "),
            p.between[1],
            p.sides[1].join(", ")
        );
    }
    Ok(())
}
