//! `rhyzomesrv` binary: argument parsing and logging only; everything else is in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use rhyzomesrv::config::{Config, DEFAULT_CONFIG_FILE};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "rhyzomesrv",
    version,
    about = "Rhyzome daemon: runs unikernels as libvirt guests"
)]
struct Args {
    /// Configuration file (JSON). Default: ./rhyzome.conf, or built-in defaults if it is absent.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Check the configuration file and print the effective settings.
    CheckConfig,
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=info".into()),
        )
        .init();
    if let Some(Command::Openapi) = args.command {
        print!("{}", rhyzomesrv::http::openapi_json());
        return Ok(());
    }
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    let config = Config::load(&path, explicit)?;
    if let Some(Command::CheckConfig) = args.command {
        println!("{config:#?}");
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(rhyzomesrv::daemon::run(config))?;
    Ok(())
}
