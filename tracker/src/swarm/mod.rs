//! Swarm membership and pairing.
//!
//! [`SwarmIndex`] holds this instance's swarms. [`Directory`] holds the fleet's, in Redis.
//! [`Membership`] is what sessions call: it keeps the index, the peer table's per-viewer swarm
//! lists and the directory in step, and pairs local peers first (their signaling never leaves
//! the instance), then remote ones, with at most one Redis round trip per join.

mod directory;
mod index;
mod sharded;

use std::sync::Arc;

pub use directory::Directory;
pub use index::{Joined, SwarmIndex};
pub use sharded::BySwarm;

use crate::metrics::Metrics;
use crate::protocol::PeerId;
use crate::relay::PeerTable;

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The viewer is in as many swarms as allowed.
    #[error("in too many swarms")]
    SwarmLimit,
}

/// Swarm membership as sessions see it.
pub struct Membership {
    index: Arc<SwarmIndex>,
    peers: Arc<PeerTable>,
    directory: Option<Directory>,
    metrics: Arc<Metrics>,
}

impl Membership {
    /// Membership over this instance's peer table and swarm index; `directory` is the fleet's
    /// membership in Redis, if configured.
    pub fn new(
        index: Arc<SwarmIndex>,
        peers: Arc<PeerTable>,
        directory: Option<Directory>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            index,
            peers,
            directory,
            metrics,
        }
    }

    /// Adds the viewer to a swarm and returns peers to offer to: local ones first, then, if
    /// fewer than `want`, members on other instances. When local peers suffice, a new member
    /// reaches Redis a moment later, through the writer.
    pub async fn join(&self, peer: PeerId, swarm: &str, want: u32) -> Joined {
        self.join_inner(peer, swarm, want, false).await
    }

    /// Like [`Membership::join`], but a new member is in Redis when this returns, so the next
    /// pairing anywhere in the fleet finds it. A WebTorrent client takes its announce reply to
    /// mean "I am in the swarm" and may announce without offers, waiting for others' offers;
    /// the one extra round trip is paid once per swarm joined, not per announce.
    pub async fn join_registered(&self, peer: PeerId, swarm: &str, want: u32) -> Joined {
        self.join_inner(peer, swarm, want, true).await
    }

    async fn join_inner(&self, peer: PeerId, swarm: &str, want: u32, register_now: bool) -> Joined {
        let want = want as usize;
        let mut joined = self
            .index
            .join(swarm, peer, want, &mut rand::rng(), |swarm| {
                self.peers.add_swarm(peer, Arc::clone(swarm));
            });
        if joined.new_member {
            self.metrics.memberships.increment(1.0);
        }
        if joined.new_swarm {
            self.metrics.swarms.increment(1.0);
        }
        if let Some(directory) = &self.directory {
            let missing = want.saturating_sub(joined.peers.len());
            if missing > 0 || (register_now && joined.new_member) {
                // Registers the viewer and samples, in one round trip.
                let remote = directory.join(&joined.swarm, peer, missing).await;
                joined.peers.extend(remote);
            } else if joined.new_member {
                directory.add(Arc::clone(&joined.swarm), peer);
            }
        }
        joined
    }

    /// Removes the viewer from a swarm; false if it wasn't a member.
    pub fn leave(&self, peer: PeerId, swarm: &str) -> bool {
        let (removed, gone) = self.index.leave(swarm, peer);
        if removed {
            self.peers.remove_swarm(peer, swarm);
            self.metrics.memberships.decrement(1.0);
            if let Some(directory) = &self.directory {
                directory.remove(Arc::from(swarm), peer);
            }
        }
        if gone {
            self.metrics.swarms.decrement(1.0);
        }
        removed
    }

    /// Local members of a swarm (for tests and diagnostics).
    pub fn local_members(&self, swarm: &str) -> Vec<PeerId> {
        self.index.members(swarm)
    }
}
