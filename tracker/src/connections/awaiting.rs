//! The WebTorrent answers one connection's offers may still receive.
//!
//! When a connection's offer goes to another peer, the offerer's record for that peer notes one
//! more answer due; an answer from that peer is forwarded only if one is due, and takes it. So a
//! peer can never make an offerer receive more answers than it was sent offers, and nobody it
//! offered nothing to can answer at all. The record is the offerer's and is kept per peer: it
//! doesn't matter how many offers the answerer received meanwhile or how long its socket held
//! them, and its size is bounded by how many distinct peers the connection offered to within
//! the TTL, not by how many offers it sent.
//!
//! Each peer's record names the last few offers it was sent ([`Tally`]): an answer must name one of
//! them, so a peer offered to once or twice (what real clients do) can only answer those offers.
//! Offers beyond those are counted, not named: an answer that names none of the named ones takes
//! one of them. (Which offer such an answer names is the offerer's client to check: it ignores
//! answers to offers it doesn't have.)
//!
//! Peers and offers are keyed by keyed hashes (the key is random per instance and never leaves
//! it), so a record costs 40 bytes and nobody can forge a collision.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::tally::Tally;

/// A fingerprint is already a uniform hash: the map's hasher passes it through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in, in case.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Answers due from one peer, until when.
#[derive(Debug, Clone, Copy)]
struct Due {
    tally: Tally,
    /// When the last offer to that peer expires (seconds on the registry's clock).
    expires: u32,
}

/// Peer fingerprint -> answers due from it.
#[derive(Default)]
pub struct Awaiting {
    records: HashMap<u64, Due, BuildHasherDefault<PassThrough>>,
    /// No record expires before this; a full map is swept only once it has passed.
    earliest: u32,
}

impl Awaiting {
    /// Notes an answer due from peer `fp` to offer `offer`, until `expires`; false when answers
    /// are already due from `cap` other peers and none has expired by `now` (the offer must not
    /// be sent).
    pub fn insert(&mut self, fp: u64, offer: u32, now: u32, expires: u32, cap: usize) -> bool {
        if let Some(due) = self.records.get_mut(&fp) {
            due.tally.add(offer);
            due.expires = expires;
            return true;
        }
        if self.records.len() >= cap {
            if now < self.earliest {
                return false;
            }
            self.sweep(now);
            if self.records.len() >= cap {
                return false;
            }
        }
        if self.records.is_empty() || expires < self.earliest {
            self.earliest = expires;
        }
        let mut tally = Tally::default();
        tally.add(offer);
        self.records.insert(fp, Due { tally, expires });
        true
    }

    /// Takes the answer due from peer `fp` to offer `offer` (or an unnamed one), if one is due
    /// and hasn't expired.
    pub fn take(&mut self, fp: u64, offer: u32, now: u32) -> bool {
        let Some(due) = self.records.get_mut(&fp) else {
            return false;
        };
        let live = due.expires > now && due.tally.take(offer);
        if due.tally.is_empty() || due.expires <= now {
            self.records.remove(&fp);
            if self.records.is_empty() && self.records.capacity() > 16 {
                // A burst of offers shouldn't pin its table for the connection's life.
                self.records = HashMap::default();
            }
        }
        live
    }

    /// Forgets the answer due from peer `fp` to offer `offer` (it wasn't delivered after all).
    pub fn forget(&mut self, fp: u64, offer: u32) {
        if let Some(due) = self.records.get_mut(&fp) {
            due.tally.take(offer);
            if due.tally.is_empty() {
                self.records.remove(&fp);
            }
        }
    }

    /// Peers answers are due from.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    fn sweep(&mut self, now: u32) {
        self.records.retain(|_, due| due.expires > now);
        self.earliest = self.records.values().map(|d| d.expires).min().unwrap_or(0);
        if self.records.len() * 4 < self.records.capacity() {
            self.records.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_answers_the_offers_it_was_sent_once_each() {
        let mut a = Awaiting::default();
        assert!(a.insert(1, 10, 0, 10, 4));
        assert!(a.insert(1, 11, 0, 10, 4));
        assert!(a.insert(2, 20, 0, 10, 4));
        assert!(!a.take(1, 99, 5), "an offer it wasn't sent");
        assert!(a.take(1, 11, 5));
        assert!(!a.take(1, 11, 5), "once");
        assert!(a.take(1, 10, 5));
        assert!(!a.take(2, 20, 10), "expired");
        assert!(!a.take(3, 10, 0), "never offered to");
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn offers_beyond_the_named_ones_are_counted() {
        let mut a = Awaiting::default();
        for offer in 0..10 {
            assert!(a.insert(1, offer, 0, 10, 4));
        }
        // Six unnamed: six answers naming anything, then only the four named ones.
        for _ in 0..6 {
            assert!(a.take(1, 99, 1));
        }
        assert!(!a.take(1, 99, 1));
        for offer in 0..4 {
            assert!(a.take(1, offer, 1));
        }
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn full_refuses_new_peers_until_something_expires() {
        let mut a = Awaiting::default();
        for fp in 0..3 {
            assert!(a.insert(fp, 7, 0, 10 + fp as u32, 3));
        }
        assert!(!a.insert(9, 7, 5, 20, 3), "full and nothing expired");
        assert!(
            a.insert(1, 8, 5, 20, 3),
            "a peer already awaited takes more"
        );
        assert!(a.insert(9, 7, 10, 25, 3), "the first one expired at 10");
        assert_eq!(a.len(), 3);
        a.forget(9, 7);
        assert_eq!(a.len(), 2);
        assert!(a.take(1, 8, 11));
        assert!(a.take(1, 7, 11));
        assert!(!a.take(1, 7, 11));
    }
}
