//! Swarm membership and pairing: the one owner of who is in which swarm.
//!
//! A membership is recorded in four places, each for a reason, and only [`Membership`] changes
//! any of them, in one call:
//! - the swarm index ([`SwarmIndex`]): swarm -> local members, for sampling peers;
//! - the viewer's own list ([`ViewerSwarms`], held by its session): its swarms by key, for the
//!   check that a sender is in the swarm it signals in, for its per-connection limit, and to
//!   leave everything when it goes;
//! - its entry in [`Connections`]: the swarm ids, for the check that a target is in the swarm
//!   of a signal delivered to it;
//! - with Redis, the fleet's directory ([`Directory`]), so other instances pair with it.
//!
//! Pairing is local first (that signaling never leaves the instance), then remote, with at
//! most one Redis round trip per new membership and none for a re-join.

mod directory;
mod liveness;

mod index;
mod sharded;
mod viewer;

use std::sync::Arc;

use tokio::time::Instant;

pub use directory::{Directory, DirectoryParts};
pub use index::{Counts, SwarmIndex, Taken, WtAnnounce};
pub use liveness::Liveness;
pub use sharded::BySwarm;
pub use viewer::{Member, ViewerSwarms, WtMember};

use crate::connections::Connections;
use crate::metrics::Shard;
use crate::swarm_key::SwarmId;
use swarmtrack_protocol::PeerId;

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The viewer is in as many swarms as allowed.
    #[error("in too many swarms")]
    SwarmLimit,
    /// Another connection holds that WebTorrent `peer_id` in the swarm.
    #[error("peer_id is in use by another connection in this swarm")]
    PeerIdTaken,
}

/// What a join asks for.
#[derive(Debug, Clone, Copy)]
pub struct JoinRequest<'a> {
    /// The swarm key.
    pub key: &'a str,
    /// Peers wanted.
    pub want: u32,
    /// Swarms this viewer may be in at most.
    pub max_swarms: usize,
    /// A WebTorrent announce: its `peer_id`, seeding and completion.
    pub wt: Option<WtJoin>,
    /// Register a new member in Redis before returning (see [`Membership::join`]).
    pub register_now: bool,
}

/// A WebTorrent announce's part of a join.
#[derive(Debug, Clone, Copy)]
pub struct WtJoin {
    /// The announced `peer_id`, seeding and completion.
    pub announce: WtAnnounce,
    /// When it was announced.
    pub now: Instant,
}

/// The result of a join.
#[derive(Debug)]
pub struct Joined {
    /// The swarm.
    pub id: SwarmId,
    /// The swarm key, shared with the index.
    pub key: Arc<str>,
    /// Peers to offer to: local ones first, then members of other instances.
    pub peers: Vec<PeerId>,
    /// A WebTorrent swarm's counts after the announce.
    pub counts: Counts,
}

/// Swarm membership as sessions see it.
pub struct Membership {
    index: Arc<SwarmIndex>,
    connections: Arc<Connections>,
    directory: Option<Directory>,
}

impl Membership {
    /// Membership over this instance's connections and swarm index; `directory` is the fleet's
    /// membership in Redis, if configured.
    pub fn new(
        index: Arc<SwarmIndex>,
        connections: Arc<Connections>,
        directory: Option<Directory>,
    ) -> Self {
        Self {
            index,
            connections,
            directory,
        }
    }

    /// Adds the viewer to a swarm and returns peers to offer to: local ones first, then, if
    /// fewer than `want`, live members on other instances. A new member that needs remote
    /// peers registers and samples in one Redis round trip; one whose peers are all local
    /// reaches Redis a moment later, through the directory's writer, unless `register_now`:
    /// then it is in Redis when this returns, so the next pairing anywhere in the fleet finds
    /// it (a WebTorrent client takes its announce reply to mean "I am in the swarm"; the extra
    /// round trip is paid once per swarm joined, not per announce). A re-join of a swarm
    /// already joined costs no Redis command: its remote peers come from the directory's last
    /// sample of the swarm.
    ///
    /// # Errors
    /// [`JoinError`]; nothing changed.
    pub async fn join(
        &self,
        viewer: &mut ViewerSwarms,
        peer: PeerId,
        req: JoinRequest<'_>,
        metrics: &Shard,
    ) -> Result<Joined, JoinError> {
        let known = viewer.position(req.key);
        if known.is_none() && viewer.len() >= req.max_swarms {
            return Err(JoinError::SwarmLimit);
        }
        let want = req.want as usize;
        let connections = &self.connections;
        let (local, counts) = self
            .index
            .join(
                req.key,
                peer,
                want,
                req.wt.map(|w| w.announce),
                &mut rand::rng(),
                |id| connections.add_swarm(peer, id),
            )
            .map_err(|Taken| JoinError::PeerIdTaken)?;
        if local.new_member {
            metrics.memberships(1);
        }
        if local.new_swarm {
            metrics.swarms(1);
        }
        match known {
            Some(i) => viewer.touch(i, req.wt.map(|w| w.now)),
            None => viewer.push(Member {
                id: local.id,
                key: Arc::clone(&local.key),
                wt: req.wt.map(|w| WtMember {
                    peer_id: w.announce.peer_id,
                    last_announce: w.now,
                }),
            }),
        }
        let mut peers = local.peers;
        if let Some(directory) = &self.directory {
            let missing = want.saturating_sub(peers.len());
            if local.new_member && (missing > 0 || req.register_now) {
                // Registers the viewer and samples, in one round trip.
                peers.extend(directory.join(&local.key, peer, missing).await);
            } else {
                if local.new_member {
                    directory.add(Arc::clone(&local.key), peer);
                }
                peers.extend(directory.cached(&local.key, peer, missing));
            }
        }
        Ok(Joined {
            id: local.id,
            key: local.key,
            peers,
            counts,
        })
    }

    /// Removes the viewer from swarm `key`; `None` if it wasn't a member, else the WebTorrent
    /// counts after.
    pub fn leave(
        &self,
        viewer: &mut ViewerSwarms,
        peer: PeerId,
        key: &str,
        metrics: &Shard,
    ) -> Option<Counts> {
        let i = viewer.position(key)?;
        Some(self.leave_at(viewer, peer, i, metrics))
    }

    /// Removes the viewer from its `i`th swarm; returns the WebTorrent counts after.
    pub fn leave_at(
        &self,
        viewer: &mut ViewerSwarms,
        peer: PeerId,
        i: usize,
        metrics: &Shard,
    ) -> Counts {
        let Some(member) = viewer.swap_remove(i) else {
            return Counts::default();
        };
        let left = self
            .index
            .leave(&member.key, peer, member.wt.map(|w| w.peer_id));
        if left.removed {
            self.connections.remove_swarm(peer, member.id);
            metrics.memberships(-1);
            if let Some(directory) = &self.directory {
                directory.remove(Arc::clone(&member.key), peer, left.gone);
            }
        }
        if left.gone {
            metrics.swarms(-1);
        }
        left.counts
    }

    /// Leaves every swarm: the viewer is gone.
    pub fn leave_all(&self, viewer: &mut ViewerSwarms, peer: PeerId, metrics: &Shard) {
        while !viewer.is_empty() {
            self.leave_at(viewer, peer, viewer.len() - 1, metrics);
        }
    }

    /// The connection that holds WebTorrent `peer_id` in swarm `key` on this instance.
    pub fn owner_of(&self, key: &str, peer_id: &[u8; 20]) -> Option<(SwarmId, PeerId)> {
        self.index.owner_of(key, peer_id)
    }

    /// A WebTorrent swarm's counts on this instance.
    pub fn counts(&self, key: &str) -> Counts {
        self.index.counts(key)
    }
}
