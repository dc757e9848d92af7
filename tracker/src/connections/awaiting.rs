//! The WebTorrent answers one connection's offers may still receive.
//!
//! When a connection's offer goes to another peer, the offerer's record gets a fingerprint of
//! (offer id, the target's server peer id); an answer is forwarded only if it takes one of those
//! records, unexpired. The record is the offerer's, so it doesn't matter how many other offers
//! the answerer received meanwhile or how long its socket held them: a client that reads slowly
//! can still answer everything it was sent within the TTL. An offerer that waits for as many
//! answers as allowed sends no further offers until some expire or are answered.
//!
//! Fingerprints are 64-bit keyed hashes (the key is random per instance and never leaves it),
//! so a record costs 12 bytes and nobody can forge a collision.

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

/// Fingerprint -> when it expires (seconds on the registry's clock).
#[derive(Default)]
pub struct Awaiting {
    records: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    /// No record expires before this; a full map is swept only once it has passed.
    earliest: u32,
}

impl Awaiting {
    /// Records `fp`, expiring at `expires`; false when `cap` records are already held and none
    /// has expired by `now` (the offer must then not be sent).
    pub fn insert(&mut self, fp: u64, now: u32, expires: u32, cap: usize) -> bool {
        if self.records.len() >= cap && !self.records.contains_key(&fp) {
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
        self.records.insert(fp, expires);
        true
    }

    /// Takes the record of `fp` if it is held and unexpired.
    pub fn take(&mut self, fp: u64, now: u32) -> bool {
        let live = self
            .records
            .remove(&fp)
            .is_some_and(|expires| expires > now);
        if self.records.is_empty() && self.records.capacity() > 16 {
            // A burst of offers shouldn't pin its table for the connection's life.
            self.records = HashMap::default();
        }
        live
    }

    /// Forgets `fp` (its offer wasn't delivered after all).
    pub fn forget(&mut self, fp: u64) {
        self.records.remove(&fp);
    }

    /// Records held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    fn sweep(&mut self, now: u32) {
        self.records.retain(|_, &mut expires| expires > now);
        self.earliest = self.records.values().copied().min().unwrap_or(0);
        if self.records.len() * 4 < self.records.capacity() {
            self.records.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_takes_one_live_record() {
        let mut a = Awaiting::default();
        assert!(a.insert(1, 0, 10, 4));
        assert!(a.insert(2, 0, 10, 4));
        assert!(a.take(1, 5));
        assert!(!a.take(1, 5), "one answer per offer");
        assert!(!a.take(2, 10), "expired");
        assert!(!a.take(3, 0), "never recorded");
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn full_refuses_until_something_expires() {
        let mut a = Awaiting::default();
        for fp in 0..3 {
            assert!(a.insert(fp, 0, 10 + fp as u32, 3));
        }
        assert!(!a.insert(9, 5, 20, 3), "full and nothing expired");
        assert!(a.insert(1, 5, 20, 3), "a record already held is renewed");
        assert!(a.insert(9, 10, 25, 3), "the first one expired at 10");
        assert_eq!(a.len(), 3);
        a.forget(9);
        assert_eq!(a.len(), 2);
        assert!(a.take(2, 11));
    }
}
