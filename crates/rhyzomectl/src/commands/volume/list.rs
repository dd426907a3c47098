//! `rhyzomectl volume list`.

use super::Context;
use crate::output;

pub fn run(ctx: &Context) -> anyhow::Result<()> {
    let volumes = ctx.client()?.list_volumes()?;
    if ctx.json() {
        return output::json(&volumes);
    }
    let rows: Vec<Vec<String>> = volumes
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                super::format_name(v.format).into(),
                output::size(v.size_bytes),
                output::size(v.allocation_bytes),
                v.base.clone().unwrap_or_else(|| "-".into()),
                super::attached(v),
            ]
        })
        .collect();
    output::table(
        &["NAME", "FORMAT", "SIZE", "ALLOCATED", "BASE", "ATTACHED"],
        &rows,
    );
    Ok(())
}
