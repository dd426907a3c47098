//! `rhyzomectl image VERB`.

mod list;
mod progress;
pub mod push;
mod rm;
mod show;

use super::Context;
use crate::cli::ImageCommand;

pub fn run(ctx: &Context, cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Push(a) => push::run(ctx, &a),
        ImageCommand::List => list::run(ctx),
        ImageCommand::Show { reference } => show::run(ctx, &reference),
        ImageCommand::Rm { references } => rm::run(ctx, &references),
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
