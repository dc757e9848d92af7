//! The offers one connection was sent and may still answer.
//!
//! An answer is forwarded only if its offer was delivered to the answerer and hasn't expired:
//! the answerer's own session holds that record, so checking an answer, and routing it back to
//! the offerer's instance, needs no shared table and no Redis look-up. Bounded: beyond
//! `max` the oldest offer is forgotten (its answer would then be refused).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::id::Id20;
use crate::protocol::PeerId;

struct Pending {
    offer_id: Id20,
    offerer: Id20,
    /// The offerer's connection, to route the answer to.
    from: PeerId,
    swarm: Arc<str>,
    expires: Instant,
}

/// Offers delivered to this connection, oldest first.
#[derive(Default)]
pub struct PendingOffers {
    // Ordered by delivery, and so by expiry: every offer lives the same TTL.
    list: VecDeque<Pending>,
}

/// Where an answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRoute {
    /// The offerer's connection.
    pub to: PeerId,
    /// The swarm, as the relay names it.
    pub swarm: Arc<str>,
}

impl PendingOffers {
    fn expire(&mut self, now: Instant) {
        while self.list.front().is_some_and(|p| p.expires <= now) {
            self.list.pop_front();
        }
        if self.list.is_empty() && self.list.capacity() > 4 {
            // A burst of offers shouldn't pin its buffer for the connection's life.
            self.list.shrink_to(4);
        }
    }

    /// Records an offer delivered now; it may be answered until `expires`.
    pub fn record(
        &mut self,
        (offer_id, offerer): (Id20, Id20),
        from: PeerId,
        swarm: Arc<str>,
        (now, expires): (Instant, Instant),
        max: usize,
    ) {
        self.expire(now);
        // The same offer twice (a resent announce) keeps one record, the newest.
        self.list
            .retain(|p| !(p.offer_id == offer_id && p.offerer == offerer));
        while self.list.len() >= max.max(1) {
            self.list.pop_front();
        }
        self.list.push_back(Pending {
            offer_id,
            offerer,
            from,
            swarm,
            expires,
        });
    }

    /// Takes the record of `offer_id` from `offerer` in `swarm`, if it was delivered here and
    /// hasn't expired: one answer per offer.
    pub fn take(
        &mut self,
        offer_id: &Id20,
        offerer: &Id20,
        swarm: &str,
        now: Instant,
    ) -> Option<AnswerRoute> {
        self.expire(now);
        let i = self
            .list
            .iter()
            .position(|p| p.offer_id == *offer_id && p.offerer == *offerer && &*p.swarm == swarm)?;
        let p = self.list.remove(i)?;
        Some(AnswerRoute {
            to: p.from,
            swarm: p.swarm,
        })
    }

    /// Offers held.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when no offer is held.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::InstanceId;
    use std::time::Duration;

    #[test]
    fn answers_match_one_live_offer() {
        let mut p = PendingOffers::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(120);
        let from = PeerId::new(InstanceId(7), 1, 1);
        let swarm: Arc<str> = "wt\u{1f}aa".into();
        let (o1, o2, alice) = (Id20([1; 20]), Id20([2; 20]), Id20([9; 20]));
        p.record((o1, alice), from, Arc::clone(&swarm), (now, now + ttl), 8);
        p.record((o2, alice), from, Arc::clone(&swarm), (now, now + ttl), 8);
        // Wrong offerer, wrong swarm: no.
        assert_eq!(p.take(&o1, &Id20([8; 20]), &swarm, now), None);
        assert_eq!(p.take(&o1, &alice, "wt\u{1f}bb", now), None);
        let route = p.take(&o1, &alice, &swarm, now).expect("delivered");
        assert_eq!(route.to, from);
        // One answer per offer.
        assert_eq!(p.take(&o1, &alice, &swarm, now), None);
        // Expired.
        assert_eq!(p.take(&o2, &alice, &swarm, now + ttl), None);
        assert!(p.is_empty());
    }

    #[test]
    fn bounded_oldest_first() {
        let mut p = PendingOffers::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let from = PeerId::new(InstanceId(7), 1, 1);
        let swarm: Arc<str> = "s".into();
        for i in 0..5u8 {
            p.record(
                (Id20([i; 20]), Id20([0; 20])),
                from,
                Arc::clone(&swarm),
                (now, later),
                3,
            );
        }
        assert_eq!(p.len(), 3);
        assert!(p.take(&Id20([1; 20]), &Id20([0; 20]), "s", now).is_none());
        assert!(p.take(&Id20([4; 20]), &Id20([0; 20]), "s", now).is_some());
    }
}
