//! The recent state changes, numbered, for `GET /v1/events`: each event gets an id
//! `EPOCH-SEQ` (the daemon's start time in milliseconds, and a counter), and the last
//! [`RETAINED`] events are kept in a ring so that a client that reconnects with
//! `Last-Event-ID` gets what it missed.
//!
//! Concurrency: one mutex guards the ring and is held only to push or copy one event; a
//! `watch` channel carrying the newest sequence number wakes the readers, and since it only
//! holds the latest value, a slow reader never makes a writer wait or fail. A reader that falls
//! more than [`RETAINED`] events behind is told how many it lost.

use rhyzome_api::Event;
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many events are kept for resumption.
pub const RETAINED: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an event id of this API (expected EPOCH-SEQUENCE, two decimal numbers)")]
pub struct BadEventId(pub String);

pub struct EventLog {
    epoch: u64,
    ring: Mutex<Ring>,
    newest: tokio::sync::watch::Sender<u64>,
}

struct Ring {
    /// Sequence number of the next event (the first is 1).
    next: u64,
    events: VecDeque<(u64, Event)>,
}

/// What a reader gets next.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Event {
        id: String,
        event: Event,
    },
    /// This many events were lost: the reader fell behind the ring, or resumed from an id
    /// older than what is kept.
    Lagged(u64),
    /// The id to resume from was not given out by this run of the daemon: the reader starts
    /// with the next event and should re-read the state it cares about.
    Reset,
}

/// A reader's position in the log.
pub struct Cursor {
    /// Sequence number of the next event to hand out.
    next: u64,
    reset: bool,
    newest: tokio::sync::watch::Receiver<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        EventLog {
            epoch,
            ring: Mutex::new(Ring {
                next: 1,
                events: VecDeque::with_capacity(RETAINED),
            }),
            newest: tokio::sync::watch::channel(0).0,
        }
    }
}

impl EventLog {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    pub fn publish(&self, event: Event) {
        let seq = {
            let mut ring = self.ring();
            let seq = ring.next;
            ring.next += 1;
            if ring.events.len() == RETAINED {
                ring.events.pop_front();
            }
            ring.events.push_back((seq, event));
            seq
        };
        self.newest.send_replace(seq);
    }

    /// A reader of the events after `last_event_id`, or of the next event on.
    pub fn cursor(&self, last_event_id: Option<&str>) -> Result<Cursor, BadEventId> {
        let resume = last_event_id.map(parse_id).transpose()?;
        let newest = self.newest.subscribe();
        let next = self.ring().next;
        let (next, reset) = match resume {
            None => (next, false),
            Some((epoch, seq)) if epoch == self.epoch && seq < next => (seq + 1, false),
            Some(_) => (next, true),
        };
        Ok(Cursor {
            next,
            reset,
            newest,
        })
    }

    /// The next item for `cursor`, waiting for one if need be.
    pub async fn next(&self, cursor: &mut Cursor) -> Item {
        if std::mem::take(&mut cursor.reset) {
            return Item::Reset;
        }
        loop {
            // Marks the current value seen before looking, so a publish in between wakes us.
            cursor.newest.borrow_and_update();
            {
                let ring = self.ring();
                if let Some(&(oldest, _)) = ring.events.front() {
                    if cursor.next < oldest {
                        let lost = oldest - cursor.next;
                        cursor.next = oldest;
                        return Item::Lagged(lost);
                    }
                    let index = (cursor.next - oldest) as usize;
                    if let Some((seq, event)) = ring.events.get(index) {
                        cursor.next = seq + 1;
                        return Item::Event {
                            id: self.id(*seq),
                            event: event.clone(),
                        };
                    }
                }
            }
            if cursor.newest.changed().await.is_err() {
                // The log is gone with the service; nothing more will come.
                std::future::pending::<()>().await;
            }
        }
    }
}

fn parse_id(id: &str) -> Result<(u64, u64), BadEventId> {
    let bad = || BadEventId(id.to_string());
    let (epoch, seq) = id.trim().split_once('-').ok_or_else(bad)?;
    Ok((
        epoch.parse().map_err(|_| bad())?,
        seq.parse().map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> Event {
        Event {
            time: String::new(),
            instance: format!("i{n}"),
            state: "running".into(),
            exit_code: None,
            reason: None,
            restart_count: 0,
        }
    }

    fn instance(item: Item) -> String {
        match item {
            Item::Event { event, .. } => event.instance,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn readers_resume_after_an_id_and_are_told_what_was_lost() {
        let log = EventLog::default();
        let mut live = log.cursor(None).unwrap();
        log.publish(event(1));
        log.publish(event(2));
        let Item::Event { id, .. } = log.next(&mut live).await else {
            panic!()
        };
        let mut resumed = log.cursor(Some(&id)).unwrap();
        assert_eq!(instance(log.next(&mut resumed).await), "i2");
        assert_eq!(instance(log.next(&mut live).await), "i2");

        for n in 3..(3 + RETAINED as u32 + 5) {
            log.publish(event(n));
        }
        assert_eq!(log.next(&mut live).await, Item::Lagged(5));
        assert_eq!(instance(log.next(&mut live).await), "i8");
        let mut old = log.cursor(Some(&id)).unwrap();
        assert_eq!(log.next(&mut old).await, Item::Lagged(6));

        let mut foreign = log.cursor(Some("1-1")).unwrap();
        assert_eq!(log.next(&mut foreign).await, Item::Reset);
        let future = log.id(1_000_000);
        let mut ahead = log.cursor(Some(&future)).unwrap();
        assert_eq!(log.next(&mut ahead).await, Item::Reset);
        assert!(log.cursor(Some("yesterday")).is_err());
        assert!(log.cursor(Some("1-x")).is_err());
    }
}
