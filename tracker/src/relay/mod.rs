//! Getting a signal from one viewer to another.
//!
//! A signal for a viewer of this instance goes straight into the target's bounded outbox in
//! [`Connections`]. A signal for a viewer of another instance (its peer id names the instance)
//! goes to the Redis relay ([`remote`]), batched per target instance; on the embedded default
//! there is no Redis, so such a target can't exist and the sender gets `unknown_peer`. Sessions
//! only call [`Relay::send`] either way.

pub mod codec;
pub mod remote;

use std::sync::Arc;

use crate::connections::{Connections, DeliverError};
use crate::metrics::{DropReason, RelayPath, Shard};
use crate::signal::Signal;

/// Why a signal could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The target is gone, never existed, or is not in that swarm.
    #[error("target peer is gone or not in that swarm")]
    UnknownPeer,
    /// The target can't keep up; the signal was dropped.
    #[error("target peer is not keeping up")]
    Overloaded,
    /// A WebTorrent answer to an offer the target didn't send to the answerer, or that expired.
    #[error("no such offer awaits an answer")]
    UnexpectedAnswer,
}

/// Routes signals to their targets, here or on another instance.
pub struct Relay {
    connections: Arc<Connections>,
    remote: Option<remote::RemoteRelay>,
}

impl Relay {
    /// A relay for this instance's connections; `remote` reaches other instances, if configured.
    pub fn new(connections: Arc<Connections>, remote: Option<remote::RemoteRelay>) -> Self {
        Self {
            connections,
            remote,
        }
    }

    /// Sends a signal towards its target without waiting; drops are counted in `metrics`.
    ///
    /// # Errors
    /// [`SendError`] when the signal is dropped.
    pub fn send(&self, signal: Signal, metrics: &Shard) -> Result<(), SendError> {
        if signal.to.instance() != self.connections.instance() {
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
