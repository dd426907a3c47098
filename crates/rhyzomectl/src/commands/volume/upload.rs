//! `rhyzomectl volume upload NAME FILE`: streamed, with a progress bar.

use super::Context;
use crate::commands::image::progress::Bar;
use crate::output;
use clap::Args;
use rhyzome_api::client::Client;
use rhyzome_api::VolumeUploaded;
use std::path::Path;

#[derive(Args)]
pub struct UploadArgs {
    pub name: String,
    /// The file whose bytes become the volume's content (from the first byte).
    pub file: std::path::PathBuf,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(ctx: &Context, a: &UploadArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let up = upload(&client, &a.name, &a.file, a.quiet)?;
    if ctx.json() {
        return output::json(&up);
    }
    println!(
        "{}: wrote {} (sha256:{})",
        a.name,
        output::size(up.bytes),
        up.sha256
    );
    Ok(())
}

/// Uploads `file` with a progress bar on stderr; shared with `volume create --from`.
pub fn upload(
    client: &Client,
    name: &str,
    file: &Path,
    quiet: bool,
) -> anyhow::Result<VolumeUploaded> {
    let total = std::fs::metadata(file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
        .len();
    let mut bar = Bar::new(total, quiet);
    let mut progress = |phase, done, total| bar.update(phase, done, total);
    let result = client.upload_volume(name, file, &mut progress);
    bar.finish();
    Ok(result?)
}
