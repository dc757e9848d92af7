//! [`ViewerSwarms`]: the swarms one viewer is in, as its session holds them.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use crate::swarm_key::SwarmId;

/// Up to this many swarms a scan beats a hash map.
const SMALL: usize = 8;

/// One of the viewer's swarms.
#[derive(Debug, Clone)]
pub struct Member {
    /// The swarm.
    pub id: SwarmId,
    /// Its key.
    pub key: Arc<str>,
    /// What a WebTorrent announce recorded.
    pub wt: Option<WtMember>,
}

/// A WebTorrent peer's record in one swarm.
#[derive(Debug, Clone, Copy)]
pub struct WtMember {
    /// The `peer_id` announced.
    pub peer_id: [u8; 20],
    /// The last announce.
    pub last_announce: Instant,
}

/// The swarms one viewer is in, by key; changed only by [`super::Membership`].
#[derive(Debug, Default)]
pub struct ViewerSwarms {
    list: Vec<Member>,
    /// Key -> index in `list`, once there are more than [`SMALL`].
    by_key: Option<HashMap<Arc<str>, usize>>,
}

impl ViewerSwarms {
    /// Swarms joined.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when in no swarm.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The viewer's record of swarm `key`.
    pub fn get(&self, key: &str) -> Option<&Member> {
        self.list.get(self.position(key)?)
    }

    /// Every swarm.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.list.iter()
    }

    /// Where swarm `key` is in the list.
    pub fn position(&self, key: &str) -> Option<usize> {
        match &self.by_key {
            Some(map) => map.get(key).copied(),
            None => self.list.iter().position(|m| &*m.key == key),
        }
    }

    pub(super) fn push(&mut self, member: Member) {
        if let Some(map) = &mut self.by_key {
            map.insert(Arc::clone(&member.key), self.list.len());
        }
        // Most viewers are in one swarm: don't let the first push reserve four.
        self.list.reserve_exact(1);
        self.list.push(member);
        if self.by_key.is_none() && self.list.len() > SMALL {
            let map = self
                .list
                .iter()
                .enumerate()
                .map(|(i, m)| (Arc::clone(&m.key), i))
                .collect();
            self.by_key = Some(map);
        }
    }

    pub(super) fn touch(&mut self, i: usize, now: Option<Instant>) {
        if let (Some(m), Some(now)) = (self.list.get_mut(i), now)
            && let Some(wt) = &mut m.wt
        {
            wt.last_announce = now;
        }
    }

    pub(super) fn swap_remove(&mut self, i: usize) -> Option<Member> {
        if i >= self.list.len() {
            return None;
        }
        let m = self.list.swap_remove(i);
        if let Some(map) = &mut self.by_key {
            map.remove(&m.key);
            if let Some(moved) = self.list.get(i) {
                map.insert(Arc::clone(&moved.key), i);
            }
            if self.list.len() <= SMALL / 2 {
                self.by_key = None;
            }
        }
        if self.list.is_empty() {
            self.list = Vec::new();
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: u64) -> Member {
        Member {
            id: SwarmId(i),
            key: format!("s{i}").into(),
            wt: None,
        }
    }

    #[test]
    fn finds_by_key_small_and_large() {
        let mut v = ViewerSwarms::default();
        for i in 0..40 {
            v.push(member(i));
        }
        assert!(v.by_key.is_some());
        assert!((0..40).all(|i| v.get(&format!("s{i}")).map(|m| m.id) == Some(SwarmId(i))));
        for i in (0..38).rev() {
            let at = v.position(&format!("s{i}")).expect("present");
            assert_eq!(v.swap_remove(at).map(|m| m.id), Some(SwarmId(i)));
        }
        assert!(v.by_key.is_none());
        assert_eq!(v.len(), 2);
        assert_eq!(v.get("s39").map(|m| m.id), Some(SwarmId(39)));
        assert!(v.get("s0").is_none());
    }
}
