//! `rhyzomectl network show NAME`: the network and every address given out on it.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct ShowArgs {
    pub name: String,
}

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let n = ctx.client()?.get_network(name)?;
    if ctx.json() {
        return output::json(&n);
    }
    let mut rows = vec![
        ("name", n.name.clone()),
        ("subnet", n.subnet.clone()),
        ("gateway", n.gateway.clone()),
        ("mode", n.mode.as_str().to_string()),
        ("dhcp", if n.dhcp { "yes" } else { "no" }.to_string()),
        ("bridge", n.bridge.clone()),
        ("libvirt network", n.libvirt_name.clone()),
        (
            "state",
            if n.active { "active" } else { "inactive" }.to_string(),
        ),
        ("addresses in use", n.addresses_in_use.to_string()),
        ("addresses free", n.addresses_free.to_string()),
        ("created", n.created_at.clone()),
        ("owner", n.owner.clone()),
    ];
    if n.emulated {
        rows.insert(6, ("emulated", "yes".to_string()));
        rows.insert(7, ("link", n.link.to_string()));
    }
    for (k, v) in rows {
        println!("{:<18} {v}", format!("{k}:"));
    }
    if !n.attachments.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = n
            .attachments
            .iter()
            .map(|a| {
                vec![
                    a.ip.clone(),
                    a.instance.clone(),
                    a.device.clone().unwrap_or_else(|| "-".into()),
                    a.mac.clone(),
                ]
            })
            .collect();
        output::table(&["ADDRESS", "INSTANCE", "DEVICE", "MAC"], &rows);
    }
    Ok(())
}
