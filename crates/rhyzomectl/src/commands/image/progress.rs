//! A progress bar on stderr, drawn only when stderr is a terminal and the file is large
//! enough for it to matter.

use rhyzome_api::client::ProgressPhase;
use std::io::{IsTerminal, Write};

/// Files smaller than this upload in a blink; no bar.
const MIN_BYTES: u64 = 1 << 20;

pub struct Bar {
    enabled: bool,
    last_percent: Option<(ProgressPhase, u64)>,
}

impl Bar {
    pub fn new(total: u64, quiet: bool) -> Bar {
        Bar {
            enabled: !quiet && total >= MIN_BYTES && std::io::stderr().is_terminal(),
            last_percent: None,
        }
    }

    pub fn update(&mut self, phase: ProgressPhase, done: u64, total: u64) {
        if !self.enabled || total == 0 {
            return;
        }
        let percent = done.min(total) * 100 / total;
        // Redraw only when the figure changes; the callback runs for every 64 KiB.
        if self.last_percent == Some((phase, percent)) {
            return;
        }
        self.last_percent = Some((phase, percent));
        let width = 30;
        let filled = (percent * width / 100) as usize;
        let label = match phase {
            ProgressPhase::Hashing => "hashing    ",
            ProgressPhase::Uploading => "uploading  ",
            ProgressPhase::Downloading => "downloading",
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{label} [{}{}] {percent:>3}% {}/{}",
            "#".repeat(filled),
            " ".repeat(width as usize - filled),
            crate::output::size(done),
            crate::output::size(total)
        );
        let _ = err.flush();
    }

    pub fn finish(&mut self) {
        if self.enabled && self.last_percent.is_some() {
            eprintln!();
        }
    }
}
