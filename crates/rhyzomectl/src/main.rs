//! `rhyzomectl`: the Rhyzome command-line client. One module per noun and verb under
//! `commands/`; this file only parses arguments and turns errors into exit codes.

mod cli;
mod commands;
mod output;
mod parallel;
mod profile;
mod template;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = commands::run(args) {
        eprintln!("rhyzomectl: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause only once: HTTP client errors repeat
/// their own causes in their messages.
fn message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}
