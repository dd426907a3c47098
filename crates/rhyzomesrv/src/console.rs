//! Console logs: where they live, reading them, and what a unikernel's last words mean.
//!
//! QEMU (through virtlogd) appends each instance's serial output to
//! `StateDir/consoles/<id>.log`. A Solo5 unikernel that exits powers off through ACPI, which
//! loses its exit status, but it prints `Solo5: solo5_exit(N) called` first, and a crash prints
//! `Solo5: ABORT: ...` or `Solo5: solo5_abort() called`; [`parse_outcome`] recovers that.
//! Reading blocks on file I/O; async callers use `spawn_blocking`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Default and largest amount of console returned by one request.
pub const MAX_CONSOLE_READ: u64 = 1 << 20;

pub fn log_path(state_dir: &Path, instance_id: &str) -> PathBuf {
    state_dir
        .join("consoles")
        .join(format!("{instance_id}.log"))
}

/// Creates the console log (and its directory) before a domain starts, unless it exists.
///
/// The daemon creates it rather than leaving it to virtlogd because virtlogd keeps the owner
/// and mode of a file it appends to, but creates new files root-only (0600): a daemon that
/// runs unprivileged could not read its own consoles otherwise. virtlogd still creates the
/// file anew when it rotates it; such a file, unreadable here, is moved aside to
/// `<id>.log.root` (deleted with the instance) so that the next run is readable again.
pub fn prepare_log(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::File::open(path) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".root");
            tracing::warn!(path = %path.display(), "console log unreadable (rotated by virtlogd as root); moved aside");
            std::fs::rename(path, aside)?;
        }
        Err(e) => return Err(e),
    }
    crate::files::owner_only(path, true)
}

/// Why a console log could not be read, for people: a permission problem is almost always
/// the unprivileged daemon meeting a log that virtlogd re-created as root after a rotation.
pub fn read_error(path: &Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        // SAFETY: geteuid cannot fail and touches no memory.
        let uid = unsafe { libc::geteuid() };
        format!(
            "cannot read console log {}: permission denied to the daemon's user (uid {uid}); \
             virtlogd re-creates a log as root-only when it rotates it; the instance's \
             next start makes it readable again (see docs/security.md, \"Running \
             unprivileged\")",
            path.display()
        )
    } else {
        format!("cannot read console log {}: {e}", path.display())
    }
}

/// The console log of an instance and the copies virtlogd rotated out of it
/// (`<id>.log.0`, `.1`, ...).
pub fn log_files(state_dir: &Path, instance_id: &str) -> Vec<PathBuf> {
    let main = log_path(state_dir, instance_id);
    let prefix = format!("{instance_id}.log.");
    let mut files = vec![main];
    if let Ok(entries) = std::fs::read_dir(state_dir.join("consoles")) {
        files.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path()),
        );
    }
    files
}

/// Current size of a console log (0 when it does not exist yet).
pub fn log_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A console log's size and identity, recorded when a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    pub len: u64,
    pub inode: Option<u64>,
}

pub fn log_position(path: &Path) -> LogPosition {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => LogPosition {
            len: m.len(),
            inode: Some(m.ino()),
        },
        Err(_) => LogPosition {
            len: 0,
            inode: None,
        },
    }
}

/// Where the current run's output starts in the log at `path`, given the log's size and
/// inode when the run started.
///
/// When virtlogd rotates a log during a run, the file at `path` is a new one (another inode)
/// and `offset` is a position in its predecessor: the run then began before this file, so
/// all of it belongs to the run. Runs recorded before inodes were (`None`) keep the offset.
pub fn run_start(path: &Path, offset: u64, inode: Option<u64>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), inode) {
        (Ok(m), Some(at_start)) if m.ino() != at_start => 0,
        _ => offset,
    }
}

/// The bytes of `path` from `start` on, at most the last `limit` of them.
pub fn read_from(path: &Path, start: u64, limit: u64) -> std::io::Result<Vec<u8>> {
    read_span(path, start, limit).map(|(bytes, _)| bytes)
}

/// [`read_from`], and the offset in the log of the first byte returned.
pub fn read_span(path: &Path, start: u64, limit: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let from = span_start(len, start, limit);
    f.seek(SeekFrom::Start(from))?;
    let mut out = Vec::with_capacity((len - from) as usize);
    f.take(len - from).read_to_end(&mut out)?;
    Ok((out, from))
}

/// Where a read of at most the last `limit` bytes from `start` begins in a log of `len` bytes;
/// a log shorter than `start` was truncated or rotated, and is read from its beginning.
pub fn span_start(len: u64, start: u64, limit: u64) -> u64 {
    let start = if start > len { 0 } else { start };
    start.max(len.saturating_sub(limit))
}

/// The last `n` lines of `bytes` (a final line without newline counts).
pub fn last_lines(bytes: &[u8], n: u64) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &bytes[i + 1..];
            }
        }
    }
    bytes
}

/// When each console log grew, so that `--since` can find where output after a given time
/// starts. Console lines carry no timestamps (QEMU writes raw serial output), so the daemon
/// samples log sizes (every reconciler pass) and keeps a bounded history per log. Not
/// persisted: after a daemon restart the history is empty, and `since` then returns the
/// whole log (more than asked, never less).
#[derive(Debug, Default)]
pub struct SizeIndex {
    samples: std::collections::VecDeque<(std::time::SystemTime, u64)>,
}

/// Samples kept per log: at one per growth per pass, hours of history for a chatty guest.
const MAX_SAMPLES: usize = 4096;

impl SizeIndex {
    /// Records that the log was `len` bytes at `at`; a size seen before adds nothing.
    pub fn record(&mut self, at: std::time::SystemTime, len: u64) {
        if self.samples.back().is_some_and(|(_, l)| *l == len) {
            return;
        }
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((at, len));
    }

    /// The offset from which output may have been written at or after `since`: the size at
    /// the last sample not later than `since` (earlier output may slip in, up to one sampling
    /// interval's worth; none written after `since` is left out).
    pub fn offset_at(&self, since: std::time::SystemTime) -> u64 {
        self.samples
            .iter()
            .take_while(|(t, _)| *t <= since)
            .last()
            .map(|(_, len)| *len)
            .unwrap_or(0)
    }
}

/// Parses `since`: an RFC 3339 time, or a duration back from `now` (`10m`, `90s`).
pub fn parse_since(since: &str, now: std::time::SystemTime) -> Option<std::time::SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(since) {
        return Some(t);
    }
    humantime::parse_duration(since)
        .ok()
        .and_then(|d| now.checked_sub(d))
}

/// How a unikernel's run ended, judged from its console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `Solo5: solo5_exit(N) called`.
    Exited(i32),
    /// `Solo5: ABORT: ...` or `Solo5: solo5_abort() called`.
    Aborted,
    /// Nothing conclusive: it stopped without saying why.
    Unknown,
}

/// The last exit or abort line in `console` decides.
pub fn parse_outcome(console: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(console);
    for line in text.lines().rev() {
        let line = line.trim_end_matches('\r');
        let Some(pos) = line.find("Solo5: ") else {
            continue;
        };
        let rest = &line[pos + "Solo5: ".len()..];
        if let Some(code) = rest
            .strip_prefix("solo5_exit(")
            .and_then(|r| r.strip_suffix(") called"))
        {
            if let Ok(code) = code.trim().parse::<i32>() {
                return Outcome::Exited(code);
            }
        }
        if rest.starts_with("ABORT") || rest.starts_with("solo5_abort() called") {
            return Outcome::Aborted;
        }
    }
    Outcome::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_rotated_during_the_run_belongs_to_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, b"0123456789").unwrap();
        let at_start = log_position(&log);
        assert_eq!(at_start.len, 10);
        assert_eq!(run_start(&log, at_start.len, at_start.inode), 10);
        // What virtlogd does when it rotates: rename, then a new file at the same path.
        std::fs::rename(&log, dir.path().join("x.log.0")).unwrap();
        std::fs::write(&log, b"0123456789abcdef").unwrap();
        assert_eq!(run_start(&log, at_start.len, at_start.inode), 0);
        // A record from before inodes were kept.
        assert_eq!(run_start(&log, 4, None), 4);
        let missing = log_position(&dir.path().join("missing.log"));
        assert_eq!((missing.len, missing.inode), (0, None));
    }

    #[test]
    fn exit_codes_and_aborts_are_recognised() {
        assert_eq!(
            parse_outcome(b"hello\nSolo5: solo5_exit(3) called\n"),
            Outcome::Exited(3)
        );
        assert_eq!(
            parse_outcome(b"Solo5: solo5_exit(0) called\r\n"),
            Outcome::Exited(0)
        );
        assert_eq!(
            parse_outcome(b"Solo5: ABORT: bindings/cpu_x86_64.c:171: Fatal trap\n"),
            Outcome::Aborted
        );
        assert_eq!(
            parse_outcome(b"Solo5: solo5_abort() called\n"),
            Outcome::Aborted
        );
        assert_eq!(parse_outcome(b"just output\n"), Outcome::Unknown);
        assert_eq!(
            parse_outcome(b"Solo5: solo5_exit(x) called\n"),
            Outcome::Unknown
        );
        // The last word counts.
        assert_eq!(
            parse_outcome(b"Solo5: ABORT: x\nSolo5: solo5_exit(7) called\n"),
            Outcome::Exited(7)
        );
    }

    #[test]
    fn the_size_index_finds_where_output_since_a_time_starts() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let mut idx = SizeIndex::default();
        idx.record(t(10), 100);
        idx.record(t(12), 100);
        idx.record(t(14), 250);
        idx.record(t(16), 400);
        assert_eq!(idx.offset_at(t(5)), 0);
        assert_eq!(
            idx.offset_at(t(13)),
            100,
            "output after 13 s starts at or after 100"
        );
        assert_eq!(idx.offset_at(t(14)), 250);
        assert_eq!(idx.offset_at(t(99)), 400);
        assert_eq!(
            idx.samples.len(),
            3,
            "an unchanged size is not recorded twice"
        );
        let now = t(1000);
        assert_eq!(parse_since("10m", now), Some(t(400)));
        assert_eq!(parse_since("1970-01-01T00:00:20Z", now), Some(t(20)));
        assert_eq!(parse_since("yesterday-ish", now), None);
    }

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
    }

    #[test]
    fn rotated_logs_belong_to_their_instance() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("consoles")).unwrap();
        for f in ["a.log", "a.log.0", "a.log.1", "ab.log", "ab.log.0"] {
            std::fs::write(dir.path().join("consoles").join(f), b"x").unwrap();
        }
        let mut names: Vec<String> = log_files(dir.path(), "a")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["a.log", "a.log.0", "a.log.1"]);
    }

    #[test]
    fn reads_respect_start_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_from(&p, 0, 100).unwrap(), b"0123456789");
        assert_eq!(read_from(&p, 4, 100).unwrap(), b"456789");
        assert_eq!(read_from(&p, 0, 3).unwrap(), b"789");
        assert_eq!(read_from(&p, 50, 100).unwrap(), b"0123456789");
        assert_eq!(read_span(&p, 4, 3).unwrap(), (b"789".to_vec(), 7));
        assert_eq!(
            read_span(&p, 50, 100).unwrap().1,
            0,
            "rotated: from the start"
        );
        assert!(read_from(&dir.path().join("none"), 0, 10)
            .unwrap()
            .is_empty());
        assert_eq!(log_len(&p), 10);
    }
}
