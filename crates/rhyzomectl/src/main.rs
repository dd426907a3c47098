//! `rhyzomectl`: the Rhyzome command-line client. One module per noun and verb under
//! `commands/`; this file only parses arguments and turns errors into exit codes.

mod cli;
mod commands;
mod output;
mod profile;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = commands::run(args) {
        eprintln!("rhyzomectl: {e:#}");
        std::process::exit(1);
    }
}
