//! Where the daemon's logs go and in what shape.
//!
//! - Under systemd with stderr connected to the journal: straight into the journal through its
//!   native protocol (`tracing-journald`), so that every field of an event or its spans
//!   (`instance`, `request_id`, ...) becomes a journal field (`INSTANCE=`, `REQUEST_ID=`) that
//!   `journalctl -o verbose` shows and `journalctl INSTANCE=web` filters on, and the journal's
//!   own timestamp is the only one. If the journal's socket cannot be reached, plain lines
//!   without a timestamp go to stderr, which the journal stamps.
//! - Otherwise: the plain format on stderr, with timestamps, coloured only for a terminal.
//!
//! `RUST_LOG` filters in every case. Set up once, at start-up, before any thread exists.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The format the logs are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// journald's native protocol, with structured fields.
    Journal,
    /// Plain lines on stderr without timestamps: stderr is the journal's stream.
    JournalStream,
    /// Plain lines on stderr with timestamps.
    Terminal,
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_http=info".into())
}

/// Installs the global subscriber and returns where the logs go.
pub fn init() -> Destination {
    if crate::systemd::stderr_is_journal() {
        if let Ok(journal) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter())
                // Fields keep their own names (INSTANCE=, not F_INSTANCE=): none of ours is
                // one of journald's own, and `journalctl INSTANCE=web` is what people type.
                .with(
                    journal
                        .with_syslog_identifier("rhyzomesrv".into())
                        .with_field_prefix(None),
                )
                .init();
            return Destination::Journal;
        }
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .without_time()
            .with_env_filter(filter())
            .init();
        return Destination::JournalStream;
    }
    // Logs go to stderr, coloured only for a terminal: a log file gets plain text.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter())
        .init();
    Destination::Terminal
}
