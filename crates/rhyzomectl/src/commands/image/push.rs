//! `rhyzomectl image push FILE [--name N[:TAG]]`.

use super::progress::Bar;
use super::Context;
use crate::output;
use clap::Args;
use rhyzome_api::client::{Client, PushOutcome};
use std::path::Path;

#[derive(Args)]
pub struct ImagePushArgs {
    /// The image file, e.g. a Solo5 virtio unikernel (`*.virtio`).
    pub file: std::path::PathBuf,
    /// Name it NAME[:TAG] (the tag defaults to `latest`).
    #[arg(long)]
    pub name: Option<String>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(ctx: &Context, a: &ImagePushArgs) -> anyhow::Result<()> {
    if let Some(n) = &a.name {
        rhyzome_api::images::parse_name_tag("name", n)?;
    }
    let client = ctx.client()?;
    let out = push(ctx, &client, &a.file, a.name.as_deref(), a.quiet)?;
    if ctx.json() {
        return output::json(&out.upload);
    }
    let i = &out.upload.image;
    let what = if out.bytes_sent == 0 {
        "already on the server; nothing sent".to_string()
    } else if out.upload.created {
        format!("uploaded {}", crate::output::size(out.bytes_sent))
    } else {
        format!(
            "sent {}, same content was already stored",
            crate::output::size(out.bytes_sent)
        )
    };
    println!("{} ({what})", i.digest);
    println!("  {}", i.inspection.description);
    if let Some(p) = &i.inspection.problem {
        println!("  warning: cannot run on libvirt: {p}");
    }
    Ok(())
}

/// Pushes `file`, with a progress bar on stderr for large files; shared with
/// `instance create --kernel-file`.
pub fn push(
    _ctx: &Context,
    client: &Client,
    file: &Path,
    name: Option<&str>,
    quiet: bool,
) -> anyhow::Result<PushOutcome> {
    let total = std::fs::metadata(file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
        .len();
    let mut bar = Bar::new(total, quiet);
    let mut progress = |phase, done, total| bar.update(phase, done, total);
    let result = client.push_image(file, name, &mut progress);
    bar.finish();
    Ok(result?)
}
