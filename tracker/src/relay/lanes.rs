//! The outbound side of the Redis relay: one ordered lane per target instance.
//!
//! One batcher task takes signals (and refusals on their way back) from the bounded outbound
//! queue and groups them by target instance. Each instance has a *lane*: the batch being
//! filled, the sealed batches behind it, and at most ONE publish in flight. A batch is sealed
//! when it holds `batch_max_messages` signals or `batch_max_bytes` of payload, or
//! `batch_window_us` after its first signal; the next publish of a lane starts only when the
//! previous one has been answered, so Redis receives an instance's batches, and the instance
//! its signals, in the order they arrived here. (Concurrent publishes on the multiplexed link
//! are written in call order, but each was its own task: two batches to one instance could
//! reach Redis swapped, and a `cands` overtake its `offer`.) While a lane waits for its publish,
//! its open batch keeps filling, so a slower Redis gets bigger batches rather than more of them.
//! Lanes publish concurrently, at most `max_inflight_publishes` at once; each publish task
//! encodes (deflates) its batch itself, so encoding runs in parallel with other lanes.
//!
//! Bounds: the lanes hold at most `outbound_queue` signals (past it the batcher stops taking
//! from the queue, which then fills and drops, counted, at `RemoteRelay::send`), and a signal
//! that has waited longer than `max_signal_age_ms` when its batch is about to leave is dropped
//! (`stale`) and refused to its sender (`overloaded`), as a full outbox would be.
//!
//! What a publish's answer means for its signals:
//! - answered with a count > 0: delivered to the target instance's subscriber;
//! - answered 0: nobody subscribes to that channel (the instance is gone or resubscribing):
//!   dropped (`no_subscriber`), and each sender gets `unknown_peer`, as for a gone target;
//! - refused before it was sent (Redis down) or answered with an error: dropped
//!   (`publish_failed`), each sender gets `overloaded`;
//! - no answer within `command_timeout_ms`, or the link broke while waiting: Redis may have
//!   delivered it. Counted apart (`tracker_remote_unconfirmed_total`), neither dropped nor
//!   refused: a refusal for a delivered signal would make the sender abandon a negotiation its
//!   target has joined.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec::encode_batch;
use super::{Local, SendError};
use crate::backplane::{Backplane, BackplaneError};
use crate::config::RedisConfig;
use crate::metrics::{RemoteDrop, Shard};
use crate::signal::{Payload, Signal};
use swarmtrack_protocol::InstanceId;

/// The relay channel of an instance.
pub fn channel_name(prefix: &str, instance: InstanceId) -> String {
    // The hash tag keeps the channel in one slot; sharded pub/sub routes by it.
    format!("{prefix}:relay:{{{instance}}}")
}

/// Signals for one instance, published together.
// Signals move from the sender through here without being copied.
struct Batch {
    signals: Vec<Signal>,
    bytes: usize,
    since: Instant,
}

/// One target instance's signals, in order.
#[derive(Default)]
struct Lane {
    /// The batch being filled.
    open: Option<Batch>,
    /// Sealed batches waiting for the publish in flight, oldest first.
    sealed: VecDeque<Batch>,
    /// A publish of this lane is in flight.
    busy: bool,
}

impl Lane {
    fn seal(&mut self) {
        if let Some(b) = self.open.take() {
            self.sealed.push_back(b);
        }
    }

    fn is_idle(&self) -> bool {
        !self.busy && self.open.is_none() && self.sealed.is_empty()
    }
}

/// How a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    NoSubscriber,
    Failed,
    Unconfirmed,
}

/// A finished publish: its lane, its signals (kept to refuse them to their senders), how it
/// ended.
struct Published {
    instance: InstanceId,
    signals: Vec<Signal>,
    outcome: Outcome,
}

/// Publishes queued signals in one ordered lane per target instance.
pub(super) struct Batcher {
    rx: mpsc::Receiver<Signal>,
    backplane: Backplane,
    config: RedisConfig,
    local: Local,
    metrics: Arc<Shard>,
    lanes: HashMap<InstanceId, Lane>,
    inflight: JoinSet<Published>,
    /// Which lane each publish task belongs to, so a task that failed to finish (it can't
    /// panic, but if it did) still frees its lane.
    tasks: HashMap<tokio::task::Id, InstanceId>,
    /// Signals held in lanes (open and sealed batches).
    held: usize,
}

impl Batcher {
    pub(super) fn new(
        rx: mpsc::Receiver<Signal>,
        backplane: Backplane,
        config: RedisConfig,
        local: Local,
        metrics: Arc<Shard>,
    ) -> Self {
        Self {
            rx,
            backplane,
            config,
            local,
            metrics,
            lanes: HashMap::new(),
            inflight: JoinSet::new(),
            tasks: HashMap::new(),
            held: 0,
        }
    }

    pub(super) async fn run(mut self, cancel: CancellationToken) {
        let window = Duration::from_micros(self.config.batch_window_us);
        loop {
            let room = self.held < self.config.outbound_queue;
            let due = self.next_due(window);
            tokio::select! {
                // Timers and answers before the queue: under steady load the queue is always
                // ready, and a batch for a quiet instance must still leave at the end of its
                // window, a lane go on once its publish is answered.
                biased;
                () = cancel.cancelled() => break,
                Some(done) = self.inflight.join_next_with_id(), if !self.inflight.is_empty() => {
                    self.finished(done);
                }
                () = sleep_until_opt(due) => {}
                signal = self.rx.recv(), if room => {
                    let Some(signal) = signal else { break };
                    self.add(signal);
                    // Take what is already queued too, so one wake-up fills batches.
                    while self.held < self.config.outbound_queue {
                        let Ok(s) = self.rx.try_recv() else { break };
                        self.add(s);
                    }
                }
            }
            self.seal_due(window);
            self.start_publishes();
        }
        // Shutting down: what is queued still goes, in order, lane by lane, for at most one
        // command timeout; what is left then is dropped and counted.
        for lane in self.lanes.values_mut() {
            lane.seal();
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.command_timeout_ms);
        let drained = tokio::time::timeout_at(deadline, async {
            loop {
                self.start_publishes();
                match self.inflight.join_next_with_id().await {
                    Some(done) => self.finished(done),
                    None => break,
                }
            }
        })
        .await;
        if drained.is_err() {
            self.metrics
                .remote_dropped(RemoteDrop::PublishFailed, self.held as u64);
        }
    }

    fn add(&mut self, signal: Signal) {
        let instance = signal.to.instance();
        let bytes = signal.payload_len() + 64;
        let lane = self.lanes.entry(instance).or_default();
        let open = lane.open.get_or_insert_with(|| Batch {
            signals: Vec::new(),
            bytes: 0,
            since: Instant::now(),
        });
        open.bytes += bytes;
        open.signals.push(signal);
        self.held += 1;
        // Window 0 means "don't wait for more": sealed at once, unless the lane waits for an
        // answer anyway, when what comes meanwhile goes together.
        if (self.config.batch_window_us == 0 && !lane.busy)
            || open.signals.len() >= self.config.batch_max_messages
            || open.bytes >= self.config.batch_max_bytes
        {
            lane.seal();
        }
    }

    /// When the next open batch of an idle lane must be sealed. A busy lane's open batch waits
    /// for the publish in flight anyway, and is sealed when it is answered.
    fn next_due(&self, window: Duration) -> Option<Instant> {
        self.lanes
            .values()
            .filter(|l| !l.busy && l.sealed.is_empty())
            .filter_map(|l| l.open.as_ref().map(|b| b.since + window))
            .min()
    }

    fn seal_due(&mut self, window: Duration) {
        let now = Instant::now();
        for lane in self.lanes.values_mut() {
            if !lane.busy && lane.open.as_ref().is_some_and(|b| b.since + window <= now) {
                lane.seal();
            }
        }
    }

    /// Starts the next publish of every free lane that has a sealed batch, within
    /// `max_inflight_publishes`.
    fn start_publishes(&mut self) {
        let max_age = Duration::from_millis(self.config.max_signal_age_ms);
        let now = Instant::now();
        let mut ready: Vec<InstanceId> = self
            .lanes
            .iter()
            .filter(|(_, l)| !l.busy && !l.sealed.is_empty())
            .map(|(i, _)| *i)
            .collect();
        // The oldest first, so no lane waits behind others for the global bound forever.
        ready.sort_by_key(|i| {
            self.lanes
                .get(i)
                .and_then(|l| l.sealed.front())
                .map(|b| b.since)
        });
        for instance in ready {
            if self.inflight.len() >= self.config.max_inflight_publishes {
                return;
            }
            let Some(lane) = self.lanes.get_mut(&instance) else {
                continue;
            };
            while let Some(batch) = lane.sealed.pop_front() {
                self.held -= batch.signals.len();
                let (fresh, stale): (Vec<Signal>, Vec<Signal>) = batch
                    .signals
                    .into_iter()
                    .partition(|s| now.saturating_duration_since(s.received_at) <= max_age);
                if !stale.is_empty() {
                    self.metrics
                        .remote_dropped(RemoteDrop::Stale, stale.len() as u64);
                    refuse(&self.local, &self.metrics, stale, SendError::Overloaded);
                }
                if !fresh.is_empty() {
                    lane.busy = true;
                    let handle = self.inflight.spawn(publish(
                        instance,
                        fresh,
                        batch.bytes,
                        self.backplane.clone(),
                        channel_name(&self.config.key_prefix, instance),
                        self.config.compress_threshold_bytes,
                        Arc::clone(&self.metrics),
                    ));
                    self.tasks.insert(handle.id(), instance);
                    break;
                }
            }
        }
    }

    /// A publish ended: count it, refuse what was dropped, free its lane.
    fn finished(&mut self, done: Result<(tokio::task::Id, Published), tokio::task::JoinError>) {
        let (id, published) = match done {
            Ok((id, p)) => (id, Some(p)),
            Err(e) => (e.id(), None),
        };
        let Some(instance) = self.tasks.remove(&id) else {
            return;
        };
        if let Some(p) = published {
            let n = p.signals.len() as u64;
            match p.outcome {
                Outcome::Delivered => self.metrics.batch_published(),
                Outcome::NoSubscriber => {
                    self.metrics.remote_dropped(RemoteDrop::NoSubscriber, n);
                    refuse(
                        &self.local,
                        &self.metrics,
                        p.signals,
                        SendError::UnknownPeer,
                    );
                }
                Outcome::Failed => {
                    self.metrics.remote_dropped(RemoteDrop::PublishFailed, n);
                    refuse(&self.local, &self.metrics, p.signals, SendError::Overloaded);
                }
                Outcome::Unconfirmed => self.metrics.remote_unconfirmed(n),
            }
            debug_assert_eq!(p.instance, instance);
        }
        let Some(lane) = self.lanes.get_mut(&instance) else {
            return;
        };
        lane.busy = false;
        if lane.sealed.is_empty() {
            // What came in meanwhile has waited a publish already: it goes next.
            lane.seal();
        }
        if lane.is_idle() {
            self.lanes.remove(&instance);
        }
    }
}

/// Refuses dropped signals to their senders on this instance; refusals that were on their way
/// back to another instance are only counted (in the drop that removed them).
fn refuse(local: &Local, metrics: &Shard, signals: Vec<Signal>, error: SendError) {
    let now = Instant::now();
    for s in signals {
        if !matches!(s.payload, Payload::Refused(_)) {
            local.return_refusal(s.refusal(error, now), metrics);
        }
    }
}

/// Encodes and publishes one batch (encoding here, concurrently with other lanes).
async fn publish(
    instance: InstanceId,
    signals: Vec<Signal>,
    bytes: usize,
    backplane: Backplane,
    channel: String,
    threshold: usize,
    metrics: Arc<Shard>,
) -> Published {
    let mut buf = Vec::with_capacity(bytes);
    let outcome = match encode_batch(signals.iter(), threshold, &mut buf) {
        Ok(stats) => {
            metrics.batch_encoded(
                stats.signals,
                stats.raw_bytes,
                stats.wire_bytes,
                stats.compressed,
            );
            match backplane.publish(&channel, &buf).await {
                Ok(0) => Outcome::NoSubscriber,
                Ok(_) => Outcome::Delivered,
                Err(e) => classify(&e),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "a batch failed to encode; dropped");
            Outcome::Failed
        }
    };
    Published {
        instance,
        signals,
        outcome,
    }
}

/// Whether a failed publish may still have reached Redis.
fn classify(e: &BackplaneError) -> Outcome {
    match e {
        BackplaneError::Timeout => Outcome::Unconfirmed,
        BackplaneError::Redis(r)
            if r.is_timeout() || r.is_connection_dropped() || r.is_io_error() =>
        {
            Outcome::Unconfirmed
        }
        BackplaneError::Down
        | BackplaneError::Redis(_)
        | BackplaneError::Url { .. }
        | BackplaneError::TlsFile { .. } => Outcome::Failed,
    }
}

async fn sleep_until_opt(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, RedisError, ServerErrorKind};

    #[test]
    fn a_publish_that_may_have_reached_redis_is_unconfirmed_not_failed() {
        let io = |kind| RedisError::from(std::io::Error::new(kind, "link"));
        let cases = [
            (BackplaneError::Timeout, Outcome::Unconfirmed),
            (
                BackplaneError::Redis(io(std::io::ErrorKind::ConnectionReset)),
                Outcome::Unconfirmed,
            ),
            (
                BackplaneError::Redis(io(std::io::ErrorKind::TimedOut)),
                Outcome::Unconfirmed,
            ),
            // Never sent.
            (BackplaneError::Down, Outcome::Failed),
            // Answered: Redis refused it.
            (
                BackplaneError::Redis(RedisError::from((
                    ErrorKind::Server(ServerErrorKind::ResponseError),
                    "ERR",
                ))),
                Outcome::Failed,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(classify(&error), want, "{error:?}");
        }
    }
}
