//! `rhyzomectl completions SHELL`, and the manual pages (`rhyzomectl man --out-dir DIR`,
//! hidden: the package build runs it). Both come from the clap definitions, so they never
//! drift from the commands.

use anyhow::Context;
use clap::{Args, CommandFactory};

#[derive(Args)]
pub struct CompletionsArgs {
    /// Shell to generate completions for.
    pub shell: clap_complete::Shell,
}

#[derive(Args)]
pub struct ManArgs {
    #[arg(long)]
    pub out_dir: std::path::PathBuf,
}

pub fn run(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut cmd, "rhyzomectl", &mut std::io::stdout());
    Ok(())
}

/// Writes `rhyzomectl.1` and one page per subcommand (`rhyzomectl-instance-create.1`, ...).
pub fn man(out_dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    clap_mangen::generate_to(crate::cli::Cli::command(), out_dir)
        .with_context(|| format!("cannot write manual pages to {}", out_dir.display()))
}
