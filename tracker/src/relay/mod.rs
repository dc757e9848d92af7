//! Getting a signal from one viewer to another.
//!
//! A signal for a viewer of this instance goes straight into the target's bounded outbox in
//! [`Connections`]. A signal for a viewer of another instance (its peer id names the instance)
//! goes to the Redis relay ([`remote`]), published in order in one lane per target instance
//! ([`lanes`]); a refusal there comes back to the sender as the same error it would get here.
//! On the embedded default there is no Redis, so such a target can't exist and the sender gets
//! `unknown_peer`. Sessions only call [`Relay::send`] either way.

pub mod codec;
mod lanes;
pub mod remote;

use std::sync::Arc;

use crate::connections::{Connections, DeliverError};
use crate::metrics::{DropReason, RelayPath, RemoteDrop, Shard};
use crate::signal::{Payload, Signal, SignalKind};
use crate::swarm::{Liveness, SwarmIndex};
use crate::swarm_key::WEBTORRENT_KEY_PREFIX;
use codec::parse_offer_sid;

pub use crate::signal::SendError;

/// Routes signals to their targets, here or on another instance.
pub struct Relay {
    connections: Arc<Connections>,
    remote: Option<remote::RemoteRelay>,
    /// The live instances: a signal to any other is refused before it is queued.
    live: Option<Arc<Liveness>>,
}

impl Relay {
    /// A relay for this instance's connections; `remote` reaches other instances, if configured.
    pub fn new(connections: Arc<Connections>, remote: Option<remote::RemoteRelay>) -> Self {
        Self {
            connections,
            remote,
            live: None,
        }
    }

    /// Refuses signals to instances `live` doesn't know as live (dead, or made up).
    pub fn with_liveness(mut self, live: Arc<Liveness>) -> Self {
        self.live = Some(live);
        self
    }

    /// Sends a signal towards its target without waiting; drops are counted in `metrics`.
    ///
    /// # Errors
    /// [`SendError`] when the signal is dropped.
    pub fn send(&self, signal: Signal, metrics: &Shard) -> Result<(), SendError> {
        let target = signal.to.instance();
        if target != self.connections.instance() {
            if self.live.as_ref().is_some_and(|l| !l.is_reachable(target)) {
                // A dead or invented instance: refused as one would refuse a gone viewer,
                // before it takes a slot in the queue or a publish.
                metrics.dropped(DropReason::UnknownPeer, 1);
                return Err(SendError::UnknownPeer);
            }
            return match &self.remote {
                Some(remote) => remote.send(signal),
                None => {
                    // No Redis on the embedded default: no such viewer can exist.
                    metrics.dropped(DropReason::UnknownPeer, 1);
                    Err(SendError::UnknownPeer)
                }
            };
        }
        deliver(&self.connections, signal, RelayPath::Local, metrics)
    }
}

/// Hands a signal to a connection of this instance, counting the outcome.
///
/// # Errors
/// [`SendError`] when the signal is dropped.
pub fn deliver(
    connections: &Connections,
    signal: Signal,
    path: RelayPath,
    metrics: &Shard,
) -> Result<(), SendError> {
    let kind = signal.kind;
    let size = signal.footprint();
    match connections.deliver(signal) {
        Ok(evicted) => {
            metrics.relayed(kind, path);
            if let Some(offer) = evicted {
                metrics.dropped(DropReason::QueueFull, 1);
                metrics.dropped_bytes(DropReason::QueueFull, offer.footprint() as u64);
                connections.forget_offer(&offer);
            }
            Ok(())
        }
        Err(e) => {
            let (reason, err) = match e {
                DeliverError::UnknownPeer => (DropReason::UnknownPeer, SendError::UnknownPeer),
                DeliverError::NotInSwarm => (DropReason::TargetNotInSwarm, SendError::UnknownPeer),
                DeliverError::Full => (DropReason::QueueFull, SendError::Overloaded),
                DeliverError::UnexpectedAnswer => {
                    (DropReason::UnexpectedAnswer, SendError::UnexpectedAnswer)
                }
            };
            metrics.dropped(reason, 1);
            if reason == DropReason::QueueFull {
                metrics.dropped_bytes(reason, size as u64);
            }
            Err(err)
        }
    }
}

/// What the relay delivers to: this instance's swarms and connections.
#[derive(Clone)]
pub struct Local {
    /// To find a signal's swarm by its key.
    pub index: Arc<SwarmIndex>,
    /// The targets.
    pub connections: Arc<Connections>,
    /// A batch that opened under the fleet key proves its sending instance alive.
    pub live: Arc<Liveness>,
}

impl Local {
    /// Hands a refusal to its addressee, a sender of this instance, the way a refusal on this
    /// instance reaches it: a native sender gets an `error` with the `sid` (through its
    /// outbox); a WebTorrent answerer a `failure reason`; a WebTorrent offerer gets nothing,
    /// but its offer no longer awaits an answer. Counted when the sender is gone.
    pub fn return_refusal(&self, mut refusal: Signal, metrics: &Shard) {
        let Payload::Refused(r) = &refusal.payload else {
            return;
        };
        let forget = (refusal.kind == SignalKind::Offer
            && r.swarm_key.starts_with(WEBTORRENT_KEY_PREFIX))
        .then(|| parse_offer_sid(r.sid.as_bytes()))
        .flatten();
        if let Some((offer_id, _)) = forget {
            let connections = &self.connections;
            let awaited = (
                connections.peer_fingerprint(refusal.from),
                connections.offer_fingerprint(&offer_id),
            );
            connections.forget_answers(refusal.to, &[awaited]);
            return;
        }
        if refusal.swarm.0 == 0 {
            // From another instance: find the swarm by its key.
            let Some(id) = self.index.id_of(&r.swarm_key) else {
                metrics.remote_dropped(RemoteDrop::RefusalUndelivered, 1);
                return;
            };
            refusal.swarm = id;
        }
        // Gone, left the swarm, or its outbox full (its session is not keeping up either).
        if self.connections.deliver(refusal).is_err() {
            metrics.remote_dropped(RemoteDrop::RefusalUndelivered, 1);
        }
    }
}
