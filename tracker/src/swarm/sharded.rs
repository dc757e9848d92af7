//! Maps keyed by swarm id, split into shards by a hash of the id, so operations on different
//! swarms don't contend for one lock.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

/// `T` (a map keyed by swarm id), sharded by a hash of the key.
pub struct BySwarm<T> {
    shards: Box<[Mutex<T>]>,
    hasher: RandomState,
}

impl<T: Default> BySwarm<T> {
    /// `shards` empty shards (at least 1).
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<T> BySwarm<T> {
    /// The shard that holds `swarm`, locked. Callers only make single-step updates under it,
    /// so a lock poisoned by a panic still guards a consistent map and is used as is.
    pub fn lock(&self, swarm: &str) -> MutexGuard<'_, T> {
        let i = (self.hasher.hash_one(swarm) as usize) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every shard in turn, locked (for periodic scans, not the message path).
    pub fn each(&self) -> impl Iterator<Item = MutexGuard<'_, T>> {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}
