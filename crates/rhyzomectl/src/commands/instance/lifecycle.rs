//! `rhyzomectl instance start|stop|restart NAME...`.

use super::Context;
use crate::output;
use clap::Args;
use rhyzome_api::client::{Client, ClientError};
use rhyzome_api::Instance;

#[derive(Args)]
pub struct NamesArgs {
    /// Instance names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Clone, Copy)]
pub enum Verb {
    Start,
    Stop,
    Restart,
}

impl Verb {
    fn call(self, client: &Client, name: &str) -> Result<Instance, ClientError> {
        match self {
            Verb::Start => client.start_instance(name),
            Verb::Stop => client.stop_instance(name),
            Verb::Restart => client.restart_instance(name),
        }
    }

    fn past(self) -> &'static str {
        match self {
            Verb::Start => "started",
            Verb::Stop => "stopped",
            Verb::Restart => "restarted",
        }
    }
}

/// Acts on every name even if one fails, then fails if any did.
pub fn run(ctx: &Context, verb: Verb, names: &[String]) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let mut failed = 0;
    let mut done = Vec::new();
    for name in names {
        match verb.call(&client, name) {
            Ok(i) => {
                if !ctx.json() {
                    println!("{} {name} ({})", verb.past(), output::state(&i));
                }
                done.push(i);
            }
            Err(e) => {
                eprintln!("rhyzomectl: {name}: {e}");
                failed += 1;
            }
        }
    }
    if ctx.json() {
        output::json(&done)?;
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} instances failed", names.len());
    }
    Ok(())
}
