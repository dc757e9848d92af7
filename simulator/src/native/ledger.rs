//! Accounting for every relayed message: delivered, refused with an error, or lost.
//!
//! The sender writes an entry before the message leaves; the receiver takes it out and records
//! the latency; a refusal naming the negotiation (`error.sid`) takes out the oldest of the
//! sender's entries of that kind; a sweep declares entries older than the lost-after bound
//! lost. Each entry leaves exactly once, so `sent = delivered + refused + lost` holds at the
//! end of a run.
//!
//! A key is (negotiation, direction, position): the tracker keeps the order of messages from
//! one viewer to another, so the receiver knows a message's position by counting, and the
//! kind stored in the entry checks it. Swarms never span worker processes, so every message's
//! sender and receiver share a ledger.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::measure::Kind;

/// Which way a message goes within a negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Offerer to answerer: the offer and the offerer's candidates.
    ToAnswerer,
    /// Answerer to offerer: the answer and the answerer's candidates.
    ToOfferer,
}

/// Names one relayed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The negotiation (its `sid`, parsed).
    pub nego: u64,
    /// The direction.
    pub dir: Dir,
    /// Position within that direction, from 0.
    pub n: u32,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Instant,
    kind: Kind,
}

/// What became of a received message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Receipt {
    /// Found: its latency, and whether the kind matched the position.
    Delivered {
        /// Send to receive.
        latency: Duration,
        /// The stored kind differs from the received one.
        misordered: bool,
    },
    /// Not in the ledger: it was declared lost earlier, or never sent from here.
    Unknown,
}

const SHARDS: usize = 64;

/// The outstanding messages of one process.
pub struct Ledger {
    shards: Vec<Mutex<HashMap<Key, Entry>>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl Ledger {
    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, Entry>> {
        // Negotiation numbers are sequential: the low bits spread them evenly.
        &self.shards[(key.nego as usize) % SHARDS]
    }

    /// Records a message about to be sent.
    pub fn sent(&self, key: Key, kind: Kind, at: Instant) {
        if let Ok(mut s) = self.shard(&key).lock() {
            s.insert(key, Entry { at, kind });
        }
    }

    /// Takes out a received message.
    pub fn received(&self, key: Key, kind: Kind, now: Instant) -> Receipt {
        let entry = self
            .shard(&key)
            .lock()
            .ok()
            .and_then(|mut s| s.remove(&key));
        match entry {
            Some(e) => Receipt::Delivered {
                latency: now.saturating_duration_since(e.at),
                misordered: e.kind != kind,
            },
            None => Receipt::Unknown,
        }
    }

    /// Takes out a refused message, if it is still outstanding; true when it was.
    pub fn refused(&self, key: Key) -> bool {
        self.shard(&key)
            .lock()
            .ok()
            .and_then(|mut s| s.remove(&key))
            .is_some()
    }

    /// True while the message is outstanding.
    pub fn contains(&self, key: &Key) -> bool {
        self.shard(key).lock().is_ok_and(|s| s.contains_key(key))
    }

    /// Declares lost, and takes out, every message sent before `before`; returns how many.
    pub fn sweep(&self, before: Instant) -> u64 {
        let mut lost = 0;
        for shard in &self.shards {
            if let Ok(mut s) = shard.lock() {
                let n = s.len();
                s.retain(|_, e| e.at >= before);
                lost += (n - s.len()) as u64;
            }
        }
        lost
    }

    /// Messages outstanding.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }

    /// True when no message is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(nego: u64, n: u32) -> Key {
        Key {
            nego,
            dir: Dir::ToAnswerer,
            n,
        }
    }

    #[test]
    fn every_entry_leaves_once() {
        let l = Ledger::default();
        let t0 = Instant::now();
        l.sent(key(1, 0), Kind::Offer, t0);
        l.sent(key(1, 1), Kind::Cands, t0);
        l.sent(key(2, 0), Kind::Offer, t0);
        l.sent(key(3, 0), Kind::Offer, t0 + Duration::from_secs(10));
        let later = t0 + Duration::from_millis(3);
        assert!(matches!(
            l.received(key(1, 0), Kind::Offer, later),
            Receipt::Delivered { misordered: false, latency } if latency == Duration::from_millis(3)
        ));
        assert!(matches!(
            l.received(key(1, 1), Kind::Offer, later),
            Receipt::Delivered {
                misordered: true,
                ..
            }
        ));
        assert_eq!(l.received(key(1, 0), Kind::Offer, later), Receipt::Unknown);
        assert!(l.refused(key(2, 0)));
        assert!(!l.refused(key(2, 0)));
        assert_eq!(l.sweep(t0 + Duration::from_secs(5)), 0);
        assert_eq!(l.len(), 1);
        assert_eq!(l.sweep(t0 + Duration::from_secs(11)), 1);
        assert!(l.is_empty());
    }
}
