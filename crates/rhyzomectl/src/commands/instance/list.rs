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
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                output::state(i),
                format!("{} MiB", i.memory_mib),
                output::network(i),
                output::uptime(i),
                i.restart_count.to_string(),
                output::labels(&i.labels),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "STATE", "MEMORY", "IP / MAC", "UPTIME", "RESTARTS", "LABELS",
        ],
        &rows,
    );
    Ok(())
}
