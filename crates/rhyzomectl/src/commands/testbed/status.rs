//! `rhyzomectl testbed status NAME`.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct StatusArgs {
    pub name: String,
}

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let bed = ctx.client()?.get_testbed(name)?;
    if ctx.json() {
        return output::json(&bed);
    }
    // A HOSTS column only when the bed runs on more than one host.
    let hosts: std::collections::BTreeSet<&String> =
        bed.groups.iter().flat_map(|g| g.hosts.keys()).collect();
    let per_host = hosts.len() > 1;
    let rows: Vec<Vec<String>> = bed
        .groups
        .iter()
        .map(|g| {
            let mut row = vec![
                g.name.clone(),
                if g.desired == g.file_count {
                    g.desired.to_string()
                } else {
                    format!("{} (file {})", g.desired, g.file_count)
                },
                g.created.to_string(),
                g.running.to_string(),
                g.ready.to_string(),
                g.exited.to_string(),
                g.failed.to_string(),
                g.restarts.to_string(),
                g.ms_to_ready
                    .map_or_else(|| "-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
            ];
            if per_host {
                let spread: Vec<String> = g.hosts.iter().map(|(h, n)| format!("{h}={n}")).collect();
                row.push(spread.join(","));
            }
            row
        })
        .collect();
    let mut headers = vec![
        "GROUP", "DESIRED", "CREATED", "RUNNING", "READY", "EXITED", "FAILED", "RESTARTS",
        "TO READY",
    ];
    if per_host {
        headers.push("HOSTS");
    }
    output::table(&headers, &rows);
    if let Some(e) = &bed.last_error {
        println!("last error: {e}");
    }
    Ok(())
}
