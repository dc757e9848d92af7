//! The WebTorrent answers one connection's offers may still receive.
//!
//! When a connection's offer goes to another peer, the offerer's record for that peer counts
//! one more answer due; an answer from that peer is forwarded only if one is due, and takes it.
//! So a peer can never make an offerer receive more answers than it was sent offers, and nobody
//! it offered nothing to can answer at all. The record is the offerer's and counts per peer, not
//! per offer: it doesn't matter how many offers the answerer received meanwhile or how long its
//! socket held them, and its size is bounded by how many distinct peers the connection offered
//! to within the TTL, not by how many offers it sent. (Which offer an answer names is the
//! offerer's client to check: it ignores answers to offers it doesn't have.)
//!
//! Peers are keyed by a 64-bit keyed hash of their server peer id (the key is random per
//! instance and never leaves it), so a record costs 16 bytes and nobody can forge a collision.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

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

/// Answers due from one peer.
#[derive(Debug, Clone, Copy)]
struct Due {
    answers: u32,
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
    /// Counts an answer due from peer `fp`, until `expires`; false when answers are already
    /// due from `cap` other peers and none has expired by `now` (the offer must not be sent).
    pub fn insert(&mut self, fp: u64, now: u32, expires: u32, cap: usize) -> bool {
        if let Some(due) = self.records.get_mut(&fp) {
            due.answers = due.answers.saturating_add(1);
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
        self.records.insert(
            fp,
            Due {
                answers: 1,
                expires,
            },
        );
        true
    }

    /// Takes an answer due from peer `fp`, if one is and it hasn't expired.
    pub fn take(&mut self, fp: u64, now: u32) -> bool {
        let Some(due) = self.records.get_mut(&fp) else {
            return false;
        };
        let live = due.expires > now;
        due.answers -= 1;
        if due.answers == 0 || !live {
            self.records.remove(&fp);
            if self.records.is_empty() && self.records.capacity() > 16 {
                // A burst of offers shouldn't pin its table for the connection's life.
                self.records = HashMap::default();
            }
        }
        live
    }

    /// Forgets one answer due from peer `fp` (its offer wasn't delivered after all).
    pub fn forget(&mut self, fp: u64) {
        if let Some(due) = self.records.get_mut(&fp) {
            due.answers -= 1;
            if due.answers == 0 {
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
    fn a_peer_answers_at_most_as_often_as_it_was_offered_to() {
        let mut a = Awaiting::default();
        assert!(a.insert(1, 0, 10, 4));
        assert!(a.insert(1, 0, 10, 4));
        assert!(a.insert(2, 0, 10, 4));
        assert!(a.take(1, 5));
        assert!(a.take(1, 5));
        assert!(!a.take(1, 5), "two offers, two answers");
        assert!(!a.take(2, 10), "expired");
        assert!(!a.take(3, 0), "never offered to");
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn full_refuses_new_peers_until_something_expires() {
        let mut a = Awaiting::default();
        for fp in 0..3 {
            assert!(a.insert(fp, 0, 10 + fp as u32, 3));
        }
        assert!(!a.insert(9, 5, 20, 3), "full and nothing expired");
        assert!(a.insert(1, 5, 20, 3), "a peer already awaited takes more");
        assert!(a.insert(9, 10, 25, 3), "the first one expired at 10");
        assert_eq!(a.len(), 3);
        a.forget(9);
        assert_eq!(a.len(), 2);
        assert!(a.take(1, 11));
        assert!(a.take(1, 11));
        assert!(!a.take(1, 11));
    }
}
