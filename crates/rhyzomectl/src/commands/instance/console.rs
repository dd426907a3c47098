//! `rhyzomectl instance console NAME [--follow] [--tail N]`. A followed console reconnects
//! when the server ends the stream at its maximum lifetime, from the offset it reached (the
//! response's `Console-Offset` plus the bytes received), and stops when the instance is
//! deleted.

use super::Context;
use clap::Args;
use rhyzome_api::client::{is_not_found, pause_before_reconnect};
use rhyzome_api::ConsoleQuery;
use std::io::{Read, Write};
use std::time::Instant;

#[derive(Args)]
pub struct ConsoleArgs {
    /// Instance name.
    pub name: String,
    /// Keep printing new output as it arrives (until the instance is deleted or Ctrl-C).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Only the last N bytes.
    #[arg(long, value_name = "N")]
    pub tail_bytes: Option<u64>,
    /// Only the output of the current (or last) run.
    #[arg(long)]
    pub current_run: bool,
    /// Only output since a time (RFC 3339) or for a duration back from now (10m, 90s, 2h).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
}

pub fn run(ctx: &Context, a: &ConsoleArgs) -> anyhow::Result<()> {
    let q = ConsoleQuery {
        tail_bytes: a.tail_bytes,
        tail: a.tail,
        current_run: a.current_run.then_some(true),
        follow: a.follow.then_some(true),
        since: a.since.clone(),
        after: None,
    };
    let client = ctx.client()?;
    let mut resp = client.console_stream(&a.name, &q)?;
    let mut out = std::io::stdout().lock();
    loop {
        let connected_at = Instant::now();
        let body_offset = resp
            .headers()
            .get("console-offset")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let received = copy_as_it_arrives(&mut resp, &mut out)?;
        if !a.follow {
            return Ok(());
        }
        // The server ends a followed console after its MaxStreamSeconds, or when the instance
        // is deleted: go on from where this response ended (from the log's end with a server
        // that does not say where its responses start), unless the instance is gone.
        pause_before_reconnect(connected_at);
        let again = ConsoleQuery {
            follow: Some(true),
            after: body_offset.map(|at| at + received),
            tail_bytes: body_offset.is_none().then_some(0),
            ..Default::default()
        };
        resp = match client.console_stream(&a.name, &again) {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
    }
}

/// Copies in small reads so that followed output appears as it arrives; returns how many
/// bytes were copied.
fn copy_as_it_arrives(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = [0u8; 8192];
    let mut copied = 0;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(copied);
        }
        to.write_all(&buf[..n])?;
        to.flush()?;
        copied += n as u64;
    }
}
