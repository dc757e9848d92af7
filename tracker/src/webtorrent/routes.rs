//! Where answers to offers go when the swarm index can't tell.
//!
//! An answer names its offerer by WebTorrent `peer_id`. An offerer on this instance is found in
//! the swarm index; one on another instance, or one that has left, is known only from its
//! offer, which carried its server peer id: this connection remembers (swarm, `peer_id`) -> that
//! id for the last few offerers, so the answer goes straight back without asking Redis (and an
//! answer to an offerer that left is told so). With each offerer it keeps the offers it was
//! sent ([`Tally`]), so an answer to an offerer on another instance that names no such offer is
//! refused here, at once, as it would be on one instance.

/// An offerer.
#[derive(Debug)]
struct Route {
    swarm: SwarmId,
    peer_id: [u8; 20],
    from: PeerId,
    offers: Tally,
}

use std::collections::VecDeque;

use crate::connections::Tally;
use crate::swarm_key::SwarmId;
use swarmtrack_protocol::PeerId;

/// Offerers remembered per connection; an answer to an older one is refused as unknown.
const MAX_ROUTES: usize = 64;

/// Recently seen offerers of other instances.
#[derive(Debug, Default)]
pub struct Routes {
    list: VecDeque<Route>,
}

impl Routes {
    fn position(&self, swarm: SwarmId, peer_id: &[u8; 20]) -> Option<usize> {
        self.list
            .iter()
            .position(|r| r.swarm == swarm && r.peer_id == *peer_id)
    }

    /// Remembers that `peer_id` in `swarm` is connection `from`, which sent offer `offer` (an
    /// offer fingerprint).
    pub fn learn(&mut self, swarm: SwarmId, peer_id: [u8; 20], from: PeerId, offer: u32) {
        let mut route = match self.position(swarm, &peer_id) {
            Some(i) => self.list.remove(i).filter(|r| r.from == from),
            None => None,
        }
        .unwrap_or(Route {
            swarm,
            peer_id,
            from,
            offers: Tally::default(),
        });
        route.offers.add(offer);
        if self.list.len() >= MAX_ROUTES {
            self.list.pop_front();
        }
        self.list.push_back(route);
    }

    /// The connection of `peer_id` in `swarm`, if it offered here recently. An offerer on
    /// another instance must have sent offer `offer`, which the answer then takes; `None` if it
    /// didn't.
    pub fn answer(
        &mut self,
        swarm: SwarmId,
        peer_id: &[u8; 20],
        offer: u32,
        local: swarmtrack_protocol::InstanceId,
    ) -> Option<PeerId> {
        let i = self.position(swarm, peer_id)?;
        let route = self.list.get_mut(i)?;
        if route.from.instance() == local || route.offers.take(offer) {
            Some(route.from)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmtrack_protocol::InstanceId;

    const HERE: InstanceId = InstanceId(1);

    #[test]
    fn remembers_the_latest_offerers_and_their_offers() {
        let mut r = Routes::default();
        let conn = |n| PeerId::new(InstanceId(9), n, 1);
        for i in 0..100u8 {
            r.learn(SwarmId(1), [i; 20], conn(u32::from(i)), u32::from(i));
        }
        assert_eq!(
            r.answer(SwarmId(1), &[99; 20], 5, HERE),
            None,
            "not its offer"
        );
        assert_eq!(r.answer(SwarmId(1), &[99; 20], 99, HERE), Some(conn(99)));
        assert_eq!(r.answer(SwarmId(1), &[99; 20], 99, HERE), None, "answered");
        assert_eq!(r.answer(SwarmId(1), &[0; 20], 0, HERE), None, "forgotten");
        assert_eq!(
            r.answer(SwarmId(2), &[98; 20], 98, HERE),
            None,
            "other swarm"
        );
        r.learn(SwarmId(1), [98; 20], conn(7), 1);
        assert_eq!(
            r.answer(SwarmId(1), &[98; 20], 98, HERE),
            None,
            "a new connection"
        );
        assert_eq!(r.answer(SwarmId(1), &[98; 20], 1, HERE), Some(conn(7)));
        // An offerer of this instance is checked by its own record, not here.
        r.learn(SwarmId(1), [50; 20], PeerId::new(HERE, 1, 1), 3);
        assert!(r.answer(SwarmId(1), &[50; 20], 4, HERE).is_some());
    }
}
