//! `rhyzomectl instance console NAME [--follow] [--tail N]`.

use super::Context;
use crate::cli::ConsoleArgs;
use rhyzome_api::ConsoleQuery;
use std::io::Write;

pub fn run(ctx: &Context, a: &ConsoleArgs) -> anyhow::Result<()> {
    let q = ConsoleQuery {
        tail_bytes: a.tail_bytes,
        tail: a.tail,
        current_run: a.current_run.then_some(true),
        follow: a.follow.then_some(true),
        since: a.since.clone(),
    };
    let mut resp = ctx.client()?.console_stream(&a.name, &q)?;
    let mut out = std::io::stdout().lock();
    // Copy in small reads so that followed output appears as it arrives.
    let mut buf = [0u8; 8192];
    loop {
        let n = std::io::Read::read(&mut resp, &mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
    Ok(())
}
