//! This instance's swarms: swarm id -> local members, sharded by a hash of the id so joins in
//! different swarms don't contend, with uniform sampling that never copies a member set.

use std::collections::HashMap;
use std::hash::RandomState;
use std::sync::{Arc, MutexGuard};

use indexmap::IndexSet;
use rand::Rng;
use rand::seq::SliceRandom;

use super::BySwarm;
use crate::protocol::PeerId;

type Members = IndexSet<PeerId, RandomState>;

/// One shard: swarm id -> its local members.
type Shard = HashMap<Arc<str>, Members>;

/// This instance's swarms and their local members.
pub struct SwarmIndex {
    shards: BySwarm<Shard>,
}

/// The result of adding a viewer to a swarm.
#[derive(Debug)]
pub struct Joined {
    /// The swarm id, shared with the index (sessions keep this copy).
    pub swarm: Arc<str>,
    /// Other members to offer to, at most `want`, never the viewer itself.
    pub peers: Vec<PeerId>,
    /// False when the viewer was already a member (a re-join just samples again).
    pub new_member: bool,
    /// True when this join created the swarm on this instance.
    pub new_swarm: bool,
}

impl SwarmIndex {
    /// An empty index with `shards` shards (at least 1).
    pub fn new(shards: usize) -> Self {
        Self {
            shards: BySwarm::new(shards),
        }
    }

    // Every mutation below is a single map or set operation.
    fn shard(&self, swarm: &str) -> MutexGuard<'_, Shard> {
        self.shards.lock(swarm)
    }

    /// Adds `peer` to `swarm` and samples up to `want` other members, uniformly at random.
    ///
    /// `on_new_member` runs under the shard lock when `peer` wasn't a member yet, so whatever it
    /// records (the peer table's swarm list) is in place before anyone can sample `peer`.
    pub fn join(
        &self,
        swarm: &str,
        peer: PeerId,
        want: usize,
        rng: &mut impl Rng,
        on_new_member: impl FnOnce(&Arc<str>),
    ) -> Joined {
        let mut shard = self.shard(swarm);
        let (swarm, members, new_swarm) = match shard.get_key_value(swarm) {
            Some((k, _)) => {
                let k = k.clone();
                let members = shard.get_mut(&*k);
                (k, members, false)
            }
            None => {
                let k: Arc<str> = swarm.into();
                shard.insert(k.clone(), Members::default());
                let members = shard.get_mut(&*k);
                (k, members, true)
            }
        };
        let Some(members) = members else {
            // Unreachable: the entry was found or inserted above under the same lock.
            return Joined {
                swarm,
                peers: Vec::new(),
                new_member: false,
                new_swarm,
            };
        };
        let peers = sample_except(members, peer, want, rng);
        let new_member = !members.contains(&peer);
        if new_member {
            // Lock order is always swarm shard, then peer-table shard; nothing takes them the
            // other way round.
            on_new_member(&swarm);
            members.insert(peer);
        }
        Joined {
            swarm,
            peers,
            new_member,
            new_swarm,
        }
    }

    /// Removes `peer` from `swarm`; returns (was a member, swarm now gone).
    pub fn leave(&self, swarm: &str, peer: PeerId) -> (bool, bool) {
        let mut shard = self.shard(swarm);
        let Some(members) = shard.get_mut(swarm) else {
            return (false, false);
        };
        let removed = members.swap_remove(&peer);
        if members.is_empty() {
            shard.remove(swarm);
            return (removed, true);
        }
        (removed, false)
    }

    /// Local members of a swarm (for tests and diagnostics).
    pub fn members(&self, swarm: &str) -> Vec<PeerId> {
        self.shard(swarm)
            .get(swarm)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Up to `want` distinct members other than `me`, uniformly at random, without building a list
/// of candidates: sample indices of the set with `me`'s index skipped.
fn sample_except(members: &Members, me: PeerId, want: usize, rng: &mut impl Rng) -> Vec<PeerId> {
    let me_index = members.get_index_of(&me);
    let others = members.len() - usize::from(me_index.is_some());
    let k = want.min(others);
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

impl SwarmIndex {
    /// Every (swarm, member) pair, for refreshing the global membership; takes each shard lock
    /// in turn, so not for the message path.
    pub fn memberships(&self) -> Vec<(Arc<str>, PeerId)> {
        let mut out = Vec::new();
        for shard in self.shards.each() {
            for (swarm, members) in shard.iter() {
                out.extend(members.iter().map(|m| (Arc::clone(swarm), *m)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::InstanceId;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn ids(n: u32) -> Vec<PeerId> {
        (0..n)
            .map(|i| PeerId::new(InstanceId(1), i, u64::from(i)))
            .collect()
    }

    #[test]
    fn join_samples_others_never_self() {
        let index = SwarmIndex::new(4);
        let mut rng = rand::rng();
        let p = ids(5);
        assert!(index.join("v", p[0], 3, &mut rng, |_| {}).peers.is_empty());
        let j = index.join("v", p[1], 3, &mut rng, |_| {});
        assert_eq!(j.peers, vec![p[0]]);
        for &q in &p[2..] {
            index.join("v", q, 3, &mut rng, |_| {});
        }
        for _ in 0..50 {
            let again = index.join("v", p[2], 3, &mut rng, |_| {});
            assert!(!again.new_member);
            assert_eq!(again.peers.len(), 3);
            assert!(!again.peers.contains(&p[2]));
            let distinct: HashSet<_> = again.peers.iter().collect();
            assert_eq!(distinct.len(), 3);
        }
    }

    #[test]
    fn leave_removes_from_pairing_and_drops_empty_swarms() {
        let index = SwarmIndex::new(1);
        let mut rng = rand::rng();
        let p = ids(2);
        assert!(index.join("v", p[0], 5, &mut rng, |_| {}).new_swarm);
        index.join("v", p[1], 5, &mut rng, |_| {});
        assert_eq!(index.leave("v", p[0]), (true, false));
        assert_eq!(index.leave("v", p[0]), (false, false));
        assert!(index.join("w", p[0], 5, &mut rng, |_| {}).peers.is_empty());
        assert_eq!(index.leave("v", p[1]), (true, true));
        assert!(index.members("v").is_empty());
    }

    #[test]
    fn sampling_is_roughly_uniform() {
        let index = SwarmIndex::new(1);
        let mut rng = rand::rng();
        let p = ids(10);
        for &q in &p {
            index.join("v", q, 1, &mut rng, |_| {});
        }
        let mut counts = HashMap::new();
        for _ in 0..9_000 {
            for q in index.join("v", p[0], 1, &mut rng, |_| {}).peers {
                *counts.entry(q).or_insert(0u32) += 1;
            }
        }
        assert!(!counts.contains_key(&p[0]));
        assert_eq!(counts.len(), 9);
        // Each of 9 peers expects 1,000 picks; 700 is more than 9 standard deviations away.
        assert!(counts.values().all(|&c| c > 700), "{counts:?}");
    }

    proptest! {
        #[test]
        fn sample_is_distinct_bounded_and_excludes_self(n in 0u32..40, me in 0u32..45, want in 0usize..50) {
            let mut members = Members::default();
            for id in ids(n) { members.insert(id); }
            let me = PeerId::new(InstanceId(1), me, u64::from(me));
            let got = sample_except(&members, me, want, &mut rand::rng());
            let others = members.iter().filter(|&&m| m != me).count();
            prop_assert_eq!(got.len(), want.min(others));
            prop_assert!(!got.contains(&me));
            let distinct: HashSet<_> = got.iter().collect();
            prop_assert_eq!(distinct.len(), got.len());
            prop_assert!(got.iter().all(|g| members.contains(g)));
        }
    }
}
