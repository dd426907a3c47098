//! `rhyzomectl network list`.

use super::Context;
use crate::output;

pub fn run(ctx: &Context) -> anyhow::Result<()> {
    let networks = ctx.client()?.list_networks()?;
    if ctx.json() {
        return output::json(&networks);
    }
    let rows: Vec<Vec<String>> = networks
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.subnet.clone(),
                n.gateway.clone(),
                n.mode.as_str().to_string(),
                if n.dhcp { "yes" } else { "no" }.to_string(),
                n.bridge.clone(),
                format!(
                    "{}/{}",
                    n.addresses_in_use,
                    n.addresses_in_use + n.addresses_free
                ),
                if n.active { "active" } else { "inactive" }.to_string(),
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "SUBNET", "GATEWAY", "MODE", "DHCP", "BRIDGE", "IN USE", "STATE",
        ],
        &rows,
    );
    Ok(())
}
