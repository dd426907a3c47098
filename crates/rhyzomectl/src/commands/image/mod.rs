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

/// `12.3 MiB`.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}
