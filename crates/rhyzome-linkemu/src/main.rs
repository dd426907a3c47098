//! `rhyzome-linkemu`: run one emulated network, or talk to a running one.
//!
//! ```text
//! rhyzome-linkemu run --state FILE --control SOCKET [--netns PATH]
//! rhyzome-linkemu ctl --control SOCKET get|stats|put FILE
//! ```
//!
//! `run` enters the network namespace at `--netns` first (before any socket or thread
//! exists), then serves until killed. The daemon starts it in a session of its own so that
//! it outlives the daemon.

use anyhow::{bail, Context};
use rhyzome_linkemu::engine::Emulator;
use rhyzome_linkemu::protocol::{call, Request};
use rhyzome_linkemu::state::NetworkState;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    match args.first().map(String::as_str) {
        Some("run") => {
            let state = flag("--state").context("run needs --state FILE")?;
            let control = flag("--control").context("run needs --control SOCKET")?;
            if let Some(netns) = flag("--netns") {
                rhyzome_linkemu::tap::enter_netns(std::path::Path::new(&netns))
                    .with_context(|| format!("entering network namespace {netns}"))?;
            }
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("RHYZOME_LINKEMU_LOG")
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let mut emulator = Emulator::start(&PathBuf::from(&state), &PathBuf::from(&control))?;
            tracing::info!(
                state,
                control,
                pid = std::process::id(),
                "link emulator running"
            );
            emulator.run()?;
            Ok(())
        }
        Some("ctl") => {
            let control = flag("--control").context("ctl needs --control SOCKET")?;
            let verb_at = args
                .iter()
                .position(|a| a == "--control")
                .map_or(1, |i| i + 2);
            let request = match args.get(verb_at).map(String::as_str) {
                Some("get") => Request::Get,
                Some("stats") => Request::Stats,
                Some("put") => {
                    let file = args.get(verb_at + 1).context("put needs a state FILE")?;
                    Request::Put {
                        state: NetworkState::load(std::path::Path::new(file))?,
                    }
                }
                _ => bail!("ctl takes get, stats or put FILE"),
            };
            let mut stream = std::os::unix::net::UnixStream::connect(&control)
                .with_context(|| format!("connecting to {control}"))?;
            let response = call(&mut stream, &request)?;
            println!("{}", serde_json::to_string_pretty(&response)?);
            if !response.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        _ => bail!(
            "usage: rhyzome-linkemu run --state FILE --control SOCKET [--netns PATH]\n       \
             rhyzome-linkemu ctl --control SOCKET get|stats|put FILE"
        ),
    }
}
