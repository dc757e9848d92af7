//! Accounting for every offer and answer: received (with its latency), undeliverable (the swarm
//! had fewer other peers than offers), or lost.
//!
//! An announce's offers make one entry, keyed by its [`OfferId::announce`]: when it was sent,
//! how many offers, which arrived and at which connection. The announce response says how many
//! other peers the swarm had, so how many offers the tracker could deliver; what it could not
//! is undeliverable, not lost. An answer makes one entry keyed by its offer's id. A sweep
//! settles entries older than the lost-after bound. So at the end of a run, for each kind,
//! `sent = received + undeliverable + lost + untracked`.
//!
//! The ledger is bounded ([`Ledger::new`]'s `capacity`, in entries): past it, new messages are
//! sent but not tracked, and counted as such. Sharded like the native ledger; each lock is held
//! for one map operation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::wire::{MAX_OFFERS, OfferId};

/// One announce's offers.
#[derive(Debug, Clone)]
struct Offers {
    at: Instant,
    sent: u8,
    /// Offers the tracker could deliver, once the announce response told the swarm's size.
    deliverable: Option<u8>,
    /// Bit `i`: offer `i` arrived.
    received: u16,
    /// The connections they arrived at, to notice two offers of one announce at one peer.
    receivers: [u32; MAX_OFFERS],
}

/// What became of a received offer or answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// Found: send to receipt.
    Delivered(Duration),
    /// Found, but a second offer of the same announce at the same connection (the tracker
    /// should pick distinct peers); the latency still counts.
    DuplicateTarget(Duration),
    /// Received twice (the tracker relayed it twice).
    Duplicate,
    /// Not outstanding: settled as lost earlier (late), or never tracked.
    Unknown,
}

/// How a sweep settled the entries it took out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Offers never received although the swarm had a peer for them.
    pub offers_lost: u64,
    /// Offers the swarm had no peer for.
    pub offers_undeliverable: u64,
    /// Answers never received.
    pub answers_lost: u64,
}

const SHARDS: usize = 32;

/// The outstanding offers and answers of a run.
pub struct Ledger {
    offers: Vec<Mutex<HashMap<u64, Offers>>>,
    answers: Vec<Mutex<HashMap<OfferId, Instant>>>,
    len: AtomicUsize,
    capacity: usize,
}

fn shard<T>(shards: &[Mutex<T>], key: u64) -> &Mutex<T> {
    // Connection numbers are sequential and sit in the high half: mix both halves.
    &shards[((key ^ (key >> 32)) as usize) % SHARDS]
}

impl Ledger {
    /// A ledger of at most `capacity` entries (announces with offers, plus answers).
    pub fn new(capacity: usize) -> Self {
        Self {
            offers: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            answers: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            len: AtomicUsize::new(0),
            capacity,
        }
    }

    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Relaxed, Relaxed, |n| (n < self.capacity).then_some(n + 1))
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.len.fetch_sub(n, Relaxed);
    }

    /// Records `sent` offers of `announce` about to leave; false when the ledger is full (they
    /// go untracked).
    pub fn offers_sent(&self, announce: u64, sent: u8, at: Instant) -> bool {
        if !self.reserve() {
            return false;
        }
        let entry = Offers {
            at,
            sent: sent.min(MAX_OFFERS as u8),
            deliverable: None,
            received: 0,
            receivers: [u32::MAX; MAX_OFFERS],
        };
        match shard(&self.offers, announce).lock() {
            Ok(mut s) => {
                if s.insert(announce, entry).is_some() {
                    self.release(1);
                }
                true
            }
            Err(_) => {
                self.release(1);
                false
            }
        }
    }

    /// The announce response said the swarm has `swarm` peers, the announcer included.
    pub fn swarm_size(&self, announce: u64, swarm: u64) {
        if let Ok(mut s) = shard(&self.offers, announce).lock()
            && let Some(e) = s.get_mut(&announce)
        {
            let others = u8::try_from(swarm.saturating_sub(1)).unwrap_or(u8::MAX);
            e.deliverable = Some(e.sent.min(others));
        }
    }

    /// Offer `id` arrived at connection `at_conn`.
    pub fn offer_received(&self, id: OfferId, at_conn: u32, now: Instant) -> Receipt {
        let i = usize::from(id.idx);
        let Ok(mut s) = shard(&self.offers, id.announce()).lock() else {
            return Receipt::Unknown;
        };
        let Some(e) = s.get_mut(&id.announce()) else {
            return Receipt::Unknown;
        };
        if i >= usize::from(e.sent) {
            return Receipt::Unknown;
        }
        if e.received & (1 << i) != 0 {
            return Receipt::Duplicate;
        }
        e.received |= 1 << i;
        let latency = now.saturating_duration_since(e.at);
        let again = e.receivers.contains(&at_conn);
        e.receivers[i] = at_conn;
        if again {
            Receipt::DuplicateTarget(latency)
        } else {
            Receipt::Delivered(latency)
        }
    }

    /// Records an answer to offer `id` about to leave; false when the ledger is full.
    pub fn answer_sent(&self, id: OfferId, at: Instant) -> bool {
        if !self.reserve() {
            return false;
        }
        match shard(&self.answers, id.announce()).lock() {
            Ok(mut s) => {
                if s.insert(id, at).is_some() {
                    self.release(1);
                }
                true
            }
            Err(_) => {
                self.release(1);
                false
            }
        }
    }

    /// The answer to offer `id` arrived.
    pub fn answer_received(&self, id: OfferId, now: Instant) -> Receipt {
        let at = shard(&self.answers, id.announce())
            .lock()
            .ok()
            .and_then(|mut s| s.remove(&id));
        match at {
            Some(at) => {
                self.release(1);
                Receipt::Delivered(now.saturating_duration_since(at))
            }
            None => Receipt::Unknown,
        }
    }

    /// Settles every entry sent before `before`.
    pub fn sweep(&self, before: Instant) -> Settled {
        let mut out = Settled::default();
        let mut gone = 0;
        for s in &self.offers {
            if let Ok(mut s) = s.lock() {
                s.retain(|_, e| {
                    if e.at >= before {
                        return true;
                    }
                    let received = u64::from(e.received.count_ones());
                    let sent = u64::from(e.sent);
                    // Without a response the swarm's size is unknown: every offer counts.
                    let deliverable = u64::from(e.deliverable.unwrap_or(e.sent)).max(received);
                    out.offers_lost += deliverable - received;
                    out.offers_undeliverable += sent - deliverable;
                    gone += 1;
                    false
                });
            }
        }
        for s in &self.answers {
            if let Ok(mut s) = s.lock() {
                let n = s.len();
                s.retain(|_, at| *at >= before);
                out.answers_lost += (n - s.len()) as u64;
                gone += n - s.len();
            }
        }
        self.release(gone);
        out
    }

    /// True while an offer the swarm had a peer for, or an answer, may still arrive.
    pub fn awaiting(&self) -> bool {
        let offers = self.offers.iter().any(|s| {
            s.lock().is_ok_and(|s| {
                s.values()
                    .any(|e| u32::from(e.deliverable.unwrap_or(e.sent)) > e.received.count_ones())
            })
        });
        offers
            || self
                .answers
                .iter()
                .any(|s| s.lock().is_ok_and(|s| !s.is_empty()))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(conn: u32, seq: u32, idx: u8) -> OfferId {
        OfferId { conn, seq, idx }
    }

    #[test]
    fn offers_settle_as_received_undeliverable_or_lost() {
        let l = Ledger::new(100);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // 3 offers in a swarm of 3 (2 others): one undeliverable; both others arrive.
        assert!(l.offers_sent(id(1, 1, 0).announce(), 3, t0));
        l.swarm_size(id(1, 1, 0).announce(), 3);
        assert_eq!(
            l.offer_received(id(1, 1, 0), 2, t0 + ms(4)),
            Receipt::Delivered(ms(4))
        );
        assert!(l.awaiting());
        assert_eq!(
            l.offer_received(id(1, 1, 1), 2, t0 + ms(5)),
            Receipt::DuplicateTarget(ms(5))
        );
        assert_eq!(
            l.offer_received(id(1, 1, 1), 3, t0 + ms(5)),
            Receipt::Duplicate
        );
        assert_eq!(
            l.offer_received(id(1, 1, 7), 3, t0),
            Receipt::Unknown,
            "past the count"
        );
        assert!(!l.awaiting(), "both deliverable offers are in");
        // 2 offers, no response: both count; one arrives, one is lost.
        assert!(l.offers_sent(id(2, 1, 0).announce(), 2, t0));
        assert!(matches!(
            l.offer_received(id(2, 1, 1), 1, t0),
            Receipt::Delivered(_)
        ));
        // An answer that arrives and one that doesn't.
        assert!(l.answer_sent(id(2, 1, 1), t0 + ms(1)));
        assert!(l.answer_sent(id(1, 1, 0), t0 + ms(1)));
        assert_eq!(
            l.answer_received(id(2, 1, 1), t0 + ms(3)),
            Receipt::Delivered(ms(2))
        );
        assert_eq!(l.answer_received(id(2, 1, 1), t0 + ms(3)), Receipt::Unknown);
        assert_eq!(l.len(), 3);
        assert_eq!(l.sweep(t0), Settled::default(), "nothing older than t0");
        let s = l.sweep(t0 + ms(10));
        assert_eq!(
            s,
            Settled {
                offers_lost: 1,
                offers_undeliverable: 1,
                answers_lost: 1
            }
        );
        assert!(l.is_empty());
        assert!(!l.awaiting());
        assert_eq!(
            l.offer_received(id(2, 1, 0), 1, t0 + ms(20)),
            Receipt::Unknown,
            "late"
        );
    }

    #[test]
    fn the_ledger_is_bounded() {
        let l = Ledger::new(2);
        let t0 = Instant::now();
        assert!(l.offers_sent(1, 1, t0));
        assert!(l.answer_sent(id(0, 5, 0), t0));
        assert!(!l.offers_sent(2, 1, t0), "full");
        assert!(!l.answer_sent(id(0, 6, 0), t0), "full");
        assert_eq!(l.len(), 2);
        l.sweep(t0 + Duration::from_secs(1));
        assert!(l.offers_sent(2, 1, t0), "room again");
    }
}
