//! `rhyzomectl instance list`.

use super::Context;
use crate::output;

pub fn run(ctx: &Context) -> anyhow::Result<()> {
    let instances = ctx.client()?.list_instances()?;
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
            ]
        })
        .collect();
    output::table(
        &["NAME", "STATE", "MEMORY", "IP / MAC", "UPTIME", "RESTARTS"],
        &rows,
    );
    Ok(())
}
