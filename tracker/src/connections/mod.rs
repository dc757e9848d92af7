//! This instance's connections, by slot: each one's outbox, the waker of its session, the
//! swarms it is in and the WebTorrent answers it awaits.
//!
//! Sharded by slot, so delivering a signal takes one short lock on one shard: look up the slot,
//! check the nonce, the swarm and (for an answer) the offerer's record, push onto the bounded
//! outbox and take the waker. Nothing inside a lock waits or allocates beyond the outbox's own
//! growth; the waker is woken after the lock is released.
//!
//! The outbox lives in the entry rather than in a channel per connection: `deliver` holds this
//! lock anyway, and a tokio mpsc channel costs about 800 bytes per connection. It is bounded in
//! signals and in bytes; past either, signals are refused (counted by the caller), except that
//! an answer may push out the oldest queued offer: it completes a negotiation that is already
//! under way, where an offer starts a new one.
//!
//! Which swarms a connection is in is decided by [`crate::swarm::Membership`], the one owner of
//! memberships; this table only keeps the connection's side of it for the delivery check.

mod awaiting;
mod swarm_set;
mod tally;

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use crate::signal::{Payload, Signal, SignalKind};
use crate::swarm_key::SwarmId;
use awaiting::Awaiting;
use swarm_set::SwarmSet;
use swarmtrack_protocol::{InstanceId, PeerId};
pub use tally::Tally;

/// Why a local delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverError {
    /// No connection holds that id.
    UnknownPeer,
    /// The connection is not in the signal's swarm.
    NotInSwarm,
    /// The connection's outbox is full (in signals or bytes).
    Full,
    /// A WebTorrent answer from a peer its target sent no offer to (or whose offers it sent
    /// were all answered, or expired).
    UnexpectedAnswer,
}

/// What one attempt at queueing a signal came to.
enum Queued {
    /// Queued (with the offer it pushed out, if it did).
    Done(Option<Signal>),
    /// It would wait, holding more than it relays: compact it, then queue it.
    Compact(Signal),
}

/// The bounds of every outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Most signals queued.
    pub signals: usize,
    /// Most bytes queued ([`Signal::footprint`]).
    pub bytes: usize,
}

/// Limits on what one [`Connections::poll_outbox`] call takes.
#[derive(Debug, Clone, Copy)]
pub struct TakeLimits {
    /// Most signals taken.
    pub max_signals: usize,
    /// Stop taking once this many payload bytes were taken.
    pub max_bytes: usize,
}

/// The bounds of the answers one connection awaits.
#[derive(Debug, Clone, Copy)]
pub struct AwaitLimits {
    /// How long an offer may be answered, in seconds.
    pub ttl_secs: u32,
    /// Most peers one connection awaits answers from at once.
    pub max: usize,
}

struct Entry {
    nonce: u64,
    swarms: SwarmSet,
    outbox: VecDeque<Signal>,
    queued_bytes: usize,
    /// The session task waiting for its outbox, if it is waiting.
    waker: Option<Waker>,
    /// The session has output its socket hasn't taken, and takes nothing from the outbox
    /// until it has: what is queued now waits.
    behind: bool,
    awaiting: Awaiting,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
}

/// This instance's connections, by slot.
pub struct Connections {
    instance: InstanceId,
    shards: Box<[Mutex<Shard>]>,
    next_shard: AtomicUsize,
    outbox: OutboxLimits,
    awaiting: AwaitLimits,
    /// Keys the answer fingerprints; never leaves this instance.
    fingerprint_key: RandomState,
    /// The clock of answer records.
    epoch: Instant,
}

impl Connections {
    /// An empty table with `shards` shards (at least 1).
    pub fn new(
        instance: InstanceId,
        shards: usize,
        outbox: OutboxLimits,
        awaiting: AwaitLimits,
    ) -> Self {
        let shards = shards.clamp(1, 1 << 16);
        Self {
            instance,
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            next_shard: AtomicUsize::new(0),
            outbox: OutboxLimits {
                signals: outbox.signals.max(1),
                bytes: outbox.bytes.max(1),
            },
            awaiting,
            fingerprint_key: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// This instance's id.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // Every write under a shard lock is a single field update or a push that can't be left
        // half-done by a panic, so a poisoned lock is safe to keep using.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn locate(&self, slot: u32) -> (usize, usize) {
        let n = self.shards.len();
        (slot as usize % n, slot as usize / n)
    }

    fn secs(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// Adds a connection and returns its new id.
    pub fn register(&self) -> PeerId {
        let n = self.shards.len();
        let shard_idx = self.next_shard.fetch_add(1, Ordering::Relaxed) % n;
        let nonce: u64 = rand::random();
        let entry = Entry {
            nonce,
            swarms: SwarmSet::default(),
            outbox: VecDeque::new(),
            queued_bytes: 0,
            waker: None,
            behind: false,
            awaiting: Awaiting::default(),
        };
        let mut shard = self.lock(shard_idx);
        let index = match shard.free.pop() {
            Some(i) => {
                shard.slots[i as usize] = Some(entry);
                i as usize
            }
            None => {
                shard.slots.push(Some(entry));
                shard.slots.len() - 1
            }
        };
        drop(shard);
        // Slots stay below max_connections (far below u32::MAX) times the shard count.
        let slot = u32::try_from(index * n + shard_idx).unwrap_or(u32::MAX);
        PeerId::new(self.instance, slot, nonce)
    }

    /// Removes a connection; returns the signals still queued for it (dropped with it) and
    /// their bytes. A stale id is ignored.
    pub fn unregister(&self, id: PeerId) -> (usize, usize) {
        let (s, i) = self.locate(id.slot());
        let removed = {
            let mut shard = self.lock(s);
            let Some(slot) = shard.slots.get_mut(i) else {
                return (0, 0);
            };
            if slot.as_ref().is_none_or(|e| e.nonce != id.nonce()) {
                return (0, 0);
            }
            let removed = slot.take();
            if let Ok(i) = u32::try_from(i) {
                shard.free.push(i);
            }
            removed
        };
        // The entry (and what it held) is freed outside the lock.
        removed.map_or((0, 0), |e| (e.outbox.len(), e.queued_bytes))
    }

    fn with_entry<R>(&self, id: PeerId, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        if id.instance() != self.instance {
            return None;
        }
        let (s, i) = self.locate(id.slot());
        let mut shard = self.lock(s);
        match shard.slots.get_mut(i) {
            Some(Some(e)) if e.nonce == id.nonce() => Some(f(e)),
            _ => None,
        }
    }

    /// Records that the connection is in a swarm, so signals in it may reach it. Only
    /// [`crate::swarm::Membership`] calls this.
    pub fn add_swarm(&self, id: PeerId, swarm: SwarmId) {
        self.with_entry(id, |e| e.swarms.insert(swarm));
    }

    /// Records that the connection left a swarm. Only [`crate::swarm::Membership`] calls this.
    pub fn remove_swarm(&self, id: PeerId, swarm: SwarmId) {
        self.with_entry(id, |e| e.swarms.remove(swarm));
    }

    /// The fingerprint of a peer whose answers a connection awaits.
    pub fn peer_fingerprint(&self, peer: PeerId) -> u64 {
        self.fingerprint_key.hash_one(peer.as_bytes())
    }

    /// The fingerprint of an offer, by its WebTorrent offer id.
    pub fn offer_fingerprint(&self, offer_id: &[u8; 20]) -> u32 {
        // The low half of a keyed hash: enough to tell apart the few offers one peer awaits.
        self.fingerprint_key.hash_one(offer_id) as u32
    }

    /// Records that `offerer` awaits an answer to each of `offers` (target fingerprint, offer
    /// fingerprint: its offers about to be sent), and returns how many could be recorded: the
    /// first `n` offers may go, the rest must not.
    pub fn await_answers(&self, offerer: PeerId, offers: &[(u64, u32)], now: Instant) -> usize {
        let now = self.secs(now);
        let expires = now.saturating_add(self.awaiting.ttl_secs);
        let max = self.awaiting.max;
        self.with_entry(offerer, |e| {
            offers
                .iter()
                .take_while(|&&(fp, offer)| e.awaiting.insert(fp, offer, now, expires, max))
                .count()
        })
        .unwrap_or(0)
    }

    /// Forgets the answer a WebTorrent offer awaits, when that offer was dropped after all
    /// (pushed out of its target's outbox).
    pub fn forget_offer(&self, offer: &Signal) {
        if let Payload::WebTorrent(w) = &offer.payload
            && offer.kind == SignalKind::Offer
            && offer.from.instance() == self.instance
        {
            let key = (
                self.peer_fingerprint(offer.to),
                self.offer_fingerprint(w.ids().0),
            );
            self.forget_answers(offer.from, &[key]);
        }
    }

    /// Forgets awaited answers of offers that weren't delivered after all.
    pub fn forget_answers(&self, offerer: PeerId, offers: &[(u64, u32)]) {
        if offers.is_empty() {
            return;
        }
        self.with_entry(offerer, |e| {
            for &(fp, offer) in offers {
                e.awaiting.forget(fp, offer);
            }
        });
    }

    /// Queues a signal for its target if the target exists, is in the swarm, awaits it (a
    /// WebTorrent answer) and has room.
    ///
    /// A signal that will wait (the target's outbox isn't empty, or its session is behind on
    /// its socket) and that [`Signal::pins_more`] than it relays is compacted first, outside
    /// the lock, so the outbox's byte bound is what its signals hold. One that is taken at
    /// once is never copied.
    ///
    /// # Errors
    /// [`DeliverError`] says why it wasn't queued; the signal is dropped. `Ok` carries the
    /// queued offer pushed out to make room, if one was.
    pub fn deliver(&self, signal: Signal) -> Result<Option<Signal>, DeliverError> {
        match self.try_deliver(signal, false)? {
            Queued::Done(evicted) => Ok(evicted),
            Queued::Compact(mut signal) => {
                signal.compact();
                // Compacted: it holds only its own bytes now, whatever `pins_more` can tell
                // (a slice of a Redis batch can't know it was copied out).
                match self.try_deliver(signal, true)? {
                    Queued::Done(evicted) => Ok(evicted),
                    Queued::Compact(_) => Err(DeliverError::Full),
                }
            }
        }
    }

    fn try_deliver(&self, signal: Signal, compacted: bool) -> Result<Queued, DeliverError> {
        let answer_fp = match &signal.payload {
            Payload::WebTorrent(w) if signal.kind == SignalKind::Answer => Some((
                self.peer_fingerprint(signal.from),
                self.offer_fingerprint(w.ids().0),
            )),
            _ => None,
        };
        let now = answer_fp.map(|_| self.secs(Instant::now()));
        let limits = self.outbox;
        let size = signal.footprint();
        let (waker, evicted) = match self
            .with_entry(signal.to, move |e| {
                if !e.swarms.contains(signal.swarm) {
                    return Err(DeliverError::NotInSwarm);
                }
                // Before the answer's record is taken: the signal comes back once compacted.
                if !compacted && (e.behind || !e.outbox.is_empty()) && signal.pins_more() {
                    return Ok(Err(signal));
                }
                if let (Some((fp, offer)), Some(now)) = (answer_fp, now)
                    && !e.awaiting.take(fp, offer, now)
                {
                    return Err(DeliverError::UnexpectedAnswer);
                }
                let mut evicted = None;
                // A refusal coming back from another instance is the answer to a signal this
                // viewer sent, as an `error` reply is on one instance: bounded by its sends
                // (the rate limit) and by the outbox's bytes, not by its count of signals, so
                // a burst refused over there is told back in full.
                let over_count = e.outbox.len() >= limits.signals && !signal.is_refusal();
                if over_count || e.queued_bytes + size > limits.bytes {
                    let offer = (signal.kind == SignalKind::Answer)
                        .then(|| e.outbox.iter().position(|s| s.kind == SignalKind::Offer))
                        .flatten();
                    // Pushed out only when that makes room: an offer dropped for an answer
                    // refused anyway would be lost without anyone counting it.
                    let Some(i) = offer.filter(|&i| {
                        e.queued_bytes - e.outbox[i].footprint() + size <= limits.bytes
                    }) else {
                        return Err(DeliverError::Full);
                    };
                    let Some(old) = e.outbox.remove(i) else {
                        return Err(DeliverError::Full);
                    };
                    e.queued_bytes -= old.footprint();
                    evicted = Some(old);
                }
                e.queued_bytes += size;
                e.outbox.push_back(signal);
                Ok(Ok((e.waker.take(), evicted)))
            })
            .unwrap_or(Err(DeliverError::UnknownPeer))?
        {
            Ok(queued) => queued,
            Err(signal) => return Ok(Queued::Compact(signal)),
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(Queued::Done(evicted))
    }

    /// Moves queued signals for `id` into `out`, within `limits`; when there are none, stores
    /// the task's waker and returns `Pending`. A gone connection gets `Pending` forever (its
    /// session is ending anyway).
    pub fn poll_outbox(
        &self,
        id: PeerId,
        cx: &mut Context<'_>,
        out: &mut Vec<Signal>,
        limits: TakeLimits,
    ) -> Poll<()> {
        self.with_entry(id, |e| {
            if e.outbox.is_empty() {
                if !e.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    e.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            e.behind = false;
            let mut bytes = 0;
            while out.len() < limits.max_signals && bytes < limits.max_bytes {
                let Some(s) = e.outbox.pop_front() else { break };
                let size = s.footprint();
                e.queued_bytes -= size;
                bytes += s.payload_len();
                out.push(s);
            }
            if e.outbox.is_empty() {
                // Signals are ~200 bytes inline: an idle connection keeps no buffer of them.
                e.outbox = VecDeque::new();
            }
            Poll::Ready(())
        })
        .unwrap_or(Poll::Pending)
    }

    /// Stores the task's waker for `id` so [`Connections::wake_all`] reaches it, without taking
    /// anything: the session is behind on its socket, and what is queued for it now waits.
    pub fn register_waker(&self, id: PeerId, waker: &Waker) {
        self.with_entry(id, |e| {
            e.behind = true;
            if !e.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                e.waker = Some(waker.clone());
            }
        });
    }

    /// Wakes every waiting session (the drain started); not for the message path.
    pub fn wake_all(&self) {
        for i in 0..self.shards.len() {
            let wakers: Vec<Waker> = self
                .lock(i)
                .slots
                .iter_mut()
                .filter_map(|s| s.as_mut()?.waker.take())
                .collect();
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    /// Registered connections; takes every shard lock in turn, so not for the message path.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.lock(i).slots.iter().filter(|s| s.is_some()).count())
            .sum()
    }
}

#[cfg(test)]
mod tests;
