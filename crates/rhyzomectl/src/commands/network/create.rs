//! `rhyzomectl network create NAME --subnet CIDR [--gateway IP] [--mode M] [--dhcp]
//! [--emulated [--seed N] [--link CONDITIONS]]`.

use super::Context;
use crate::output;
use clap::{Args, ValueEnum};
use rhyzome_api::{ForwardMode, NetworkCreate};

#[derive(Args)]
pub struct CreateArgs {
    /// Network name (a DNS label, at most 50 characters).
    pub name: String,
    /// IPv4 subnet, e.g. 10.20.0.0/24.
    #[arg(long)]
    pub subnet: String,
    /// The host's address on the network (default: the subnet's first address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// isolated: guests and the gateway only; nat: outbound access; route: routed, no NAT.
    #[arg(long, value_enum, default_value = "isolated")]
    pub mode: Mode,
    /// Run DHCP on the network, with a static entry for every instance's address.
    #[arg(long)]
    pub dhcp: bool,
    /// Carry the network's frames through a link emulator, so its NICs can have latency,
    /// jitter, loss, down and partitions (`instance link`, `network link|partition`).
    #[arg(long)]
    pub emulated: bool,
    /// Seed of the emulator's loss and jitter, to replay a drop pattern (with --emulated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Default link conditions of every NIC without its own (with --emulated), e.g.
    /// `latency=20ms,jitter=5ms,loss=1%,rate=10mbit`.
    #[arg(long, value_name = "CONDITIONS", value_parser = crate::commands::instance::create::parse_link)]
    pub link: Option<rhyzome_api::LinkConditions>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    Isolated,
    Nat,
    Route,
}

pub fn run(ctx: &Context, a: CreateArgs) -> anyhow::Result<()> {
    let req = NetworkCreate {
        name: a.name,
        subnet: a.subnet,
        gateway: a.gateway,
        mode: Some(match a.mode {
            Mode::Isolated => ForwardMode::Isolated,
            Mode::Nat => ForwardMode::Nat,
            Mode::Route => ForwardMode::Route,
        }),
        dhcp: Some(a.dhcp),
        emulated: Some(a.emulated),
        seed: a.seed,
        link: a.link,
    };
    // The same checks as the server's, before anything is sent.
    rhyzome_api::networks::validate_network(&req)?;
    let n = ctx.client()?.create_network(&req)?;
    if ctx.json() {
        return output::json(&n);
    }
    println!(
        "created network {} ({}, gateway {}, {}, bridge {})",
        n.name,
        n.subnet,
        n.gateway,
        n.mode.as_str(),
        n.bridge
    );
    Ok(())
}
