//! `rhyzomectl host VERB`: the libvirt hosts the daemon drives (read-only; they are configured
//! in the daemon's `Hosts`).

mod list;
mod show;

use super::Context;
use crate::output;
use clap::Subcommand;
use rhyzome_api::Host;

#[derive(Subcommand)]
pub enum HostCommand {
    /// List the hosts: reachable or not, capacity, and this daemon's instances on each.
    #[command(alias = "ls")]
    List,
    /// Show a host in detail, with libvirt's error when it cannot be reached.
    Show(show::ShowArgs),
}

pub fn run(ctx: &Context, cmd: HostCommand) -> anyhow::Result<()> {
    match cmd {
        HostCommand::List => list::run(ctx),
        HostCommand::Show(a) => show::run(ctx, &a.name),
    }
}

/// `3` or, with a limit, `3/400`.
fn instances(h: &Host) -> String {
    match h.max_instances {
        Some(max) => format!("{}/{max}", h.instances),
        None => h.instances.to_string(),
    }
}

/// `5m3s ago`, or the time as given when it cannot be read.
fn ago(rfc3339: &str) -> String {
    match humantime::parse_rfc3339(rfc3339) {
        Ok(t) => {
            let secs = std::time::SystemTime::now()
                .duration_since(t)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            format!("{} ago", output::compact_duration(secs))
        }
        Err(_) => rfc3339.to_string(),
    }
}

/// A value the daemon learns only once the host answered, or `-`.
fn known<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}
