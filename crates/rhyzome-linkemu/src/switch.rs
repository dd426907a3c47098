//! The learning L2 switch of one emulated network: which ports a frame goes to. It learns
//! each source MAC's port from the frames ports send, forwards unicast to the learned port and
//! floods broadcast, multicast and unknown destinations; a partition blocks delivery between
//! two sets of ports, both ways. Ports are small indices given by the event loop (port 0 is
//! the host's tap when there is one). Single-threaded, like the loop that owns it.

use std::collections::{HashMap, HashSet};

pub type PortId = usize;
pub type Mac = [u8; 6];

/// How long a learned address is trusted without a frame from it (as Linux bridges do).
pub const AGEING_NS: u64 = 300 * 1_000_000_000;
/// The most addresses learned: beyond it new ones are flooded to, not learned, so a guest
/// sending from random MACs cannot grow the table without bound.
pub const MAX_ADDRESSES: usize = 4096;

#[derive(Default)]
pub struct Switch {
    addresses: HashMap<Mac, (PortId, u64)>,
    /// Ordered pairs (from, to) between which nothing passes.
    blocked: HashSet<(PortId, PortId)>,
}

/// The destination MAC of an Ethernet frame, if it is long enough to have one.
pub fn destination(frame: &[u8]) -> Option<Mac> {
    frame.get(0..6).map(|m| m.try_into().expect("6 bytes"))
}

pub fn source(frame: &[u8]) -> Option<Mac> {
    frame.get(6..12).map(|m| m.try_into().expect("6 bytes"))
}

impl Switch {
    /// Notes that `mac` was seen on `port` at `now`.
    pub fn learn(&mut self, mac: Mac, port: PortId, now: u64) {
        if mac[0] & 1 == 1 {
            return; // a group address is never a source
        }
        if self.addresses.len() >= MAX_ADDRESSES && !self.addresses.contains_key(&mac) {
            self.addresses
                .retain(|_, (_, seen)| now.saturating_sub(*seen) < AGEING_NS);
            if self.addresses.len() >= MAX_ADDRESSES {
                return;
            }
        }
        self.addresses.insert(mac, (port, now));
    }

    /// Replaces the partitions: each is two sets of ports that may not reach each other.
    pub fn set_partitions(&mut self, partitions: &[(Vec<PortId>, Vec<PortId>)]) {
        self.blocked.clear();
        for (a, b) in partitions {
            for &x in a {
                for &y in b {
                    if x != y {
                        self.blocked.insert((x, y));
                        self.blocked.insert((y, x));
                    }
                }
            }
        }
    }

    pub fn is_blocked(&self, from: PortId, to: PortId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Forgets everything learned about `port` (it was removed or renumbered).
    pub fn forget_port(&mut self, port: PortId) {
        self.addresses.retain(|_, (p, _)| *p != port);
    }

    pub fn forget_all(&mut self) {
        self.addresses.clear();
    }

    /// The ports (out of `ports`, the count) a frame from `from` to `dst` goes to, in `out`.
    /// Returns how many were left out by partitions.
    pub fn destinations(
        &self,
        from: PortId,
        dst: Mac,
        ports: usize,
        now: u64,
        out: &mut Vec<PortId>,
    ) -> usize {
        out.clear();
        let known = (dst[0] & 1 == 0)
            .then(|| self.addresses.get(&dst))
            .flatten()
            .filter(|(_, seen)| now.saturating_sub(*seen) < AGEING_NS);
        if let Some(&(port, _)) = known {
            if port == from {
                return 0;
            }
            if self.is_blocked(from, port) {
                return 1;
            }
            out.push(port);
            return 0;
        }
        let mut blocked = 0;
        for port in (0..ports).filter(|p| *p != from) {
            if self.is_blocked(from, port) {
                blocked += 1;
            } else {
                out.push(port);
            }
        }
        blocked
    }

    pub fn addresses(&self) -> usize {
        self.addresses.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROADCAST: Mac = [0xff; 6];
    fn mac(n: u8) -> Mac {
        [2, 0, 0, 0, 0, n]
    }

    #[test]
    fn floods_until_it_learns_then_forwards_to_one_port() {
        let mut s = Switch::default();
        let mut out = Vec::new();
        s.destinations(0, mac(2), 4, 0, &mut out);
        assert_eq!(out, [1, 2, 3]);
        s.learn(mac(2), 2, 0);
        s.destinations(0, mac(2), 4, 1, &mut out);
        assert_eq!(out, [2]);
        s.destinations(0, BROADCAST, 4, 1, &mut out);
        assert_eq!(out, [1, 2, 3]);
        // A frame to an address on its own port goes nowhere.
        s.destinations(2, mac(2), 4, 1, &mut out);
        assert!(out.is_empty());
        // Aged out: flooded again.
        s.destinations(0, mac(2), 4, AGEING_NS + 1, &mut out);
        assert_eq!(out, [1, 2, 3]);
        s.forget_port(2);
        assert_eq!(s.addresses(), 0);
    }

    #[test]
    fn a_partition_cuts_both_ways_and_not_within_a_side() {
        let mut s = Switch::default();
        s.set_partitions(&[(vec![1, 2], vec![3, 4])]);
        let mut out = Vec::new();
        assert_eq!(s.destinations(1, BROADCAST, 5, 0, &mut out), 2);
        assert_eq!(out, [0, 2]);
        assert_eq!(s.destinations(4, BROADCAST, 5, 0, &mut out), 2);
        assert_eq!(out, [0, 3]);
        s.learn(mac(3), 3, 0);
        assert_eq!(s.destinations(1, mac(3), 5, 0, &mut out), 1);
        assert!(out.is_empty());
        s.set_partitions(&[]);
        s.destinations(1, mac(3), 5, 0, &mut out);
        assert_eq!(out, [3]);
    }

    #[test]
    fn the_address_table_is_bounded() {
        let mut s = Switch::default();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            let b = i.to_be_bytes();
            s.learn([2, 0, b[0], b[1], b[2], b[3]], 1, 0);
        }
        assert_eq!(s.addresses(), MAX_ADDRESSES);
        s.learn(BROADCAST, 1, 0);
        assert_eq!(s.addresses(), MAX_ADDRESSES);
    }
}
