//! `rhyzomectl testbed wait NAME [--timeout T]`: polls the bed until it is ready, printing
//! per-group progress: rewritten in place on a terminal, one line per change otherwise.

use super::Context;
use crate::output;
use clap::Args;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct WaitArgs {
    pub name: String,
    /// Give up after this long (e.g. 90s, 10m).
    #[arg(long, default_value = "10m")]
    pub timeout: humantime::Duration,
}

const POLL: Duration = Duration::from_millis(300);

pub fn run(ctx: &Context, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal() && !ctx.json();
    let mut last = String::new();
    loop {
        let bed = client.get_testbed(name)?;
        let line = bed
            .groups
            .iter()
            .map(|g| {
                format!(
                    "{}: {}/{} created, {}/{} ready",
                    g.name, g.created, g.desired, g.ready, g.desired
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let line = format!("{line} ({:.1}s)", started.elapsed().as_secs_f64());
        if !ctx.json() {
            if tty {
                eprint!("\x1b[2K\r{line}");
                let _ = std::io::stderr().flush();
            } else if line.split(" (").next() != last.split(" (").next() {
                eprintln!("{line}");
            }
        }
        last = line;
        if bed.ready {
            if tty {
                eprintln!();
            }
            if ctx.json() {
                return output::json(&bed);
            }
            println!(
                "test bed {name}: ready in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if started.elapsed() > timeout {
            if tty {
                eprintln!();
            }
            let why = bed
                .last_error
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default();
            anyhow::bail!(
                "test bed {name} not ready after {}{why}",
                humantime::format_duration(timeout)
            );
        }
        std::thread::sleep(POLL);
    }
}
