//! `rhyzomectl testbed list`.

use super::Context;
use crate::output;

pub fn run(ctx: &Context) -> anyhow::Result<()> {
    let beds = ctx.client()?.list_testbeds()?;
    if ctx.json() {
        return output::json(&beds);
    }
    let rows: Vec<Vec<String>> = beds
        .iter()
        .map(|b| {
            let desired: u32 = b.groups.iter().map(|g| g.desired).sum();
            let ready: u32 = b.groups.iter().map(|g| g.ready).sum();
            vec![
                b.name.clone(),
                b.groups.len().to_string(),
                format!("{ready}/{desired}"),
                if b.ready { "ready" } else { &b.desired }.to_string(),
                b.applied_at.clone(),
            ]
        })
        .collect();
    output::table(&["NAME", "GROUPS", "READY", "STATE", "APPLIED"], &rows);
    Ok(())
}
