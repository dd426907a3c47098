//! `rhyzomectl info`.

use super::Context;
use crate::output;

pub fn run(ctx: &Context) -> anyhow::Result<()> {
    let info = ctx.client()?.info()?;
    if ctx.json() {
        return output::json(&info);
    }
    println!("server:         {}", ctx.server);
    println!("hostname:       {}", info.hostname);
    println!("daemon id:      {}", info.daemon_id);
    println!("version:        {}", info.version);
    println!("domain type:    {}", info.domain_type);
    println!("libvirt:        {}", info.libvirt_uri);
    println!("default bridge: {}", info.default_bridge);
    Ok(())
}
