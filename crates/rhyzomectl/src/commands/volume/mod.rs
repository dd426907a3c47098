//! `rhyzomectl volume VERB`: block storage for unikernels.

mod create;
mod download;
mod list;
mod resize;
mod rm;
mod show;
mod upload;

use super::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Create a volume: empty, filled from a file, or a copy-on-write clone of another.
    Create(create::CreateArgs),
    /// List volumes.
    #[command(alias = "ls")]
    List,
    /// Show a volume: size, allocation, format, clones and the instances attaching it.
    Show(show::ShowArgs),
    /// Replace a raw volume's content with a file (streamed, digest-checked).
    Upload(upload::UploadArgs),
    /// Write a volume's content to a file (streamed).
    Download(download::DownloadArgs),
    /// Grow a volume (refused while attached).
    Resize(resize::ResizeArgs),
    /// Delete volumes (refused while attached or cloned).
    #[command(alias = "delete")]
    Rm(rm::RmArgs),
}

pub fn run(ctx: &Context, cmd: VolumeCommand) -> anyhow::Result<()> {
    match cmd {
        VolumeCommand::Create(a) => create::run(ctx, &a),
        VolumeCommand::List => list::run(ctx),
        VolumeCommand::Show(a) => show::run(ctx, &a.name),
        VolumeCommand::Upload(a) => upload::run(ctx, &a),
        VolumeCommand::Download(a) => download::run(ctx, &a),
        VolumeCommand::Resize(a) => resize::run(ctx, &a),
        VolumeCommand::Rm(a) => rm::run(ctx, &a.names),
    }
}

/// `app as storage (rw), b as storage (ro)`, or `-`.
pub fn attached(v: &rhyzome_api::Volume) -> String {
    if v.attached.is_empty() {
        return "-".into();
    }
    v.attached
        .iter()
        .map(|u| {
            let how = if u.read_only { "ro" } else { "rw" };
            format!("{} as {} ({how})", u.instance, u.device)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn format_name(f: rhyzome_api::VolumeFormat) -> &'static str {
    match f {
        rhyzome_api::VolumeFormat::Raw => "raw",
        rhyzome_api::VolumeFormat::Qcow2 => "qcow2",
    }
}

/// Parses `64M`-style sizes for clap.
fn size_arg(s: &str) -> Result<u64, String> {
    rhyzome_api::volumes::parse_size(s)
}
