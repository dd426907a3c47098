//! Console reads of an instance: the log of every run or of the current one, tails, `since`
//! (resolved through the growth history each reconciler pass samples) and following.
//!
//! Concurrency: reads run on the blocking pool without the name lock; a log that shrank
//! (rotated or truncated) is read again from its beginning.

use super::authz::{authorize, Action};
use super::{blocking, Service, ServiceError};
use crate::auth::Caller;
use crate::console;
use crate::store::InstanceRecord;
use rhyzome_api::validate::FieldError;
use rhyzome_api::InstanceState;

impl Service {
    /// Console output: every run so far, or only the current run, at most the last
    /// `tail_bytes` bytes and `tail` lines, or from the offset `after`. Also returns the log
    /// offset where the bytes end, from which [`console_after`](Self::console_after)
    /// continues.
    pub async fn console(
        &self,
        caller: &Caller,
        name: &str,
        q: &rhyzome_api::ConsoleQuery,
    ) -> Result<(Vec<u8>, u64), ServiceError> {
        authorize(caller, Action::ReadInstance(name))?;
        let r = self.get_record(name)?;
        let source = self.console_source(&r)?;
        let current_run = q.current_run.unwrap_or(false);
        let mut start = 0;
        if let Some(since) = &q.since {
            let at =
                console::parse_since(since, std::time::SystemTime::now()).ok_or_else(|| {
                    FieldError::new(
                        "since",
                        format!("{since:?} is neither an RFC 3339 time nor a duration like 10m"),
                    )
                })?;
            let offset = self
                .console_index
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&r.id)
                .map(|idx| idx.offset_at(at))
                .unwrap_or(0);
            start = start.max(offset);
        }
        if let Some(after) = q.after {
            start = after;
        }
        let limit = q
            .tail_bytes
            .unwrap_or(console::MAX_CONSOLE_READ)
            .min(console::MAX_CONSOLE_READ);
        let tail = q.tail;
        let after = q.after;
        let (offset, inode) = (r.console_offset, r.console_inode);
        blocking(move || {
            if current_run && after.is_none() {
                start = start.max(source.run_start(offset, inode));
            }
            let (bytes, from) = source
                .read_span(start, limit)
                .map_err(ServiceError::Internal)?;
            // The end of what was read, not the size seen before: the log may have grown.
            let end = from + bytes.len() as u64;
            let bytes = match tail {
                Some(n) => console::last_lines(&bytes, n).to_vec(),
                None => bytes,
            };
            Ok((bytes, end))
        })
        .await?
    }

    /// Samples the size of every running instance's console log (one `stat` each), so that
    /// `since` can be resolved later. Called by every reconciler pass.
    pub(crate) fn sample_consoles(&self, records: &[InstanceRecord]) {
        let now = std::time::SystemTime::now();
        let mut index = self.console_index.lock().unwrap_or_else(|p| p.into_inner());
        index.retain(|id, _| records.iter().any(|r| &r.id == id));
        // Remote consoles are not sampled (a libvirt call each per pass): `since` reads
        // them from their beginning.
        for r in records
            .iter()
            .filter(|r| r.state == InstanceState::Running && !self.is_remote(&r.host))
        {
            let len = console::log_len(&console::log_path(&self.config.state_dir, &r.id));
            index.entry(r.id.clone()).or_default().record(now, len);
        }
    }

    /// Console output written after `offset`, with the new end; `None` once the instance is
    /// gone (or was never `caller`'s to read).
    pub async fn console_after(
        &self,
        caller: &Caller,
        name: &str,
        offset: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, ServiceError> {
        let found =
            authorize(caller, Action::ReadInstance(name)).and_then(|()| self.get_record(name));
        let r = match found {
            Ok(r) => r,
            Err(ServiceError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let source = self.console_source(&r)?;
        blocking(move || {
            let len = source.size().map_err(ServiceError::Internal)?;
            if len == offset {
                return Ok((Vec::new(), len));
            }
            // A log that shrank was rotated or truncated: start over from its beginning.
            let from = if len < offset { 0 } else { offset };
            let (bytes, from) = source
                .read_span(from, console::MAX_CONSOLE_READ)
                .map_err(ServiceError::Internal)?;
            let end = from + bytes.len() as u64;
            Ok((bytes, end))
        })
        .await?
        .map(Some)
    }
}
