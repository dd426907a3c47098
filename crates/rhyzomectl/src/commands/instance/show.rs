//! `rhyzomectl instance show NAME`.

use super::Context;
use crate::output;

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let i = ctx.client()?.get_instance(name)?;
    if ctx.json() {
        return output::json(&i);
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows = [
        ("name", i.name.clone()),
        ("id", i.id.clone()),
        ("state", output::state(&i)),
        ("desired state", i.desired_state.as_str().to_string()),
        ("uptime", output::uptime(&i)),
        ("kernel", i.kernel.clone()),
        ("kernel sha256", i.kernel_sha256.clone()),
        ("kernel parameters", i.kernel_parameters.clone()),
        ("memory", format!("{} MiB", i.memory_mib)),
        ("vcpus", i.vcpus.to_string()),
        (
            "bridge",
            i.network
                .as_ref()
                .map(|n| n.bridge.clone())
                .unwrap_or_else(|| "none".into()),
        ),
        ("ip / mac", output::network(&i)),
        ("domain", i.domain_name.clone()),
        ("created", i.created_at.clone()),
        ("started", opt(&i.started_at)),
        ("last error", opt(&i.last_error)),
    ];
    for (k, v) in rows {
        println!("{:<18} {v}", format!("{k}:"));
    }
    Ok(())
}
