//! `rhyzomectl image show REF`: everything inspection found.

use super::Context;
use crate::output;
use clap::Args;

#[derive(Args)]
pub struct ShowArgs {
    /// NAME[:TAG] or sha256:HEX.
    pub reference: String,
}

pub fn run(ctx: &Context, reference: &str) -> anyhow::Result<()> {
    let i = ctx.client()?.get_image(reference)?;
    if ctx.json() {
        return output::json(&i);
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let solo5 = i.inspection.solo5.as_ref();
    let mut rows = vec![
        ("digest", i.digest.clone()),
        ("names", super::names(&i)),
        (
            "size",
            format!("{} ({} bytes)", crate::output::size(i.size), i.size),
        ),
        ("uploaded", i.uploaded_at.clone()),
        ("kind", i.inspection.description.clone()),
        (
            "solo5 target",
            opt(solo5.and_then(|s| {
                s.abi_target.clone().map(|t| match s.abi_version {
                    Some(v) => format!("{t} (ABI version {v})"),
                    None => t,
                })
            })),
        ),
        (
            "runs on libvirt",
            match &i.inspection.problem {
                None => "yes".into(),
                Some(p) => format!("no: {p}"),
            },
        ),
    ];
    match solo5.and_then(|s| s.manifest.as_ref()) {
        None => rows.push(("manifest", "-".into())),
        Some(m) if m.devices.is_empty() => {
            rows.push(("manifest", format!("version {}, no devices", m.version)))
        }
        Some(m) => {
            rows.push(("manifest", format!("version {}", m.version)));
            for d in &m.devices {
                rows.push(("  device", format!("{} {}", d.name, d.kind)));
            }
        }
    }
    for (k, v) in rows {
        println!("{:<16} {v}", format!("{k}:"));
    }
    Ok(())
}
