//! `rhyzomectl testbed apply -f FILE [--dry-run] [--wait [--timeout T]]`.
//!
//! A group's `kernel_file` is a file next to the bed file (a relative path is taken from the
//! bed file's directory): it is pushed as an unnamed image first (hashed, and sent only if
//! the server lacks that digest, like `image push`), and the bed goes to the server with the
//! image's digest for it (`kernel_files`). The file itself stays as written.

use super::Context;
use crate::output;
use anyhow::Context as _;
use clap::Args;
use rhyzome_api::testbed::{parse_bed, Boot};
use rhyzome_api::{ChangeKind, TestbedApply, TestbedPlan};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    let bed = match parse_bed(&text) {
        Ok(bed) => bed,
        Err(errors) => {
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
    };
    let client = ctx.client()?;
    let mut kernel_files = BTreeMap::new();
    let base = a.file.parent().unwrap_or(Path::new("."));
    for g in &bed.groups {
        let Boot::KernelFile(written) = &g.boot else {
            continue;
        };
        if kernel_files.contains_key(written) {
            continue;
        }
        let path = base.join(written);
        let pushed = client
            .push_image(&path, None, &mut |_, _, _| {})
            .with_context(|| format!("pushing kernel_file {written:?} of group {:?}", g.name))?;
        if !ctx.json() {
            match pushed.bytes_sent {
                0 => println!(
                    "kernel_file {written}: already on the server ({})",
                    pushed.upload.image.digest
                ),
                n => println!(
                    "kernel_file {written}: pushed {n} bytes ({})",
                    pushed.upload.image.digest
                ),
            }
        }
        kernel_files.insert(written.clone(), pushed.upload.image.digest.clone());
    }
    let plan = client.apply_testbed(&TestbedApply {
        file: text,
        dry_run: Some(a.dry_run),
        kernel_files: (!kernel_files.is_empty()).then_some(kernel_files),
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
        for n in &plan.networks_replaced {
            println!("{verb} replace network {n} (subnet, gateway or emulation changed)");
        }
        for n in &plan.networks_updated {
            println!("{verb} update network {n} (default link conditions, in place)");
        }
        for c in &plan.changes {
            let action = match c.action {
                ChangeKind::Create => "create",
                ChangeKind::Replace => "replace",
                ChangeKind::Delete => "delete",
                ChangeKind::Update => "update",
            };
            println!("{verb} {action} {} ({})", c.instance, c.reason);
        }
        let count = |k| plan.changes.iter().filter(|c| c.action == k).count();
        println!(
            "test bed {}: {} to create, {} to replace, {} to update, {} to delete",
            plan.name,
            count(ChangeKind::Create),
            count(ChangeKind::Replace),
            count(ChangeKind::Update),
            count(ChangeKind::Delete)
        );
    }
    for note in &plan.notes {
        println!("note: {note}");
    }
}
