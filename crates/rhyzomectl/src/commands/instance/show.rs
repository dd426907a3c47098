//! `rhyzomectl instance show NAME`.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct ShowArgs {
    /// Instance name.
    pub name: String,
}

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let i = ctx.client()?.get_instance(name)?;
    if ctx.json() {
        return output::json(&i);
    }
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let state = match (&i.state, &i.placement) {
        (rhyzome_api::InstanceState::Unknown, Some(p)) => format!(
            "{} (host {} cannot be reached; the guest may still run there)",
            output::state(&i),
            p.host
        ),
        _ => output::state(&i),
    };
    let mut rows = vec![
        ("name", i.name.clone()),
        ("id", i.id.clone()),
        ("state", state),
        ("desired state", i.desired_state.as_str().to_string()),
        ("uptime", output::uptime(&i)),
        ("kernel", i.kernel.clone()),
        ("kernel sha256", i.kernel_sha256.clone()),
        ("image", opt(&i.image)),
        ("kernel parameters", i.kernel_parameters.clone()),
        ("expanded", i.kernel_parameters_expanded.clone()),
        ("memory", format!("{} MiB", i.memory_mib)),
        ("vcpus", i.vcpus.to_string()),
        (
            "bridge",
            i.network
                .as_ref()
                .map(|n| match &n.network {
                    Some(network) => format!("{} (network {network})", n.bridge),
                    None => n.bridge.clone(),
                })
                .unwrap_or_else(|| "none".into()),
        ),
        ("ip / mac", output::network(&i)),
        (
            "devices",
            i.devices
                .as_ref()
                .map(|d| d.summary.clone())
                .unwrap_or_else(|| "-".into()),
        ),
        ("domain", i.domain_name.clone()),
        (
            "host",
            i.placement
                .as_ref()
                .map(|p| format!("{} ({})", p.host, p.how))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "placement",
            i.placement
                .as_ref()
                .map(|p| p.reason.clone())
                .unwrap_or_else(|| "-".into()),
        ),
        ("restart policy", restart_policy(&i.restart)),
        ("restarts", i.restart_count.to_string()),
        ("next restart", opt(&i.next_restart_at)),
        ("startup priority", i.startup_priority.to_string()),
        ("autostart", i.autostart.to_string()),
        ("labels", output::labels(&i.labels)),
        ("state changed", i.state_changed_at.clone()),
        ("created", i.created_at.clone()),
        ("started", opt(&i.started_at)),
        ("last error", opt(&i.last_error)),
    ];
    if i.failover {
        // Right after the placement it may change.
        let at = rows
            .iter()
            .position(|(k, _)| *k == "placement")
            .unwrap_or(0)
            + 1;
        rows.insert(at, ("failover", "yes".into()));
    }
    for (k, v) in rows {
        println!("{:<18} {v}", format!("{k}:"));
    }
    // Every NIC in slot order, with its network, address and link conditions: `interfaces`
    // (the older view) leaves out the first NIC and the conditions.
    for a in &i.attachments {
        println!("{:<18} {}", "attachment:", attachment(a));
    }
    for v in &i.volumes {
        let how = if v.read_only { "ro" } else { "rw" };
        println!("{:<18} {} = {} ({how})", "volume:", v.device, v.volume);
    }
    Ok(())
}

/// `service on gossip-net (bridge rzn1a2b3c), 10.60.0.5, 52:54:00:.., PCI slot 3, link latency=20ms`.
fn attachment(a: &rhyzome_api::NicAttachment) -> String {
    let device = a.device.as_deref().unwrap_or("net");
    let place = match &a.network {
        Some(network) => format!("{network} (bridge {})", a.bridge),
        None => format!("bridge {}", a.bridge),
    };
    let mut s = format!("{device} on {place}");
    if let Some(ip) = &a.ipv4 {
        s.push_str(&format!(", {ip}"));
    }
    s.push_str(&format!(", {}", a.mac));
    if let Some(slot) = a.pci_slot {
        s.push_str(&format!(", PCI slot {slot}"));
    }
    if !a.conditions.is_empty() {
        s.push_str(&format!(", link {}", a.conditions));
    }
    s
}

/// `on-failure:3 (exit codes 1,2)`, as the `--restart` flags spell it.
fn restart_policy(r: &rhyzome_api::RestartPolicy) -> String {
    let mut p = r.policy.as_str().replace('_', "-");
    if let Some(m) = r.max_retries {
        p.push_str(&format!(":{m}"));
    }
    if let Some(codes) = &r.exit_codes {
        let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
        p.push_str(&format!(" (exit codes {})", codes.join(",")));
    }
    p
}
