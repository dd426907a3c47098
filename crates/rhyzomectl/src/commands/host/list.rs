//! `rhyzomectl host list`.

use super::Context;
use crate::output;

pub fn run(ctx: &Context) -> anyhow::Result<()> {
    let hosts = ctx.client()?.list_hosts()?;
    if ctx.json() {
        return output::json(&hosts);
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let reachable = match (h.reachable, &h.unreachable_since) {
                (true, _) => "yes".to_string(),
                (false, Some(since)) => format!("no (since {})", super::ago(since)),
                (false, None) => "no".to_string(),
            };
            vec![
                h.name.clone(),
                reachable,
                super::known(h.libvirt_version.as_deref()),
                super::known(h.domain_type.as_deref()),
                super::known(h.cpus),
                super::known(h.free_memory_mib.map(output::mib)),
                super::instances(h),
                output::labels(&h.labels),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME",
            "REACHABLE",
            "LIBVIRT",
            "TYPE",
            "CPUS",
            "FREE MEM",
            "INSTANCES",
            "LABELS",
        ],
        &rows,
    );
    Ok(())
}
