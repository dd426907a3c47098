//! `rhyzomectl testbed fault NAME kill|restart --group G --count N [--seed S]`,
//! `... partition --between group=A group=B` and `... heal [--between group=A group=B]`.

use super::Context;
use crate::output;
use clap::{Args, Subcommand};
use rhyzome_api::TestbedFault;

#[derive(Args)]
pub struct FaultArgs {
    pub name: String,
    #[command(subcommand)]
    pub fault: FaultCommand,
}

#[derive(Args)]
pub struct PickArgs {
    /// The group to pick instances from.
    #[arg(long)]
    pub group: String,
    /// How many instances to pick.
    #[arg(long)]
    pub count: i64,
    /// Seed of the picks; without it, the bed's seed and its fault sequence number decide
    /// (so beds built alike pick alike for their n-th fault).
    #[arg(long)]
    pub seed: Option<u64>,
}

#[derive(Subcommand)]
pub enum FaultCommand {
    /// Crash picked instances (their domains destroyed); their restart policy applies.
    Kill(PickArgs),
    /// Restart picked instances.
    Restart(PickArgs),
    /// Cut the emulated networks two groups share: --between group=A group=B.
    Partition {
        #[arg(long, num_args = 2, value_names = ["group=A", "group=B"], required = true)]
        between: Vec<String>,
    },
    /// Undo the partition between two groups, or every partition of the bed.
    Heal {
        #[arg(long, num_args = 2, value_names = ["group=A", "group=B"])]
        between: Option<Vec<String>>,
    },
}

fn pair(v: Vec<String>) -> [String; 2] {
    let [a, b]: [String; 2] = v.try_into().expect("clap takes exactly two values");
    [a, b]
}

pub fn run(ctx: &Context, a: FaultArgs) -> anyhow::Result<()> {
    let req = match a.fault {
        FaultCommand::Kill(p) => TestbedFault::Kill {
            group: p.group,
            count: p.count,
            seed: p.seed,
        },
        FaultCommand::Restart(p) => TestbedFault::Restart {
            group: p.group,
            count: p.count,
            seed: p.seed,
        },
        FaultCommand::Partition { between } => TestbedFault::Partition {
            between: pair(between),
        },
        FaultCommand::Heal { between } => TestbedFault::Heal {
            between: between.map(pair),
        },
    };
    let result = ctx.client()?.testbed_fault(&a.name, &req)?;
    if ctx.json() {
        return output::json(&result);
    }
    let seed = result.seed.map_or(String::new(), |s| format!(", seed {s}"));
    println!(
        "test bed {}: fault {} ({}{seed})",
        a.name, result.sequence, result.action
    );
    for i in &result.instances {
        println!("{} {i}", result.action);
    }
    for n in &result.networks {
        println!("{} network {n}", result.action);
    }
    for w in &result.warnings {
        println!("warning: {w}");
    }
    Ok(())
}
