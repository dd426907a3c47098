//! `rhyzomectl config list`: the configured servers, without their tokens.

use crate::output;
use crate::profile::Profiles;

pub fn run() -> anyhow::Result<()> {
    let profiles = Profiles::load()?;
    let rows: Vec<Vec<String>> = profiles
        .servers
        .iter()
        .map(|(name, p)| {
            let current = profiles.current.as_deref() == Some(name.as_str());
            let trust = match (&p.ca, &p.fingerprint) {
                (Some(ca), _) => format!("ca {}", ca.display()),
                (None, Some(fp)) => format!("pinned {fp}"),
                (None, None) => "-".into(),
            };
            vec![
                if current { "*".into() } else { String::new() },
                name.clone(),
                p.server.clone(),
                if p.token.is_some() { "yes" } else { "no" }.into(),
                trust,
            ]
        })
        .collect();
    output::table(&["", "NAME", "SERVER", "TOKEN", "TRUST"], &rows);
    Ok(())
}
