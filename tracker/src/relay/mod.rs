//! Getting a signal from one viewer to another.
//!
//! A signal for a viewer of this instance goes straight into the target session's bounded
//! outbox in the [`PeerTable`]. A signal for a viewer of another instance (its peer id names
//! the instance) goes to the Redis relay ([`remote`]), batched per target instance; on the
//! embedded default there is no Redis, so such a target can't exist and the sender gets
//! `unknown_peer`. Sessions only call [`Relay::send`] either way.

pub mod codec;
mod peers;
pub mod remote;

use std::sync::Arc;

use tokio::time::Instant;

use crate::metrics::{DropReason, Metrics};
use crate::protocol::{InstanceId, PeerId, RelayedCands, RelayedSignal, ServerMsg};

pub use peers::{DeliverError, PeerTable, TakeLimits};

/// The three kinds of signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// SDP offer.
    Offer = 0,
    /// SDP answer.
    Answer,
    /// Trickled ICE candidates.
    Cands,
}

impl SignalKind {
    /// Every kind, in discriminant order.
    pub const ALL: [SignalKind; 3] = [SignalKind::Offer, SignalKind::Answer, SignalKind::Cands];

    /// The wire `t`, also a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Offer => "offer",
            SignalKind::Answer => "answer",
            SignalKind::Cands => "cands",
        }
    }
}

/// What a signal carries; opaque to the tracker.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// An offer's or answer's SDP.
    Sdp(Box<str>),
    /// ICE candidates, and whether gathering is complete.
    Cands {
        /// The candidates.
        c: Vec<String>,
        /// End of candidates, as sent.
        end: Option<bool>,
    },
}

/// A signal on its way from one viewer to another.
#[derive(Debug, Clone)]
pub struct Signal {
    /// Offer, answer or candidates.
    pub kind: SignalKind,
    /// The swarm both viewers are in.
    pub swarm: Arc<str>,
    /// The sender, always set by the server.
    pub from: PeerId,
    /// The target.
    pub to: PeerId,
    /// The negotiation id.
    pub sid: Box<str>,
    /// SDP or candidates.
    pub body: Body,
    /// When the tracker received it; the relay latency is measured from here.
    pub received_at: Instant,
}

impl Signal {
    /// Bytes of opaque payload this signal carries, to size encoding buffers.
    pub fn payload_len(&self) -> usize {
        match &self.body {
            Body::Sdp(m) => m.len(),
            Body::Cands { c, .. } => c.iter().map(|c| c.len() + 4).sum(),
        }
    }

    /// The server message the target receives.
    pub fn to_server_msg(&self) -> ServerMsg<'_> {
        match &self.body {
            Body::Sdp(m) => {
                let relayed = RelayedSignal {
                    swarm: (&*self.swarm).into(),
                    from: self.from,
                    sid: (&*self.sid).into(),
                    m: (&**m).into(),
                };
                if self.kind == SignalKind::Offer {
                    ServerMsg::Offer(relayed)
                } else {
                    ServerMsg::Answer(relayed)
                }
            }
            Body::Cands { c, end } => ServerMsg::Cands(RelayedCands {
                swarm: (&*self.swarm).into(),
                from: self.from,
                sid: (&*self.sid).into(),
                c: c.as_slice().into(),
                end: *end,
            }),
        }
    }
}

/// Why a signal could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The target is gone, never existed, or is not in that swarm.
    #[error("target peer is gone or not in that swarm")]
    UnknownPeer,
    /// The target can't keep up; the signal was dropped.
    #[error("target peer is not keeping up")]
    Overloaded,
}

/// Routes signals to their targets, here or on another instance.
pub struct Relay {
    instance: InstanceId,
    peers: Arc<PeerTable>,
    remote: Option<remote::RemoteRelay>,
    metrics: Arc<Metrics>,
}

impl Relay {
    /// A relay for this instance's viewers; `remote` reaches other instances, if configured.
    pub fn new(
        instance: InstanceId,
        peers: Arc<PeerTable>,
        remote: Option<remote::RemoteRelay>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            instance,
            peers,
            remote,
            metrics,
        }
    }

    /// Sends a signal towards its target without waiting.
    ///
    /// # Errors
    /// [`SendError`] when the signal is dropped; the drop is already counted.
    pub fn send(&self, signal: Box<Signal>) -> Result<(), SendError> {
        let kind = signal.kind;
        if signal.to.instance() != self.instance {
            return match &self.remote {
                Some(remote) => remote.send(signal),
                None => {
                    // No Redis on the embedded default: no such viewer can exist.
                    self.metrics.dropped(DropReason::UnknownPeer);
                    Err(SendError::UnknownPeer)
                }
            };
        }
        match self.peers.deliver(signal) {
            Ok(()) => {
                self.metrics.relayed_local(kind);
                Ok(())
            }
            Err(e) => {
                let (reason, err) = match e {
                    DeliverError::UnknownPeer => (DropReason::UnknownPeer, SendError::UnknownPeer),
                    DeliverError::NotInSwarm => {
                        (DropReason::TargetNotInSwarm, SendError::UnknownPeer)
                    }
                    DeliverError::Full => (DropReason::QueueFull, SendError::Overloaded),
                };
                self.metrics.dropped(reason);
                Err(err)
            }
        }
    }
}
