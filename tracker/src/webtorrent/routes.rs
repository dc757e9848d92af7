//! Where answers to offers go when the swarm index can't tell.
//!
//! An answer names its offerer by WebTorrent `peer_id`. An offerer on this instance is found in
//! the swarm index; one on another instance, or one that has left, is known only from its
//! offer, which carried its server peer id: this connection remembers (swarm, `peer_id`) -> that
//! id for the last few offerers, so the answer goes straight back without asking Redis (and an
//! answer to an offerer that left is told so).

use std::collections::VecDeque;

use crate::swarm_key::SwarmId;
use swarmtrack_protocol::PeerId;

/// Offerers remembered per connection; an answer to an older one is refused as unknown.
const MAX_ROUTES: usize = 64;

/// Recently seen offerers of other instances.
#[derive(Debug, Default)]
pub struct Routes {
    list: VecDeque<(SwarmId, [u8; 20], PeerId)>,
}

impl Routes {
    /// Remembers that `peer_id` in `swarm` is connection `from`.
    pub fn learn(&mut self, swarm: SwarmId, peer_id: [u8; 20], from: PeerId) {
        if let Some(i) = self
            .list
            .iter()
            .position(|(s, p, _)| *s == swarm && *p == peer_id)
        {
            self.list.remove(i);
        }
        if self.list.len() >= MAX_ROUTES {
            self.list.pop_front();
        }
        self.list.push_back((swarm, peer_id, from));
    }

    /// The connection of `peer_id` in `swarm`, if it offered here recently.
    pub fn find(&self, swarm: SwarmId, peer_id: &[u8; 20]) -> Option<PeerId> {
        self.list
            .iter()
            .rev()
            .find(|(s, p, _)| *s == swarm && p == peer_id)
            .map(|(_, _, from)| *from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmtrack_protocol::InstanceId;

    #[test]
    fn remembers_the_latest_offerers() {
        let mut r = Routes::default();
        let conn = |n| PeerId::new(InstanceId(9), n, 1);
        for i in 0..100u8 {
            r.learn(SwarmId(1), [i; 20], conn(u32::from(i)));
        }
        assert_eq!(r.find(SwarmId(1), &[99; 20]), Some(conn(99)));
        assert_eq!(r.find(SwarmId(1), &[0; 20]), None, "forgotten");
        assert_eq!(r.find(SwarmId(2), &[99; 20]), None, "other swarm");
        r.learn(SwarmId(1), [99; 20], conn(7));
        assert_eq!(r.find(SwarmId(1), &[99; 20]), Some(conn(7)));
    }
}
