//! `rhyzomectl host show NAME`.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct ShowArgs {
    /// Host name (as in the daemon's `Hosts`; `local` without any).
    pub name: String,
}

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let h = ctx.client()?.get_host(name)?;
    if ctx.json() {
        return output::json(&h);
    }
    let reachable = match (h.reachable, &h.unreachable_since) {
        (true, _) => "yes".to_string(),
        (false, Some(since)) => format!("no, since {since} ({})", super::ago(since)),
        (false, None) => "no".to_string(),
    };
    let instances = match h.max_instances {
        Some(max) => format!("{} of at most {max}", h.instances),
        None => format!("{} (no limit)", h.instances),
    };
    let insecure = if h.insecure {
        "yes: the connection is unencrypted (qemu+tcp)"
    } else {
        "no"
    };
    let mut rows = vec![
        ("name", h.name.clone()),
        ("uri", h.uri.clone()),
        ("reachable", reachable),
    ];
    if let Some(error) = &h.error {
        rows.push(("error", error.clone()));
    }
    rows.extend([
        ("insecure", insecure.to_string()),
        ("libvirt", super::known(h.libvirt_version.as_deref())),
        ("domain type", super::known(h.domain_type.as_deref())),
        ("cpus", super::known(h.cpus)),
        ("memory", super::known(h.memory_mib.map(output::mib))),
        (
            "free memory",
            super::known(h.free_memory_mib.map(output::mib)),
        ),
        ("instances", instances),
        ("labels", output::labels(&h.labels)),
    ]);
    for (k, v) in rows {
        println!("{:<12} {v}", format!("{k}:"));
    }
    Ok(())
}
