//! `rhyzomectl config use NAME`.

use crate::profile::Profiles;
use clap::Args;

#[derive(Args)]
pub struct UseArgs {
    pub name: String,
}

pub fn run(name: &str) -> anyhow::Result<()> {
    let mut profiles = Profiles::load()?;
    if !profiles.servers.contains_key(name) {
        anyhow::bail!(
            "no server named {name:?}; add it with rhyzomectl config set {name} --server URL"
        );
    }
    profiles.current = Some(name.to_string());
    profiles.save()?;
    println!("now using {name}");
    Ok(())
}
