//! Signals that cross instances: queued for Redis, delivered from it, and refused back.
//!
//! Sending never waits: `RemoteRelay::send` puts the signal on a bounded queue (full: dropped
//! and counted). The batcher ([`super::lanes`]) publishes it in the order it arrived, in one
//! ordered lane per target instance. The inbound task decodes batches from this instance's
//! channel and hands each signal to its target's outbox, which checks that the target is still
//! here and in that swarm. A signal refused there goes back to its sender's instance as a
//! [`Refusal`](crate::signal::Refusal) in the next batch to that instance, so the sender gets
//! the `error` (with its `sid`) it would get if both viewers were on one instance.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use bytes::Bytes;

pub use super::Local;
use super::codec::{batch_len, decode_batch};
use super::lanes::Batcher;
pub use super::lanes::channel_name;
use super::{SendError, deliver};
use crate::backplane::{Backplane, InboundBatch};
use crate::config::RedisConfig;
use crate::metrics::{DropReason, RelayPath, RemoteDrop, Shard};
use crate::signal::{NativeBody, NativePayload, Payload, Signal, Text};

/// The sending side of the cross-instance relay.
#[derive(Clone)]
pub struct RemoteRelay {
    tx: mpsc::Sender<Signal>,
    backplane: Backplane,
    metrics: Arc<Shard>,
}

impl RemoteRelay {
    /// Queues a signal for another instance.
    ///
    /// # Errors
    /// [`SendError::Overloaded`] when Redis is down or the queue is full; the drop is counted.
    pub fn send(&self, signal: Signal) -> Result<(), SendError> {
        if !self.backplane.is_up() {
            self.metrics.remote_dropped(RemoteDrop::RedisDown, 1);
            return Err(SendError::Overloaded);
        }
        self.tx.try_send(signal).map_err(|_| {
            self.metrics.remote_dropped(RemoteDrop::OutboundFull, 1);
            SendError::Overloaded
        })
    }

    /// Queues the refusal of a signal from another instance, back to its sender's instance;
    /// counted when it can't be.
    fn send_refusal(&self, refusal: Signal) {
        if !self.backplane.is_up() || self.tx.try_send(refusal).is_err() {
            self.metrics
                .remote_dropped(RemoteDrop::RefusalUndelivered, 1);
        }
    }
}

/// Starts the batcher and the inbound task; returns the sending side.
pub fn start(
    tasks: &TaskTracker,
    cancel: CancellationToken,
    backplane: Backplane,
    config: &RedisConfig,
    local: Local,
    metrics: Arc<Shard>,
    inbound: mpsc::Receiver<InboundBatch>,
) -> RemoteRelay {
    let (tx, rx) = mpsc::channel(config.outbound_queue);
    tasks.spawn(
        Batcher::new(
            rx,
            backplane.clone(),
            config.clone(),
            local.clone(),
            Arc::clone(&metrics),
        )
        .run(cancel.clone()),
    );
    let relay = RemoteRelay {
        tx,
        backplane,
        metrics: Arc::clone(&metrics),
    };
    tasks.spawn(deliver_inbound(
        inbound,
        local,
        relay.clone(),
        metrics,
        config.max_inbound_batch_bytes,
        cancel,
    ));
    relay
}

/// What a refusal needs of a signal (its routing, swarm key and `sid`), kept without its body
/// so that nothing is copied unless the signal is refused.
fn routing_of(s: &Signal) -> Signal {
    let payload = match &s.payload {
        Payload::Native(n) => Payload::Native(NativePayload {
            frame: n.frame.clone(),
            swarm: n.swarm,
            sid: n.sid,
            body: NativeBody::Sdp(Text::default()),
        }),
        // A received WebTorrent signal is a frame and two ids: cheap to clone.
        other => other.clone(),
    };
    Signal {
        kind: s.kind,
        swarm: s.swarm,
        from: s.from,
        to: s.to,
        received_at: s.received_at,
        payload,
    }
}

async fn deliver_inbound(
    mut inbound: mpsc::Receiver<InboundBatch>,
    local: Local,
    relay: RemoteRelay,
    metrics: Arc<Shard>,
    max_bytes: usize,
    cancel: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            () = cancel.cancelled() => return,
            b = inbound.recv() => match b { Some(b) => b, None => return },
        };
        metrics.batch_received();
        let now = Instant::now();
        let batch = Bytes::from(batch);
        let signals = match decode_batch(batch.clone(), max_bytes, now) {
            Ok(s) => s,
            Err(e) => {
                // Debug, not warn: a rolling upgrade across a format change would flood the
                // log; tracker_remote_dropped_total{reason="bad_batch"} shows it, in signals
                // when the batch's header says how many (else as one).
                tracing::debug!(error = ?e, "a batch from Redis didn't decode; dropped");
                let n = batch_len(&batch).unwrap_or(1);
                metrics.remote_dropped(RemoteDrop::BadBatch, n);
                continue;
            }
        };
        // One sending instance per batch: it can be answered before its next heartbeat is read.
        if let Some(first) = signals.first() {
            local.live.heard_from(first.from.instance());
        }
        for mut signal in signals {
            if matches!(signal.payload, Payload::Refused(_)) {
                local.return_refusal(signal, &metrics);
                continue;
            }
            let Some(swarm) = local.index.id_of(&signal.swarm_key()) else {
                metrics.dropped(DropReason::TargetNotInSwarm, 1);
                relay.send_refusal(signal.refusal(SendError::UnknownPeer, now));
                continue;
            };
            signal.swarm = swarm;
            let routing = routing_of(&signal);
            // Counted by `deliver` as on one instance; the sender learns of a refusal the way
            // it would there.
            if let Err(e) = deliver(&local.connections, signal, RelayPath::Remote, &metrics) {
                relay.send_refusal(routing.refusal(e, now));
            }
        }
    }
}
