//! `rhyzomectl instance console NAME`.

use super::Context;
use std::io::Write;

pub fn run(ctx: &Context, name: &str, tail_bytes: Option<u64>) -> anyhow::Result<()> {
    let bytes = ctx.client()?.console(name, tail_bytes)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}
