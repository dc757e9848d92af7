//! This instance's swarms: swarm key -> local members, sharded by a hash of the key so joins in
//! different swarms don't contend, with uniform sampling that never copies a member set.
//!
//! A WebTorrent swarm also keeps what only that protocol has: which connection holds which
//! `peer_id` (a peer id can't be taken over, and an answer finds its offerer by it), who seeds,
//! and how many completed.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use indexmap::IndexSet;
use rand::Rng;
use rand::seq::SliceRandom;

use super::BySwarm;
use crate::swarm_key::SwarmId;
use swarmtrack_protocol::PeerId;

type Members = IndexSet<PeerId, RandomState>;

/// Seeders, leechers and completions of a WebTorrent swarm, as replies report them.
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

/// What a WebTorrent swarm keeps besides its members.
#[derive(Default)]
struct WtSwarm {
    peers: HashMap<[u8; 20], Holder>,
    complete: u32,
    downloaded: u64,
}

impl WtSwarm {
    fn counts(&self) -> Counts {
        let total = u32::try_from(self.peers.len()).unwrap_or(u32::MAX);
        Counts {
            complete: self.complete,
            incomplete: total.saturating_sub(self.complete),
            downloaded: self.downloaded,
        }
    }
}

struct Swarm {
    id: SwarmId,
    /// The key this swarm is stored under, shared with its members' records.
    key: Arc<str>,
    members: Members,
    wt: Option<Box<WtSwarm>>,
}

/// One shard: swarm key -> the swarm.
type Shard = HashMap<Arc<str>, Swarm>;

/// This instance's swarms and their local members.
pub struct SwarmIndex {
    shards: BySwarm<Shard>,
    next_id: AtomicU64,
}

/// The result of adding a viewer to a swarm.
#[derive(Debug)]
pub struct Joined {
    /// The swarm.
    pub id: SwarmId,
    /// The swarm key, shared with the index.
    pub key: Arc<str>,
    /// Other members to offer to, at most `want`, never the viewer itself.
    pub peers: Vec<PeerId>,
    /// False when the viewer was already a member (a re-join just samples again).
    pub new_member: bool,
    /// True when this join created the swarm on this instance.
    pub new_swarm: bool,
}

/// A WebTorrent announce's part in a join.
#[derive(Debug, Clone, Copy)]
pub struct WtAnnounce {
    /// The `peer_id` the connection announces as.
    pub peer_id: [u8; 20],
    /// `left` is 0.
    pub seeder: bool,
    /// The `completed` event.
    pub completed: bool,
}

impl SwarmIndex {
    /// An empty index with `shards` shards (at least 1).
    pub fn new(shards: usize) -> Self {
        Self {
            shards: BySwarm::new(shards),
            next_id: AtomicU64::new(1),
        }
    }

    // Every mutation below is a single map or set operation.
    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        self.shards.lock(key)
    }

    /// Adds `peer` to swarm `key` and samples up to `want` other members, uniformly at random.
    ///
    /// `on_new_member` runs under the shard lock when `peer` wasn't a member yet, so whatever
    /// it records (the connection's side of the membership) is in place before anyone can
    /// sample `peer`. With `wt`, the `peer_id` is registered too, and the swarm's counts after
    /// are returned.
    ///
    /// # Errors
    /// [`Taken`] when another connection holds `wt.peer_id` in that swarm; nothing changes.
    pub fn join(
        &self,
        key: &str,
        peer: PeerId,
        want: usize,
        wt: Option<WtAnnounce>,
        rng: &mut impl Rng,
        on_new_member: impl FnOnce(SwarmId),
    ) -> Result<(Joined, Counts), Taken> {
        let mut shard = self.shard(key);
        let new_swarm = !shard.contains_key(key);
        if new_swarm {
            let key: Arc<str> = key.into();
            let swarm = Swarm {
                id: SwarmId(self.next_id.fetch_add(1, Ordering::Relaxed)),
                key: Arc::clone(&key),
                members: Members::default(),
                wt: wt.map(|_| Box::default()),
            };
            shard.insert(key, swarm);
        }
        let Some(swarm) = shard.get_mut(key) else {
            // Unreachable: found or inserted above under the same lock.
            return Err(Taken);
        };
        let key = Arc::clone(&swarm.key);
        let counts = match (wt, swarm.wt.as_deref_mut()) {
            (Some(a), Some(w)) => wt_announce(w, a, peer)?,
            _ => Counts::default(),
        };
        let peers = sample_except(&swarm.members, peer, want, rng);
        let new_member = !swarm.members.contains(&peer);
        if new_member {
            // Lock order is always swarm shard, then connection shard; nothing takes them the
            // other way round.
            on_new_member(swarm.id);
            swarm.members.insert(peer);
        }
        let joined = Joined {
            id: swarm.id,
            key,
            peers,
            new_member,
            new_swarm,
        };
        Ok((joined, counts))
    }

    /// Removes `peer` from swarm `key` (and its `peer_id`, if given and its own); returns
    /// whether it was a member, whether the swarm is now gone, and the WebTorrent counts after.
    pub fn leave(&self, key: &str, peer: PeerId, wt_peer_id: Option<[u8; 20]>) -> Left {
        let mut shard = self.shard(key);
        let Some(swarm) = shard.get_mut(key) else {
            return Left::default();
        };
        let removed = swarm.members.swap_remove(&peer);
        let mut counts = Counts::default();
        if let Some(w) = swarm.wt.as_deref_mut() {
            if let Some(pid) = wt_peer_id
                && w.peers.get(&pid).is_some_and(|h| h.owner == peer)
                && let Some(h) = w.peers.remove(&pid)
                && h.seeder
            {
                w.complete -= 1;
            }
            counts = w.counts();
        }
        let gone = swarm.members.is_empty();
        if gone {
            shard.remove(key);
        }
        Left {
            removed,
            gone,
            counts,
        }
    }

    /// The id of swarm `key`, if it has local members.
    pub fn id_of(&self, key: &str) -> Option<SwarmId> {
        self.shard(key).get(key).map(|s| s.id)
    }

    /// The connection that holds `peer_id` in WebTorrent swarm `key`, if any.
    pub fn owner_of(&self, key: &str, peer_id: &[u8; 20]) -> Option<(SwarmId, PeerId)> {
        let shard = self.shard(key);
        let swarm = shard.get(key)?;
        let owner = swarm.wt.as_ref()?.peers.get(peer_id)?.owner;
        Some((swarm.id, owner))
    }

    /// A WebTorrent swarm's counts (zeros when nobody is in it here).
    pub fn counts(&self, key: &str) -> Counts {
        self.shard(key)
            .get(key)
            .and_then(|s| s.wt.as_ref().map(|w| w.counts()))
            .unwrap_or_default()
    }

    /// Local members of a swarm (for tests).
    #[cfg(test)]
    pub fn members(&self, key: &str) -> Vec<PeerId> {
        self.shard(key)
            .get(key)
            .map(|s| s.members.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every (swarm, member) pair, for refreshing the global membership; takes each shard lock
    /// in turn, so not for the message path.
    pub fn memberships(&self) -> Vec<(Arc<str>, PeerId)> {
        let mut out = Vec::new();
        for shard in self.shards.each() {
            for (key, swarm) in shard.iter() {
                out.extend(swarm.members.iter().map(|m| (Arc::clone(key), *m)));
            }
        }
        out
    }
}

/// The result of [`SwarmIndex::leave`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// The viewer was a member.
    pub removed: bool,
    /// The swarm has no local member left.
    pub gone: bool,
    /// A WebTorrent swarm's counts after.
    pub counts: Counts,
}

/// Records an announce by `owner` as `a.peer_id`: adds the peer, or updates whether it seeds;
/// `completed` counts a download when it turns a leecher into a seeder.
fn wt_announce(w: &mut WtSwarm, a: WtAnnounce, owner: PeerId) -> Result<Counts, Taken> {
    let seeds = a.seeder || a.completed;
    match w.peers.get_mut(&a.peer_id) {
        Some(h) if h.owner != owner => return Err(Taken),
        Some(h) => {
            // A seeder stays one: `left` only shrinks, as in the reference.
            if seeds && !h.seeder {
                h.seeder = true;
                w.complete += 1;
                if a.completed {
                    w.downloaded += 1;
                }
            }
        }
        None => {
            w.peers.insert(
                a.peer_id,
                Holder {
                    owner,
                    seeder: seeds,
                },
            );
            if seeds {
                w.complete += 1;
            }
            if a.completed {
                w.downloaded += 1;
            }
        }
    }
    Ok(w.counts())
}

/// Up to `want` distinct members other than `me`, uniformly at random, without building a list
/// of candidates: sample indices of the set with `me`'s index skipped.
fn sample_except(members: &Members, me: PeerId, want: usize, rng: &mut impl Rng) -> Vec<PeerId> {
    let me_index = members.get_index_of(&me);
    let others = members.len() - usize::from(me_index.is_some());
    let k = want.min(others);
    if k == 0 {
        return Vec::new();
    }
    let pick = |i: usize| {
        let i = match me_index {
            Some(m) if i >= m => i + 1,
            _ => i,
        };
        members.get_index(i).copied()
    };
    if k == others {
        // All of them, in random order so that every joiner doesn't try the same peer first.
        let mut all: Vec<PeerId> = (0..others).filter_map(pick).collect();
        all.shuffle(rng);
        return all;
    }
    rand::seq::index::sample(rng, others, k)
        .into_iter()
        .filter_map(pick)
        .collect()
}

#[cfg(test)]
mod tests;
