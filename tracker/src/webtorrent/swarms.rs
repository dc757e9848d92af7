//! This instance's WebTorrent peers by swarm: who holds which `peer_id`, who seeds, and how
//! many completed, for announce replies and scrapes.
//!
//! Pairing itself goes through the shared [`crate::swarm::Membership`] by server peer id, like
//! native viewers; this table adds what only this protocol has. Sharded by a hash of the swarm
//! key, one short lock per operation, nothing awaited inside.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use super::id::Id20;
use crate::protocol::PeerId;
use crate::swarm::BySwarm;

/// Seeders, leechers and completions of a swarm, as replies report them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Seeders (`complete`).
    pub complete: u32,
    /// Leechers (`incomplete`).
    pub incomplete: u32,
    /// `completed` events seen while the swarm existed here.
    pub downloaded: u64,
}

/// A `peer_id` is held by another connection in that swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("peer_id is in use by another connection in this swarm")]
pub struct Taken;

struct Holder {
    owner: PeerId,
    seeder: bool,
}

#[derive(Default)]
struct Swarm {
    peers: HashMap<Id20, Holder>,
    complete: u32,
    downloaded: u64,
}

impl Swarm {
    fn counts(&self) -> Counts {
        let total = u32::try_from(self.peers.len()).unwrap_or(u32::MAX);
        Counts {
            complete: self.complete,
            incomplete: total.saturating_sub(self.complete),
            downloaded: self.downloaded,
        }
    }
}

type Shard = HashMap<Arc<str>, Swarm>;

/// The table.
pub struct WebTorrentSwarms {
    shards: BySwarm<Shard>,
}

impl WebTorrentSwarms {
    /// An empty table with `shards` shards (at least 1).
    pub fn new(shards: usize) -> Self {
        Self {
            shards: BySwarm::new(shards),
        }
    }

    // Every mutation is a few field updates that can't panic halfway.
    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        self.shards.lock(key)
    }

    /// Records an announce by `owner` (a connection) as `peer_id`: adds the peer, or updates
    /// whether it seeds; `completed` counts a download when it turns a leecher into a seeder.
    ///
    /// # Errors
    /// [`Taken`] when another connection holds `peer_id` in that swarm; nothing changes.
    pub fn announce(
        &self,
        key: &Arc<str>,
        peer_id: Id20,
        owner: PeerId,
        seeder: bool,
        completed: bool,
    ) -> Result<Counts, Taken> {
        let mut shard = self.shard(key);
        let swarm = shard.entry(Arc::clone(key)).or_default();
        let seeds = seeder || completed;
        match swarm.peers.get_mut(&peer_id) {
            Some(h) if h.owner != owner => return Err(Taken),
            Some(h) => {
                // A seeder stays one: `left` only shrinks, as in the reference.
                if seeds && !h.seeder {
                    h.seeder = true;
                    swarm.complete += 1;
                    if completed {
                        swarm.downloaded += 1;
                    }
                }
            }
            None => {
                swarm.peers.insert(
                    peer_id,
                    Holder {
                        owner,
                        seeder: seeds,
                    },
                );
                if seeds {
                    swarm.complete += 1;
                }
                if completed {
                    swarm.downloaded += 1;
                }
            }
        }
        Ok(swarm.counts())
    }

    /// Removes `peer_id` if `owner` holds it; returns the swarm's counts after.
    pub fn remove(&self, key: &str, peer_id: Id20, owner: PeerId) -> Counts {
        let mut shard = self.shard(key);
        let Some(swarm) = shard.get_mut(key) else {
            return Counts::default();
        };
        if swarm.peers.get(&peer_id).is_some_and(|h| h.owner == owner)
            && let Some(h) = swarm.peers.remove(&peer_id)
            && h.seeder
        {
            swarm.complete -= 1;
        }
        let counts = swarm.counts();
        if swarm.peers.is_empty() {
            shard.remove(key);
        }
        counts
    }

    /// A swarm's counts (zeros when nobody is in it here).
    pub fn counts(&self, key: &str) -> Counts {
        self.shard(key)
            .get(key)
            .map(Swarm::counts)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::InstanceId;

    fn conn(n: u32) -> PeerId {
        PeerId::new(InstanceId(1), n, u64::from(n))
    }

    #[test]
    fn counts_follow_seeders_and_completions() {
        let t = WebTorrentSwarms::new(4);
        let key: Arc<str> = "wt\u{1f}00".into();
        let (a, b) = (Id20([1; 20]), Id20([2; 20]));
        let c = t.announce(&key, a, conn(1), false, false).expect("free");
        assert_eq!((c.complete, c.incomplete, c.downloaded), (0, 1, 0));
        let c = t.announce(&key, b, conn(2), true, false).expect("free");
        assert_eq!((c.complete, c.incomplete), (1, 1));
        let c = t.announce(&key, a, conn(1), false, true).expect("own");
        assert_eq!((c.complete, c.incomplete, c.downloaded), (2, 0, 1));
        // A second `completed` from a seeder is not a second download.
        let c = t.announce(&key, a, conn(1), false, true).expect("own");
        assert_eq!(c.downloaded, 1);
        let c = t.remove(&key, b, conn(2));
        assert_eq!((c.complete, c.incomplete), (1, 0));
        t.remove(&key, a, conn(1));
        assert_eq!(t.counts(&key), Counts::default());
    }

    #[test]
    fn a_peer_id_is_not_taken_over() {
        let t = WebTorrentSwarms::new(1);
        let key: Arc<str> = "wt\u{1f}00".into();
        let a = Id20([1; 20]);
        t.announce(&key, a, conn(1), false, false).expect("free");
        assert_eq!(t.announce(&key, a, conn(2), true, false), Err(Taken));
        // Nor removed by someone else.
        t.remove(&key, a, conn(2));
        assert_eq!(t.counts(&key).incomplete, 1);
        // Free again once its holder leaves.
        t.remove(&key, a, conn(1));
        assert!(t.announce(&key, a, conn(2), false, false).is_ok());
    }
}
