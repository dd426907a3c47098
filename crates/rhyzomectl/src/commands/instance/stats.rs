//! `rhyzomectl instance stats NAME`.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct StatsArgs {
    /// Instance name.
    pub name: String,
}

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let s = ctx.client()?.instance_stats(name)?;
    if ctx.json() {
        return output::json(&s);
    }
    println!("{:<18} {}", "name:", s.name);
    println!("{:<18} {:.3} s", "cpu time:", s.cpu_time_ns as f64 / 1e9);
    let rss = s
        .rss_kib
        .map(|k| format!(" (QEMU resident: {})", output::size(k << 10)))
        .unwrap_or_default();
    println!(
        "{:<18} {}{rss}",
        "memory:",
        output::size(s.memory_kib << 10)
    );
    for n in &s.nics {
        println!(
            "{:<18} received {} in {} packets, sent {} in {} packets",
            format!("nic {}:", n.mac),
            output::size(n.rx_bytes),
            n.rx_packets,
            output::size(n.tx_bytes),
            n.tx_packets
        );
    }
    Ok(())
}
