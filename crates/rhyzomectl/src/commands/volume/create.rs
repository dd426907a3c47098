//! `rhyzomectl volume create NAME --size 64M [--format raw|qcow2] [--from FILE | --clone VOLUME]`.

use super::Context;
use crate::output;
use clap::{Args, ValueEnum};
use rhyzome_api::{VolumeFormat, VolumeSpec};

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Raw,
    Qcow2,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Volume name (a DNS label).
    pub name: String,
    /// Size, in bytes or with a unit: 64M, 1G (a multiple of 512 bytes). Optional with
    /// --clone (default: the base's size) and with --from (default: the file's size, rounded
    /// up to 512 bytes).
    #[arg(long, value_parser = super::size_arg)]
    pub size: Option<u64>,
    /// On-disk format.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Fill the new (raw) volume from this file, streamed.
    #[arg(long, value_name = "FILE", conflicts_with = "clone")]
    pub from: Option<std::path::PathBuf>,
    /// Make a copy-on-write clone of this volume.
    #[arg(long, value_name = "VOLUME")]
    pub clone: Option<String>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(ctx: &Context, a: &CreateArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let size = match (&a.from, a.size) {
        (Some(file), None) => {
            let len = std::fs::metadata(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
                .len();
            Some(len.div_ceil(512).max(1) * 512)
        }
        (_, size) => size,
    };
    let spec = VolumeSpec {
        name: a.name.clone(),
        size_bytes: size,
        format: a.format.map(|f| match f {
            FormatArg::Raw => VolumeFormat::Raw,
            FormatArg::Qcow2 => VolumeFormat::Qcow2,
        }),
        clone: a.clone.clone(),
    };
    let mut volume = client.create_volume(&spec)?;
    if let Some(file) = &a.from {
        match super::upload::upload(&client, &a.name, file, a.quiet) {
            Ok(up) => volume = up.volume,
            Err(e) => {
                // Leave nothing behind: the volume was made for this content.
                let _ = client.delete_volume(&a.name);
                return Err(e);
            }
        }
    }
    if ctx.json() {
        return output::json(&volume);
    }
    println!(
        "{} ({}, {})",
        volume.name,
        super::format_name(volume.format),
        output::size(volume.size_bytes)
    );
    Ok(())
}
