//! `rhyzomectl events [--instance NAME]`.

use super::Context;
use clap::Args;
use std::io::Write;

#[derive(Args)]
pub struct EventsArgs {
    /// Only this instance's events.
    #[arg(long)]
    pub instance: Option<String>,
}

pub fn run(ctx: &Context, instance: Option<&str>) -> anyhow::Result<()> {
    let events = ctx.client()?.events(instance)?;
    let mut out = std::io::stdout().lock();
    for ev in events {
        match ev {
            Ok(ev) if ctx.json() => writeln!(out, "{}", serde_json::to_string(&ev)?)?,
            Ok(ev) => {
                let mut line = format!("{}  {:<20} {}", ev.time, ev.instance, ev.state);
                if let Some(code) = ev.exit_code {
                    line.push_str(&format!("({code})"));
                }
                if let Some(reason) = &ev.reason {
                    line.push_str(&format!("  {reason}"));
                }
                writeln!(out, "{line}")?;
            }
            Err(e) => eprintln!("rhyzomectl: {e}"),
        }
        out.flush()?;
    }
    Ok(())
}
