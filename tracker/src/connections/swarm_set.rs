//! The swarms one connection is in, as a set of [`SwarmId`]s: checked on every delivery, so
//! membership costs O(1) per relayed signal however many swarms a connection is in.

use std::collections::HashSet;

use crate::swarm_key::SwarmId;

/// Up to this many ids a scan of a small array beats hashing.
const SMALL: usize = 8;

/// A set of swarm ids: an array while small, a hash set beyond [`SMALL`].
#[derive(Debug, Default)]
pub enum SwarmSet {
    /// Few swarms (the usual case: a player watches one video).
    #[default]
    Empty,
    /// Up to [`SMALL`] ids.
    Small(Vec<SwarmId>),
    /// More.
    Large(HashSet<SwarmId>),
}

impl SwarmSet {
    /// Adds `id`.
    pub fn insert(&mut self, id: SwarmId) {
        match self {
            SwarmSet::Empty => {
                // vec! allocates exactly one slot: most viewers are in one swarm.
                *self = SwarmSet::Small(vec![id]);
            }
            SwarmSet::Small(v) if v.contains(&id) => {}
            SwarmSet::Small(v) if v.len() < SMALL => v.push(id),
            SwarmSet::Small(v) => {
                let mut set: HashSet<SwarmId> = v.drain(..).collect();
                set.insert(id);
                *self = SwarmSet::Large(set);
            }
            SwarmSet::Large(set) => {
                set.insert(id);
            }
        }
    }

    /// Removes `id`.
    pub fn remove(&mut self, id: SwarmId) {
        match self {
            SwarmSet::Empty => {}
            SwarmSet::Small(v) => {
                v.retain(|&s| s != id);
                if v.is_empty() {
                    *self = SwarmSet::Empty;
                }
            }
            SwarmSet::Large(set) => {
                set.remove(&id);
                if set.len() <= SMALL / 2 {
                    *self = SwarmSet::Small(set.drain().collect());
                }
            }
        }
    }

    /// True when `id` is in the set.
    pub fn contains(&self, id: SwarmId) -> bool {
        match self {
            SwarmSet::Empty => false,
            SwarmSet::Small(v) => v.contains(&id),
            SwarmSet::Large(set) => set.contains(&id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks_between_representations() {
        let mut s = SwarmSet::default();
        for i in 0..100 {
            s.insert(SwarmId(i));
            s.insert(SwarmId(i));
        }
        assert!(matches!(s, SwarmSet::Large(ref h) if h.len() == 100));
        assert!((0..100).all(|i| s.contains(SwarmId(i))));
        assert!(!s.contains(SwarmId(100)));
        for i in 0..98 {
            s.remove(SwarmId(i));
        }
        assert!(matches!(s, SwarmSet::Small(ref v) if v.len() == 2));
        assert!(s.contains(SwarmId(99)) && !s.contains(SwarmId(0)));
        s.remove(SwarmId(98));
        s.remove(SwarmId(99));
        assert!(matches!(s, SwarmSet::Empty));
    }
}
