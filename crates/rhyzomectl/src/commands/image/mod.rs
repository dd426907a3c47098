//! `rhyzomectl image VERB`.

mod list;
pub(crate) mod progress;
pub mod push;
pub mod rm;
pub mod show;

use super::Context;
use clap::Subcommand;
use push::ImagePushArgs;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Upload an image (skipped when the server already has the same content).
    Push(ImagePushArgs),
    /// List images.
    #[command(alias = "ls")]
    List,
    /// Show an image and what inspection found in it (kind, Solo5 target, manifest).
    Show(show::ShowArgs),
    /// Delete images (refused while an instance boots one).
    #[command(alias = "delete")]
    Rm(rm::RmArgs),
}

pub fn run(ctx: &Context, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Push(a) => push::run(ctx, &a),
        ImageCommand::List => list::run(ctx),
        ImageCommand::Show(a) => show::run(ctx, &a.reference),
        ImageCommand::Rm(a) => rm::run(ctx, &a.references),
    }
}

/// `web:1.0, web:latest`, or `-`.
pub fn names(i: &rhyzome_api::Image) -> String {
    if i.names.is_empty() {
        "-".into()
    } else {
        i.names.join(", ")
    }
}
