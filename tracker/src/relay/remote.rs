//! Signals that cross instances: batched towards Redis, and delivered from it.
//!
//! Sending never waits: `RemoteRelay::send` puts the signal on a bounded queue (full: dropped
//! and counted). One batcher task groups queued signals by target instance and publishes each
//! group as ONE message on that instance's channel when it reaches `batch_max_messages` or
//! `batch_max_bytes`, or `batch_window_us` after its first signal; unpipelined publishes top
//! out near 40k/s whatever their size, so signals per publish multiply the fleet's capacity.
//! Publishes run concurrently (redis-rs pipelines them), at most `max_inflight_publishes`.
//! The inbound task decodes batches from this instance's channel and hands each signal to its
//! target's outbox, which checks that the target is still here and in that swarm.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use bytes::Bytes;

use super::codec::{decode_batch, encode_batch};
use super::{SendError, deliver};
use crate::backplane::{Backplane, InboundBatch};
use crate::config::RedisConfig;
use crate::connections::Connections;
use crate::metrics::{DropReason, RelayPath, RemoteDrop, Shard};
use crate::signal::Signal;
use crate::swarm::{Liveness, SwarmIndex};
use swarmtrack_protocol::InstanceId;

/// The relay channel of an instance.
pub fn channel_name(prefix: &str, instance: InstanceId) -> String {
    // The hash tag keeps the channel in one slot; sharded pub/sub routes by it.
    format!("{prefix}:relay:{{{instance}}}")
}

/// The sending side of the cross-instance relay.
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
}

/// What the inbound side delivers to: this instance's swarms and connections.
pub struct Local {
    /// To find a signal's swarm by its key.
    pub index: Arc<SwarmIndex>,
    /// The targets.
    pub connections: Arc<Connections>,
    /// A batch that opened under the fleet key proves its sending instance alive.
    pub live: Arc<Liveness>,
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
        Batcher {
            rx,
            backplane: backplane.clone(),
            config: config.clone(),
            metrics: Arc::clone(&metrics),
            pending: HashMap::new(),
            inflight: JoinSet::new(),
        }
        .run(cancel.clone()),
    );
    tasks.spawn(deliver_inbound(
        inbound,
        local,
        Arc::clone(&metrics),
        config.max_inbound_batch_bytes,
        cancel,
    ));
    RemoteRelay {
        tx,
        backplane,
        metrics,
    }
}

/// Signals waiting for one target instance.
// Boxed signals move from the sender through here without copying ~100-byte structs.
#[allow(clippy::vec_box)]
struct Pending {
    signals: Vec<Signal>,
    bytes: usize,
    since: Instant,
}

struct Batcher {
    rx: mpsc::Receiver<Signal>,
    backplane: Backplane,
    config: RedisConfig,
    metrics: Arc<Shard>,
    pending: HashMap<InstanceId, Pending>,
    inflight: JoinSet<()>,
}

impl Batcher {
    async fn run(mut self, cancel: CancellationToken) {
        let window = Duration::from_micros(self.config.batch_window_us);
        loop {
            let due = self.pending.values().map(|p| p.since + window).min();
            tokio::select! {
                // The timer before the queue: under steady load the queue is always ready, and
                // a batch for a quiet instance must still leave at the end of its window.
                biased;
                () = cancel.cancelled() => break,
                () = sleep_until_opt(due), if due.is_some() => {}
                signal = self.rx.recv() => {
                    let Some(signal) = signal else { break };
                    self.add(signal);
                    // Take what is already queued too, so one wake-up fills batches.
                    while let Ok(s) = self.rx.try_recv() {
                        self.add(s);
                    }
                }
                Some(_) = self.inflight.join_next(), if !self.inflight.is_empty() => {}
            }
            self.flush_due(window);
            while self.inflight.len() >= self.config.max_inflight_publishes {
                self.inflight.join_next().await;
            }
        }
        let all: Vec<InstanceId> = self.pending.keys().copied().collect();
        for instance in all {
            self.flush(instance);
        }
        while self.inflight.join_next().await.is_some() {}
    }

    /// Publishes every batch whose window is over.
    fn flush_due(&mut self, window: Duration) {
        let now = Instant::now();
        let due: Vec<InstanceId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.since + window <= now)
            .map(|(i, _)| *i)
            .collect();
        for instance in due {
            self.flush(instance);
        }
    }

    fn add(&mut self, signal: Signal) {
        let instance = signal.to.instance();
        let bytes = signal.payload_len() + 64;
        let p = self.pending.entry(instance).or_insert_with(|| Pending {
            signals: Vec::new(),
            bytes: 0,
            since: Instant::now(),
        });
        p.bytes += bytes;
        p.signals.push(signal);
        if self.config.batch_window_us == 0
            || p.signals.len() >= self.config.batch_max_messages
            || p.bytes >= self.config.batch_max_bytes
        {
            self.flush(instance);
        }
    }

    /// Hands a batch to a publish task: encoding (deflate with the dictionary: ~20 µs a signal)
    /// runs there, concurrently with other publishes, not in this loop.
    fn flush(&mut self, instance: InstanceId) {
        let Some(p) = self.pending.remove(&instance) else {
            return;
        };
        let channel = channel_name(&self.config.key_prefix, instance);
        let backplane = self.backplane.clone();
        let metrics = Arc::clone(&self.metrics);
        let threshold = self.config.compress_threshold_bytes;
        self.inflight.spawn(async move {
            let n = p.signals.len() as u64;
            let mut buf = Vec::with_capacity(p.bytes);
            let stats = match encode_batch(p.signals.iter(), threshold, &mut buf) {
                Ok(stats) => stats,
                Err(e) => {
                    tracing::warn!(error = %e, "a batch failed to encode; dropped");
                    metrics.remote_dropped(RemoteDrop::PublishFailed, n);
                    return;
                }
            };
            drop(p);
            metrics.batch_encoded(
                stats.signals,
                stats.raw_bytes,
                stats.wire_bytes,
                stats.compressed,
            );
            match backplane.publish(&channel, &buf).await {
                Ok(0) => metrics.remote_dropped(RemoteDrop::NoSubscriber, n),
                Ok(_) => metrics.batch_published(),
                Err(_) => metrics.remote_dropped(RemoteDrop::PublishFailed, n),
            }
        });
    }
}

async fn sleep_until_opt(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn deliver_inbound(
    mut inbound: mpsc::Receiver<InboundBatch>,
    local: Local,
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
        let signals = match decode_batch(Bytes::from(batch), max_bytes, Instant::now()) {
            Ok(s) => s,
            Err(e) => {
                // Debug, not warn: a rolling upgrade across a format change would flood the
                // log; tracker_remote_dropped_total{reason="bad_batch"} shows it.
                tracing::debug!(error = ?e, "a batch from Redis didn't decode; dropped");
                metrics.remote_dropped(RemoteDrop::BadBatch, 1);
                continue;
            }
        };
        // One sending instance per batch: it can be answered before its next heartbeat is read.
        if let Some(first) = signals.first() {
            local.live.heard_from(first.from.instance());
        }
        for mut signal in signals {
            let Some(swarm) = local.index.id_of(&signal.swarm_key()) else {
                metrics.dropped(DropReason::TargetNotInSwarm, 1);
                continue;
            };
            signal.swarm = swarm;
            // Counted by `deliver`; nobody here to tell.
            let _ = deliver(&local.connections, signal, RelayPath::Remote, &metrics);
        }
    }
}
