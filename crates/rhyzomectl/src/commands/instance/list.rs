//! `rhyzomectl instance list`.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct ListArgs {
    /// Only instances carrying every one of these labels: KEY=VALUE[,KEY=VALUE...].
    #[arg(long, short = 'l', value_name = "SELECTOR")]
    pub selector: Option<String>,
}

pub fn run(ctx: &Context, a: &ListArgs) -> anyhow::Result<()> {
    if let Some(selector) = &a.selector {
        rhyzome_api::validate::parse_selector(selector, "selector")?;
    }
    let instances = ctx
        .client()?
        .list_instances_matching(a.selector.as_deref())?;
    if ctx.json() {
        return output::json(&instances);
    }
    // A HOST column only when the instances are on more than one host: with one (or a
    // daemon without hosts) it would say the same on every line.
    let hosts: std::collections::BTreeSet<&str> = instances
        .iter()
        .filter_map(|i| i.placement.as_ref().map(|p| p.host.as_str()))
        .collect();
    let show_host = hosts.len() > 1;
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            let mut row = vec![
                i.name.clone(),
                output::state(i),
                format!("{} MiB", i.memory_mib),
                output::network(i),
                output::uptime(i),
                i.restart_count.to_string(),
                output::labels(&i.labels),
            ];
            if show_host {
                let host = i.placement.as_ref().map(|p| p.host.clone());
                row.insert(2, host.unwrap_or_else(|| "-".into()));
            }
            row
        })
        .collect();
    let mut headers = vec![
        "NAME", "STATE", "MEMORY", "IP / MAC", "UPTIME", "RESTARTS", "LABELS",
    ];
    if show_host {
        headers.insert(2, "HOST");
    }
    output::table(&headers, &rows);
    Ok(())
}
