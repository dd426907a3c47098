//! `rhyzomectl testbed apply -f FILE [--dry-run] [--wait [--timeout T]]`.

use super::Context;
use crate::output;
use anyhow::Context as _;
use clap::Args;
use rhyzome_api::testbed::parse_bed;
use rhyzome_api::{ChangeKind, TestbedApply, TestbedPlan};
use std::path::PathBuf;

#[derive(Args)]
pub struct ApplyArgs {
    /// The test-bed file (TOML).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Print the plan only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait until every group is ready, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (e.g. 90s, 10m).
    #[arg(long, default_value = "10m", requires = "wait")]
    pub timeout: humantime::Duration,
}

pub fn run(ctx: &Context, a: ApplyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    // Checked here first, so that errors name the file; the daemon checks again.
    if let Err(errors) = parse_bed(&text, false) {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| {
                format!(
                    "{}:{}:{}: {}",
                    a.file.display(),
                    e.line,
                    e.column,
                    e.message
                )
            })
            .collect();
        anyhow::bail!("{}", lines.join("\n"));
    }
    let plan = ctx.client()?.apply_testbed(&TestbedApply {
        file: text,
        dry_run: Some(a.dry_run),
    })?;
    if ctx.json() && !a.wait {
        return output::json(&plan);
    }
    if !ctx.json() {
        print_plan(&plan);
    }
    if a.wait && !a.dry_run {
        super::wait::run(ctx, &plan.name, a.timeout.into())?;
    }
    Ok(())
}

/// A plan (of an apply or a scale) as lines: each change with its reason, a count, notes.
pub(super) fn print_plan(plan: &TestbedPlan) {
    if !plan.changed {
        println!("test bed {}: no changes", plan.name);
    } else {
        let verb = if plan.dry_run { "would" } else { "will" };
        for n in &plan.networks_created {
            println!("{verb} create network {n}");
        }
        for c in &plan.changes {
            let action = match c.action {
                ChangeKind::Create => "create",
                ChangeKind::Replace => "replace",
                ChangeKind::Delete => "delete",
            };
            println!("{verb} {action} {} ({})", c.instance, c.reason);
        }
        let count = |k| plan.changes.iter().filter(|c| c.action == k).count();
        println!(
            "test bed {}: {} to create, {} to replace, {} to delete",
            plan.name,
            count(ChangeKind::Create),
            count(ChangeKind::Replace),
            count(ChangeKind::Delete)
        );
    }
    for note in &plan.notes {
        println!("note: {note}");
    }
}
