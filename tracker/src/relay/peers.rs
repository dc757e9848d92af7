//! The table of this instance's viewers: slot -> joined swarms and outbox.
//!
//! Sharded by slot, so delivering a signal takes one short lock on one shard: look up the slot,
//! check the nonce and the swarm, push onto the viewer's bounded outbox and take its waker.
//! Nothing inside a lock waits; the waker is woken after the lock is released.
//!
//! The outbox lives in the entry rather than in a channel per viewer: `deliver` holds this lock
//! anyway, and a tokio mpsc channel costs about 800 bytes per connection (cache-padded state
//! and a first block of 32 slots), a tenth of an idle viewer's memory when measured.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::Signal;
use crate::protocol::{InstanceId, PeerId};

/// Outbox capacity kept after a burst drains; larger buffers are given back.
const IDLE_OUTBOX_CAPACITY: usize = 4;

/// Why a local delivery failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverError {
    /// No viewer holds that id.
    UnknownPeer,
    /// The viewer is not in the signal's swarm.
    NotInSwarm,
    /// The viewer's outbox is full.
    Full,
}

struct Entry {
    nonce: u64,
    swarms: Vec<Arc<str>>,
    outbox: VecDeque<Box<Signal>>,
    /// The session task waiting for its outbox, if it is waiting.
    waker: Option<Waker>,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
}

/// Limits on what one [`PeerTable::poll_outbox`] call takes.
#[derive(Debug, Clone, Copy)]
pub struct TakeLimits {
    /// Most signals taken.
    pub max_signals: usize,
    /// Stop taking once this many payload bytes were taken.
    pub max_bytes: usize,
}

/// This instance's viewers, by slot.
pub struct PeerTable {
    instance: InstanceId,
    shards: Box<[Mutex<Shard>]>,
    next_shard: AtomicUsize,
    outbox_capacity: usize,
}

impl PeerTable {
    /// An empty table with `shards` shards (at least 1) and outboxes of `outbox_capacity`.
    pub fn new(instance: InstanceId, shards: usize, outbox_capacity: usize) -> Self {
        let shards = shards.clamp(1, 1 << 16);
        Self {
            instance,
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            next_shard: AtomicUsize::new(0),
            outbox_capacity: outbox_capacity.max(1),
        }
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock can't leave an entry half-written (every write is
        // a single field update), so a poisoned lock is safe to keep using.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn locate(&self, slot: u32) -> (usize, usize) {
        let n = self.shards.len();
        (slot as usize % n, slot as usize / n)
    }

    /// Adds a viewer and returns its new id.
    pub fn register(&self) -> PeerId {
        let n = self.shards.len();
        let shard_idx = self.next_shard.fetch_add(1, Ordering::Relaxed) % n;
        let nonce: u64 = rand::random();
        let entry = Entry {
            nonce,
            swarms: Vec::new(),
            outbox: VecDeque::new(),
            waker: None,
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

    /// Removes a viewer, dropping whatever is still queued for it; a stale id is ignored.
    pub fn unregister(&self, id: PeerId) {
        let (s, i) = self.locate(id.slot());
        let mut shard = self.lock(s);
        if let Some(slot) = shard.slots.get_mut(i)
            && slot.as_ref().is_some_and(|e| e.nonce == id.nonce())
        {
            *slot = None;
            if let Ok(i) = u32::try_from(i) {
                shard.free.push(i);
            }
        }
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

    /// Records that the viewer joined a swarm, so signals in it may reach the viewer.
    pub fn add_swarm(&self, id: PeerId, swarm: Arc<str>) {
        self.with_entry(id, |e| {
            if !e.swarms.contains(&swarm) {
                // Most viewers are in one swarm: don't let the first push reserve four.
                e.swarms.reserve_exact(1);
                e.swarms.push(swarm);
            }
        });
    }

    /// Records that the viewer left a swarm.
    pub fn remove_swarm(&self, id: PeerId, swarm: &str) {
        self.with_entry(id, |e| e.swarms.retain(|s| &**s != swarm));
    }

    /// Queues a signal for its target if the target exists, is in the swarm and has room.
    ///
    /// # Errors
    /// [`DeliverError`] says why it wasn't queued; the signal is dropped.
    pub fn deliver(&self, signal: Box<Signal>) -> Result<(), DeliverError> {
        let capacity = self.outbox_capacity;
        let waker = self
            .with_entry(signal.to, move |e| {
                if !e.swarms.iter().any(|s| **s == *signal.swarm) {
                    return Err(DeliverError::NotInSwarm);
                }
                if e.outbox.len() >= capacity {
                    return Err(DeliverError::Full);
                }
                e.outbox.push_back(signal);
                Ok(e.waker.take())
            })
            .unwrap_or(Err(DeliverError::UnknownPeer))?;
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Moves queued signals for `id` into `out`, within `limits`; when there are none, stores
    /// the task's waker and returns `Pending`. A gone viewer gets `Pending` forever (its session
    /// is ending anyway).
    pub fn poll_outbox(
        &self,
        id: PeerId,
        cx: &mut Context<'_>,
        out: &mut Vec<Box<Signal>>,
        limits: TakeLimits,
    ) -> Poll<()> {
        self.with_entry(id, |e| {
            if e.outbox.is_empty() {
                if !e.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    e.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let mut bytes = 0;
            while out.len() < limits.max_signals && bytes < limits.max_bytes {
                let Some(s) = e.outbox.pop_front() else { break };
                bytes += s.payload_len();
                out.push(s);
            }
            if e.outbox.is_empty() && e.outbox.capacity() > IDLE_OUTBOX_CAPACITY {
                e.outbox.shrink_to(IDLE_OUTBOX_CAPACITY);
            }
            Poll::Ready(())
        })
        .unwrap_or(Poll::Pending)
    }

    /// Registered viewers; takes every shard lock in turn, so not for the message path.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .enumerate()
            .map(|(i, _)| self.lock(i).slots.iter().filter(|s| s.is_some()).count())
            .sum()
    }

    /// True when no viewer is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::{Body, SignalKind};
    use std::future::poll_fn;
    use tokio::time::Instant;

    fn signal(from: PeerId, to: PeerId, swarm: &str) -> Box<Signal> {
        Box::new(Signal {
            kind: SignalKind::Offer,
            swarm: swarm.into(),
            from,
            to,
            sid: "s".into(),
            body: Body::Sdp("v=0".into()),
            received_at: Instant::now(),
        })
    }

    const ALL: TakeLimits = TakeLimits {
        max_signals: 64,
        max_bytes: 1 << 20,
    };

    async fn take(table: &PeerTable, id: PeerId, limits: TakeLimits) -> Vec<Box<Signal>> {
        let mut out = Vec::new();
        poll_fn(|cx| table.poll_outbox(id, cx, &mut out, limits)).await;
        out
    }

    #[tokio::test]
    async fn delivers_only_to_live_members_of_the_swarm() {
        let table = PeerTable::new(InstanceId(1), 4, 1);
        let a = table.register();
        let b = table.register();
        assert_ne!(a, b);
        assert_eq!(
            table.deliver(signal(a, b, "v")),
            Err(DeliverError::NotInSwarm)
        );
        table.add_swarm(b, "v".into());
        assert_eq!(table.deliver(signal(a, b, "v")), Ok(()));
        assert_eq!(table.deliver(signal(a, b, "v")), Err(DeliverError::Full));
        let got = take(&table, b, ALL).await;
        assert_eq!(got.iter().map(|s| s.from).collect::<Vec<_>>(), vec![a]);
        table.remove_swarm(b, "v");
        assert_eq!(
            table.deliver(signal(a, b, "v")),
            Err(DeliverError::NotInSwarm)
        );
        table.unregister(b);
        assert_eq!(
            table.deliver(signal(a, b, "v")),
            Err(DeliverError::UnknownPeer)
        );
        assert_eq!(table.len(), 1);
    }

    #[tokio::test]
    async fn a_waiting_session_is_woken_and_takes_within_limits() {
        let table = Arc::new(PeerTable::new(InstanceId(1), 2, 16));
        let a = table.register();
        let b = table.register();
        table.add_swarm(b, "v".into());
        let waiter = tokio::spawn({
            let table = Arc::clone(&table);
            async move {
                take(
                    &table,
                    b,
                    TakeLimits {
                        max_signals: 3,
                        max_bytes: 1 << 20,
                    },
                )
                .await
            }
        });
        tokio::task::yield_now().await;
        for _ in 0..5 {
            table.deliver(signal(a, b, "v")).expect("queued");
        }
        let first = waiter.await.expect("woken");
        assert!(!first.is_empty() && first.len() <= 3);
        let rest = take(&table, b, ALL).await;
        assert_eq!(first.len() + rest.len(), 5);
        // The byte bound stops after the signal that crosses it.
        for _ in 0..4 {
            table.deliver(signal(a, b, "v")).expect("queued");
        }
        let bounded = take(
            &table,
            b,
            TakeLimits {
                max_signals: 64,
                max_bytes: 4,
            },
        )
        .await;
        assert_eq!(
            bounded.len(),
            2,
            "3 bytes of SDP each: the second crosses 4"
        );
    }

    #[tokio::test]
    async fn a_reused_slot_does_not_receive_the_old_holders_signals() {
        let table = PeerTable::new(InstanceId(1), 1, 4);
        let old = table.register();
        table.unregister(old);
        let new = table.register();
        assert_eq!(old.slot(), new.slot());
        table.add_swarm(new, "v".into());
        assert_eq!(
            table.deliver(signal(new, old, "v")),
            Err(DeliverError::UnknownPeer)
        );
        let other_instance = PeerId::new(InstanceId(2), new.slot(), new.nonce());
        assert_eq!(
            table.deliver(signal(new, other_instance, "v")),
            Err(DeliverError::UnknownPeer)
        );
    }
}
