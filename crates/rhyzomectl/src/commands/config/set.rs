//! `rhyzomectl --server URL [--token T] [--ca FILE | --fingerprint FP] config set NAME [--use]`.

use crate::cli::Globals;
use crate::profile::{Profile, Profiles};
use clap::Args;

/// The entry's values are the global options: `rhyzomectl --server URL --token T
/// [--ca FILE | --fingerprint FP] config set NAME`, or after the name.
#[derive(Args)]
pub struct ConfigSetArgs {
    /// Name of the server entry.
    pub name: String,
    /// Also make it the default.
    #[arg(long = "use")]
    pub use_it: bool,
}

pub fn run(a: ConfigSetArgs, g: &Globals) -> anyhow::Result<()> {
    let Some(server) = g.server.clone() else {
        anyhow::bail!(
            "give the server's URL: rhyzomectl config set {} --server URL",
            a.name
        );
    };
    let ca = match &g.ca {
        Some(p) => Some(
            std::fs::canonicalize(p).map_err(|e| anyhow::anyhow!("--ca {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut profiles = Profiles::load()?;
    profiles.servers.insert(
        a.name.clone(),
        Profile {
            server,
            token: g.token.clone(),
            ca,
            fingerprint: g.fingerprint.clone(),
        },
    );
    if profiles.current.is_none() || a.use_it {
        profiles.current = Some(a.name.clone());
    }
    let path = profiles.save()?;
    println!("saved server {:?} in {}", a.name, path.display());
    Ok(())
}
