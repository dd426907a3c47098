//! `rhyzomectl instance link NAME CONDITIONS...`: change the link conditions of an
//! instance's NICs. The terms given change those conditions and keep the others (the CLI
//! reads the current ones first); `--clear` starts from none.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct LinkArgs {
    /// Instance name.
    pub name: String,
    /// Conditions: latency=80ms jitter=5ms loss=1%[/25%] rate=10mbit down up (commas or
    /// separate words).
    #[arg(required_unless_present = "clear")]
    pub conditions: Vec<String>,
    /// Remove every condition first.
    #[arg(long)]
    pub clear: bool,
}

pub fn run(ctx: &Context, a: &LinkArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let conditions = super::super::changed_conditions(&a.conditions, a.clear, || {
        Ok(client
            .get_instance(&a.name)?
            .attachments
            .first()
            .map(|n| n.conditions)
            .unwrap_or_default())
    })?;
    let instance = client.set_instance_link(&a.name, &conditions)?;
    if ctx.json() {
        return output::json(&instance);
    }
    let now = instance
        .attachments
        .first()
        .map(|n| n.conditions.to_string())
        .unwrap_or_else(|| "-".into());
    println!("{}: {now}", instance.name);
    Ok(())
}
