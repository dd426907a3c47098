//! Dispatch from parsed arguments to one module per noun/verb.

pub mod completions;
pub mod config;
pub mod events;
pub mod host;
pub mod image;
mod info;
pub mod instance;
pub mod network;
pub mod testbed;
pub mod volume;

use crate::cli::{Cli, Command};
use crate::profile::Profiles;
use rhyzome_api::client::{Client, ClientOptions};

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let globals = cli.globals();
    match cli.command {
        Command::Config(cmd) => return config::run(cmd, &globals),
        // Needs no server, nor the client configuration.
        Command::Man(a) => return completions::man(&a.out_dir),
        _ => {}
    }
    let ctx = Context::resolve(&cli)?;
    match cli.command {
        Command::Config(_) | Command::Man(_) => unreachable!("handled above"),
        Command::Instance(cmd) => instance::run(&ctx, cmd),
        Command::Image(cmd) => image::run(&ctx, cmd),
        Command::Network(cmd) => network::run(&ctx, cmd),
        Command::Volume(cmd) => volume::run(&ctx, cmd),
        Command::Host(cmd) => host::run(&ctx, cmd),
        Command::Testbed(cmd) => testbed::run(&ctx, cmd),
        Command::Info => info::run(&ctx),
        Command::Events(a) => events::run(&ctx, a.instance.as_deref()),
        Command::Completions(a) => completions::run(a.shell),
    }
}

pub struct Context {
    pub output: crate::cli::Output,
    pub server: String,
    options: ClientOptions,
}

impl Context {
    /// Flags and environment win over the configuration file's named server.
    fn resolve(cli: &Cli) -> anyhow::Result<Context> {
        let profiles = Profiles::load()?;
        let named = cli.context.as_ref().or(profiles.current.as_ref());
        let profile = match named {
            Some(name) => match profiles.servers.get(name) {
                Some(p) => Some(p.clone()),
                None if cli.context.is_some() => {
                    anyhow::bail!(
                        "no server named {name:?} in {}",
                        crate::profile::path().display()
                    )
                }
                None => None,
            },
            None => None,
        };
        let profile = profile.unwrap_or_default();
        let server = cli
            .server
            .clone()
            .or_else(|| (!profile.server.is_empty()).then(|| profile.server.clone()))
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let ca_path = cli.ca.clone().or(if cli.fingerprint.is_some() {
            None
        } else {
            profile.ca
        });
        let ca_pem = match ca_path {
            Some(p) => {
                Some(std::fs::read(&p).map_err(|e| anyhow::anyhow!("--ca {}: {e}", p.display()))?)
            }
            None => None,
        };
        let fingerprint = cli.fingerprint.clone().or(if cli.ca.is_some() {
            None
        } else {
            profile.fingerprint
        });
        Ok(Context {
            output: cli.output,
            server,
            options: ClientOptions {
                token: cli.token.clone().or(profile.token),
                ca_pem,
                fingerprint,
            },
        })
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_options(&self.server, self.options.clone())?)
    }

    pub fn json(&self) -> bool {
        self.output == crate::cli::Output::Json
    }
}

/// What the `link` verbs send: the condition terms given (`latency=80ms ...`) over the
/// conditions `current` reads from the server, or over none with `--clear`.
fn changed_conditions(
    terms: &[String],
    clear: bool,
    current: impl FnOnce() -> anyhow::Result<rhyzome_api::LinkConditions>,
) -> anyhow::Result<rhyzome_api::LinkConditions> {
    let change = rhyzome_api::validate::parse_conditions(&terms.join(","))?;
    let current = if clear {
        Default::default()
    } else {
        current()?
    };
    Ok(change.or(current))
}

/// Deletes each of `names` with `delete`, printing what went and what did not; fails when any
/// did not (`what` names them in plural: `images`). Shared by the `rm` verbs.
pub fn delete_each(
    names: &[String],
    what: &str,
    delete: impl Fn(&str) -> Result<(), rhyzome_api::client::ClientError>,
) -> anyhow::Result<()> {
    let mut failed = 0;
    for name in names {
        match delete(name) {
            Ok(()) => println!("deleted {name}"),
            Err(e) => {
                eprintln!("rhyzomectl: {name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} {what} not deleted", names.len());
    }
    Ok(())
}
