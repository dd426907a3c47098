//! Fault injection against real libvirt and the test unikernel: guests that exit or crash,
//! restart loops, a daemon killed with SIGKILL mid-batch, libvirtd restarted under the daemon,
//! consoles followed by several readers, and a simulated host reboot.
//!
//! Each test asserts exact states and counts. They run one at a time (a lock below), because
//! one of them restarts the lab's libvirtd, which every other test depends on.

#[path = "../e2e/harness.rs"]
mod harness;

mod batch;
mod consoles;
mod host;
mod networks;
mod restarts;

use std::sync::{Mutex, MutexGuard};

/// Serialises the tests of this binary.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Collects the events of one instance on a thread, for later inspection.
pub struct EventLog {
    rx: std::sync::mpsc::Receiver<rhyzome_api::Event>,
    seen: Vec<rhyzome_api::Event>,
}

impl EventLog {
    pub fn follow(d: &harness::Daemon, instance: &str) -> EventLog {
        let stream = d
            .client
            .events(Some(instance))
            .expect("subscribe to events");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for ev in stream.flatten() {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        EventLog {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for an event in `state`; returns it and the time it was received.
    pub fn wait_for(&mut self, state: &str, timeout: std::time::Duration) -> rhyzome_api::Event {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(ev) => {
                    self.seen.push(ev.clone());
                    if ev.state == state {
                        return ev;
                    }
                }
                Err(_) => panic!("no {state:?} event; saw {:?}", self.seen),
            }
        }
    }
}

/// Milliseconds between two RFC 3339 times.
pub fn ms_between(a: &str, b: &str) -> i64 {
    let a = humantime::parse_rfc3339(a).unwrap();
    let b = humantime::parse_rfc3339(b).unwrap();
    match b.duration_since(a) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}
