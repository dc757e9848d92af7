//! The table of this instance's viewers: slot -> outbox and joined swarms.
//!
//! Sharded by slot so that delivering a signal takes one short lock on one shard: look up the
//! slot, check the nonce and the swarm, `try_send`. Nothing inside a lock waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::Signal;
use crate::protocol::{InstanceId, PeerId};

/// The sending end of a session's bounded outbox.
pub type Outbox = mpsc::Sender<Box<Signal>>;

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
    outbox: Outbox,
    swarms: Vec<Arc<str>>,
}

#[derive(Default)]
struct Shard {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
}

/// This instance's viewers, by slot.
pub struct PeerTable {
    instance: InstanceId,
    shards: Box<[Mutex<Shard>]>,
    next_shard: AtomicUsize,
}

impl PeerTable {
    /// An empty table with `shards` shards (at least 1).
    pub fn new(instance: InstanceId, shards: usize) -> Self {
        let shards = shards.clamp(1, 1 << 16);
        Self {
            instance,
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            next_shard: AtomicUsize::new(0),
        }
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard lock can't leave an entry half-written (every write is
        // a single assignment), so a poisoned lock is safe to keep using.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn locate(&self, slot: u32) -> (usize, usize) {
        let n = self.shards.len();
        (slot as usize % n, slot as usize / n)
    }

    /// Adds a viewer and returns its new id.
    pub fn register(&self, outbox: Outbox) -> PeerId {
        let n = self.shards.len();
        let shard_idx = self.next_shard.fetch_add(1, Ordering::Relaxed) % n;
        let nonce: u64 = rand::random();
        let entry = Entry {
            nonce,
            outbox,
            swarms: Vec::new(),
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

    /// Removes a viewer; a stale id is ignored.
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
                e.swarms.push(swarm);
            }
        });
    }

    /// Records that the viewer left a swarm.
    pub fn remove_swarm(&self, id: PeerId, swarm: &str) {
        self.with_entry(id, |e| e.swarms.retain(|s| &**s != swarm));
    }

    /// Hands a signal to its target's outbox if the target exists and is in the swarm.
    ///
    /// # Errors
    /// [`DeliverError`] says why it wasn't delivered; the signal is dropped.
    pub fn deliver(&self, signal: Box<Signal>) -> Result<(), DeliverError> {
        let to = signal.to;
        self.with_entry(to, move |e| {
            if !e.swarms.iter().any(|s| **s == *signal.swarm) {
                return Err(DeliverError::NotInSwarm);
            }
            e.outbox.try_send(signal).map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => DeliverError::Full,
                // The session is ending and will unregister itself.
                mpsc::error::TrySendError::Closed(_) => DeliverError::UnknownPeer,
            })
        })
        .unwrap_or(Err(DeliverError::UnknownPeer))
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

    #[tokio::test]
    async fn delivers_only_to_live_members_of_the_swarm() {
        let table = PeerTable::new(InstanceId(1), 4);
        let (tx_a, _rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(1);
        let a = table.register(tx_a);
        let b = table.register(tx_b);
        assert_ne!(a, b);
        assert_eq!(
            table.deliver(signal(a, b, "v")),
            Err(DeliverError::NotInSwarm)
        );
        table.add_swarm(b, "v".into());
        assert_eq!(table.deliver(signal(a, b, "v")), Ok(()));
        assert_eq!(table.deliver(signal(a, b, "v")), Err(DeliverError::Full));
        assert_eq!(rx_b.recv().await.map(|s| s.from), Some(a));
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
    async fn a_reused_slot_does_not_receive_the_old_holders_signals() {
        let table = PeerTable::new(InstanceId(1), 1);
        let (tx, _rx) = mpsc::channel(4);
        let old = table.register(tx.clone());
        table.unregister(old);
        let new = table.register(tx);
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
