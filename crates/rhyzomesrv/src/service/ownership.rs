//! Which domains are this daemon's, and who destroyed a guest that vanished.
//!
//! Several daemons may share one libvirt (staging and production, two operators, a test suite
//! beside a real daemon), and they may share a `Hostname`. So a daemon treats as its own only
//! the domains whose UUID is one of its instances, or that carry its identity
//! ([`crate::store::Store::daemon_id`]) in their mark; it destroys a domain no instance claims
//! only in the second case. Another daemon's domains, and those an older release marked
//! without an identity, are left alone and reported.
//!
//! A running guest's domain can also disappear because someone destroyed it (`virsh
//! destroy`). libvirt reports every destroy the same way (`stopped`, detail `destroyed`),
//! this daemon's own included; [`Destroys`] tells them apart by noting the daemon's own
//! destroys before it makes them. Its two sets are shared by the event sink (libvirt's event
//! thread) and the service, behind one mutex held for a set operation only.

use crate::backend::DomainMark;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// What a guest that someone else destroyed is recorded with.
pub const DESTROYED_OUTSIDE: &str = "domain destroyed outside rhyzome";

/// The daemon's own destroys in flight, and the domains destroyed by someone else.
#[derive(Default)]
pub(super) struct Destroys {
    inner: Mutex<DestroySets>,
}

#[derive(Default)]
struct DestroySets {
    /// Domains this daemon is destroying whose `destroyed` event has not arrived yet.
    own: HashSet<String>,
    /// Domains whose `destroyed` event was not one of this daemon's.
    outside: HashSet<String>,
}

impl Destroys {
    fn sets(&self) -> std::sync::MutexGuard<'_, DestroySets> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called before this daemon destroys `uuid`, so that the event it causes is known.
    pub fn expect(&self, uuid: &str) {
        self.sets().own.insert(uuid.to_string());
    }

    /// The destroy announced by [`expect`](Self::expect) destroyed nothing (there was no
    /// domain, or it failed): no event will come.
    pub fn cancel(&self, uuid: &str) {
        self.sets().own.remove(uuid);
    }

    /// libvirt reported that `uuid` was destroyed.
    pub fn destroyed(&self, uuid: &str) {
        let mut sets = self.sets();
        if !sets.own.remove(uuid) {
            sets.outside.insert(uuid.to_string());
        }
    }

    /// Whether `uuid`'s last run was ended by someone else's destroy; answers once.
    pub fn take_outside(&self, uuid: &str) -> bool {
        self.sets().outside.remove(uuid)
    }

    /// Forgets domains that are no instance's (destroyed orphans, other daemons' guests).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.sets().outside.retain(|u| keep(u));
    }
}

/// Whose an unclaimed domain (no instance of this daemon has its UUID) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claim {
    /// Marked with this daemon's identity: an orphan of an interrupted create or delete.
    Mine,
    /// Marked by another daemon.
    Foreign(DomainMark),
    /// Marked by a release before identities: perhaps an old daemon's, perhaps this one's
    /// from before its upgrade; never destroyed on a guess.
    Legacy(DomainMark),
    /// No rhyzome mark: another tool's, with a rhyzome-like name.
    Unmarked,
}

pub(super) fn claim(mark: Option<DomainMark>, daemon_id: &str) -> Claim {
    match mark {
        None => Claim::Unmarked,
        Some(m) => match m.daemon.as_deref() {
            Some(d) if d == daemon_id => Claim::Mine,
            Some(_) => Claim::Foreign(m),
            None => Claim::Legacy(m),
        },
    }
}

/// The unclaimed domains a pass saw for the first time and left alone, by owner.
#[derive(Debug, Default)]
pub(super) struct LeftAlone {
    pub by_owner: BTreeMap<String, Vec<String>>,
}

impl LeftAlone {
    pub fn add(&mut self, owner: String, domain: &str) {
        self.by_owner
            .entry(owner)
            .or_default()
            .push(domain.to_string());
    }

    /// One line per owner: how many of its domains were seen, and which.
    pub fn log(&self) {
        for (owner, domains) in &self.by_owner {
            tracing::info!(
                owner = %owner,
                count = domains.len(),
                ?domains,
                "left alone domains that are not this daemon's"
            );
        }
    }
}

/// Who holds a domain name, in words, for a 409.
pub(super) fn describe_holder(mark: Option<&DomainMark>) -> String {
    match mark {
        Some(m) => m.to_string(),
        None => "another tool (the domain carries no rhyzome mark)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_daemon_s_own_destroys_are_not_outside() {
        let d = Destroys::default();
        d.expect("a");
        d.destroyed("a");
        assert!(!d.take_outside("a"), "the daemon's own destroy");
        d.destroyed("a");
        assert!(d.take_outside("a"), "someone else's");
        assert!(!d.take_outside("a"), "answered once");
        // A destroy that found no domain causes no event; a later outside one still counts.
        d.expect("b");
        d.cancel("b");
        d.destroyed("b");
        assert!(d.take_outside("b"));
    }

    #[test]
    fn claims_follow_the_identity_never_the_host() {
        let mark = |daemon: Option<&str>| DomainMark {
            daemon: daemon.map(str::to_string),
            host: "localhost".into(),
        };
        assert_eq!(claim(Some(mark(Some("me"))), "me"), Claim::Mine);
        assert_eq!(
            claim(Some(mark(Some("you"))), "me"),
            Claim::Foreign(mark(Some("you")))
        );
        assert_eq!(claim(Some(mark(None)), "me"), Claim::Legacy(mark(None)));
        assert_eq!(claim(None, "me"), Claim::Unmarked);
    }
}
