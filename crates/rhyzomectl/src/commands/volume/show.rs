//! `rhyzomectl volume show NAME`.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct ShowArgs {
    pub name: String,
}

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let v = ctx.client()?.get_volume(name)?;
    if ctx.json() {
        return output::json(&v);
    }
    println!("name:       {}", v.name);
    println!("format:     {}", super::format_name(v.format));
    println!(
        "size:       {} ({} bytes)",
        output::size(v.size_bytes),
        v.size_bytes
    );
    println!("allocated:  {}", output::size(v.allocation_bytes));
    println!("base:       {}", v.base.as_deref().unwrap_or("-"));
    let clones = if v.clones.is_empty() {
        "-".to_string()
    } else {
        v.clones.join(", ")
    };
    println!("clones:     {clones}");
    println!("attached:   {}", super::attached(&v));
    println!("created:    {}", v.created_at);
    Ok(())
}
