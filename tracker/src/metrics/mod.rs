//! The tracker's Prometheus metrics, sharded so the message path touches no shared counter.
//!
//! Every worker thread writes its own [`Shard`]; tasks outside the workers (the Redis side, the
//! HTTP admin) share one more. A shard's counters are plain atomics on cache lines of their own;
//! a worker's shard has a single writer, so an increment is a load and a store rather than a
//! locked read-modify-write. [`Metrics::render`] sums the shards when `/metrics` is scraped.
//! Each tracker owns its metrics (no process-global recorder), so several trackers in one
//! process, as in the tests, keep separate figures. Labels are fixed sets, never swarm or peer
//! ids. The exposition is the Prometheus text format, with the names, labels and help texts
//! docs/ARCHITECTURE.md section 11 lists.

mod histogram;
mod labels;
mod process;
mod render;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use histogram::{BATCH_BYTES_BUCKETS, BATCH_MESSAGES_BUCKETS, Histogram, LATENCY_BUCKETS};
pub use labels::{
    AcceptError, BatchRefusal, CloseReason, DirectorySkip, DropReason, FailureKind, MembershipDrop,
    Origin, ReceivedKind, RefuseReason, RelayPath, RemoteDrop, SignalKind,
};

use swarmtrack_protocol::{ErrorCode, Format};

/// A counter in a shard.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: u64, single_writer: bool) {
        if single_writer {
            // Only this shard's thread writes it: no other write can be lost between the two.
            self.0.store(
                self.0.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge's change in a shard; the gauge is the sum over shards.
#[derive(Default)]
pub struct Delta(AtomicI64);

impl Delta {
    fn add(&self, n: i64, single_writer: bool) {
        if single_writer {
            self.0.store(
                self.0.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one family with one label.
type Family<const N: usize> = [Counter; N];

fn family<const N: usize>() -> Family<N> {
    std::array::from_fn(|_| Counter::default())
}

/// One writer's counters, gauge changes and histograms.
// 128-byte alignment keeps two shards' hot counters off each other's cache lines (adjacent
// line prefetch pairs lines on x86).
#[repr(align(128))]
pub struct Shard {
    single_writer: bool,
    connections_opened: Counter,
    closed: Family<{ CloseReason::COUNT }>,
    refused: Family<{ RefuseReason::COUNT }>,
    accept_errors: Family<{ AcceptError::COUNT }>,
    viewers_joined: Family<{ Origin::COUNT }>,
    received: [Family<2>; ReceivedKind::COUNT],
    webtorrent_failures: Family<{ FailureKind::COUNT }>,
    relayed: [Family<{ RelayPath::COUNT }>; SignalKind::COUNT],
    dropped: Family<{ DropReason::COUNT }>,
    dropped_bytes: Family<{ DropReason::COUNT }>,
    errors: Family<{ ErrorCode::ALL.len() }>,
    remote_dropped: Family<{ RemoteDrop::COUNT }>,
    directory_skipped: Family<{ DirectorySkip::COUNT }>,
    liveness_refused: Counter,
    membership_dropped: Family<{ MembershipDrop::COUNT }>,
    batches_refused: Family<{ BatchRefusal::COUNT }>,
    remote_unconfirmed: Counter,
    frames_sent: Counter,
    messages_sent: Counter,
    bytes_received: Counter,
    bytes_sent: Counter,
    pings_received: Counter,
    pings_rate_limited: Counter,
    remote_inbound_dropped: Counter,
    batches_published: Counter,
    batches_received: Counter,
    batch_raw_bytes: Counter,
    batch_wire_bytes: Counter,
    batches_compressed: Counter,
    redis_errors: Counter,
    instance_id_conflicts: Counter,
    redis_reconnects: Counter,
    redis_resubscribes: Counter,
    connections: Delta,
    http_connections: Delta,
    viewers: Delta,
    swarms: Delta,
    memberships: Delta,
    join_seconds: Histogram,
    announce_seconds: Histogram,
    relay_seconds: Histogram,
    batch_messages: Histogram,
    batch_bytes: Histogram,
}

impl Shard {
    fn new(single_writer: bool) -> Self {
        Self {
            single_writer,
            connections_opened: Counter::default(),
            closed: family(),
            refused: family(),
            accept_errors: family(),
            viewers_joined: family(),
            received: std::array::from_fn(|_| family()),
            webtorrent_failures: family(),
            relayed: std::array::from_fn(|_| family()),
            dropped: family(),
            dropped_bytes: family(),
            errors: family(),
            remote_dropped: family(),
            directory_skipped: family(),
            liveness_refused: Counter::default(),
            membership_dropped: family(),
            batches_refused: family(),
            remote_unconfirmed: Counter::default(),
            frames_sent: Counter::default(),
            messages_sent: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            pings_received: Counter::default(),
            pings_rate_limited: Counter::default(),
            remote_inbound_dropped: Counter::default(),
            batches_published: Counter::default(),
            batches_received: Counter::default(),
            batch_raw_bytes: Counter::default(),
            batch_wire_bytes: Counter::default(),
            batches_compressed: Counter::default(),
            redis_errors: Counter::default(),
            instance_id_conflicts: Counter::default(),
            redis_reconnects: Counter::default(),
            redis_resubscribes: Counter::default(),
            connections: Delta::default(),
            http_connections: Delta::default(),
            viewers: Delta::default(),
            swarms: Delta::default(),
            memberships: Delta::default(),
            join_seconds: Histogram::new(&LATENCY_BUCKETS),
            announce_seconds: Histogram::new(&LATENCY_BUCKETS),
            relay_seconds: Histogram::new(&LATENCY_BUCKETS),
            batch_messages: Histogram::new(&BATCH_MESSAGES_BUCKETS),
            batch_bytes: Histogram::new(&BATCH_BYTES_BUCKETS),
        }
    }

    fn inc(&self, c: &Counter, n: u64) {
        c.add(n, self.single_writer);
    }

    /// Counts an accepted WebSocket connection; `open` adds it to the open ones.
    pub fn connection_opened(&self) {
        self.inc(&self.connections_opened, 1);
    }

    /// Adds `n` (may be negative) to the open connections.
    pub fn connections(&self, n: i64) {
        self.connections.add(n, self.single_writer);
    }

    /// Adds `n` (may be negative) to the connections not upgraded yet that hold a slot.
    pub fn http_connections(&self, n: i64) {
        self.http_connections.add(n, self.single_writer);
    }

    /// Counts a failed accept.
    pub fn accept_error(&self, kind: AcceptError) {
        self.inc(&self.accept_errors[kind as usize], 1);
    }

    /// Counts a ping over the connection's message rate.
    pub fn ping_rate_limited(&self) {
        self.inc(&self.pings_rate_limited, 1);
    }

    /// Counts a connection's first successful join or announce: one more viewer, of `origin`.
    pub fn viewer_joined(&self, origin: Origin) {
        self.inc(&self.viewers_joined[origin as usize], 1);
        self.viewers.add(1, self.single_writer);
    }

    /// A viewer's connection ended.
    pub fn viewer_left(&self) {
        self.viewers.add(-1, self.single_writer);
    }

    /// Adds `n` to the swarms with a local member.
    pub fn swarms(&self, n: i64) {
        self.swarms.add(n, self.single_writer);
    }

    /// Adds `n` to the local memberships.
    pub fn memberships(&self, n: i64) {
        self.memberships.add(n, self.single_writer);
    }

    /// Counts a closed connection.
    pub fn closed(&self, reason: CloseReason) {
        self.inc(&self.closed[reason as usize], 1);
    }

    /// Counts a refused upgrade.
    pub fn refused(&self, reason: RefuseReason) {
        self.inc(&self.refused[reason as usize], 1);
    }

    /// Counts a received message.
    pub fn received(&self, kind: ReceivedKind, format: Format) {
        self.inc(&self.received[kind as usize][format as usize], 1);
    }

    /// Counts a WebTorrent failure reply.
    pub fn webtorrent_failure(&self, kind: FailureKind) {
        self.inc(&self.webtorrent_failures[kind as usize], 1);
    }

    /// Counts a signal handed to a local target.
    pub fn relayed(&self, kind: SignalKind, path: RelayPath) {
        self.inc(&self.relayed[kind as usize][path as usize], 1);
    }

    /// Counts `n` signals (or messages) not delivered.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.inc(&self.dropped[reason as usize], n);
    }

    /// Counts the bytes ([`crate::signal::Signal::footprint`]) of signals dropped from or at an
    /// outbox (`queue_full`, `target_closed`); their number goes to [`Shard::dropped`].
    pub fn dropped_bytes(&self, reason: DropReason, bytes: u64) {
        self.inc(&self.dropped_bytes[reason as usize], bytes);
    }

    /// Counts `n` signals to or from another instance that were dropped.
    pub fn remote_dropped(&self, reason: RemoteDrop, n: u64) {
        self.inc(&self.remote_dropped[reason as usize], n);
    }

    /// Counts `n` members read from the fleet's directory and not handed out.
    pub fn directory_skipped(&self, reason: DirectorySkip, n: u64) {
        self.inc(&self.directory_skipped[reason as usize], n);
    }

    /// Counts a heartbeat read from Redis that doesn't verify under the fleet key.
    pub fn liveness_refused(&self) {
        self.inc(&self.liveness_refused, 1);
    }

    /// Counts `n` signals whose publish timed out or lost its link before Redis answered:
    /// Redis may have delivered them, so they are neither dropped nor refused.
    pub fn remote_unconfirmed(&self, n: u64) {
        self.inc(&self.remote_unconfirmed, n);
    }

    /// Counts `n` membership writes dropped.
    pub fn membership_dropped(&self, reason: MembershipDrop, n: u64) {
        self.inc(&self.membership_dropped[reason as usize], n);
    }

    /// Counts a batch from Redis refused before decoding (unsigned, forged, replayed, stale).
    pub fn batch_refused(&self, reason: BatchRefusal) {
        self.inc(&self.batches_refused[reason as usize], 1);
    }

    /// Counts an error reply.
    pub fn error_sent(&self, code: ErrorCode) {
        self.inc(&self.errors[code as usize], 1);
    }

    /// Counts a write of `frames` frames holding `messages` messages, `bytes` payload bytes.
    pub fn sent(&self, frames: u64, messages: u64, bytes: u64) {
        self.inc(&self.frames_sent, frames);
        self.inc(&self.messages_sent, messages);
        self.inc(&self.bytes_sent, bytes);
    }

    /// Counts payload bytes read.
    pub fn bytes_received(&self, n: u64) {
        self.inc(&self.bytes_received, n);
    }

    /// Counts a WebSocket ping from a client.
    pub fn ping_received(&self) {
        self.inc(&self.pings_received, 1);
    }

    /// Counts received Redis batches dropped because the inbound queue was full.
    pub fn remote_inbound_dropped(&self) {
        self.inc(&self.remote_inbound_dropped, 1);
    }

    /// Counts a published batch.
    pub fn batch_published(&self) {
        self.inc(&self.batches_published, 1);
    }

    /// Counts a received batch.
    pub fn batch_received(&self) {
        self.inc(&self.batches_received, 1);
    }

    /// Records an encoded batch: its signals, its MessagePack and wire bytes, whether deflated.
    pub fn batch_encoded(&self, signals: usize, raw: usize, wire: usize, compressed: bool) {
        self.batch_messages
            .record(signals as f64, self.single_writer);
        self.batch_bytes.record(wire as f64, self.single_writer);
        self.inc(&self.batch_raw_bytes, raw as u64);
        self.inc(&self.batch_wire_bytes, wire as u64);
        if compressed {
            self.inc(&self.batches_compressed, 1);
        }
    }

    /// Counts a failed or skipped Redis membership command.
    pub fn redis_error(&self) {
        self.inc(&self.redis_errors, 1);
    }

    /// Counts a refresh that found this instance's id held by another tracker.
    pub fn instance_id_conflict(&self) {
        self.inc(&self.instance_id_conflicts, 1);
    }

    /// Counts a reconnection of the Redis command link.
    pub fn redis_reconnect(&self) {
        self.inc(&self.redis_reconnects, 1);
    }

    /// Counts a resubscription of the relay channel.
    pub fn redis_resubscribe(&self) {
        self.inc(&self.redis_resubscribes, 1);
    }

    /// Records the time from `join` to `peers`.
    pub fn join_seconds(&self, s: f64) {
        self.join_seconds.record(s, self.single_writer);
    }

    /// Records the time to process a WebTorrent announce.
    pub fn announce_seconds(&self, s: f64) {
        self.announce_seconds.record(s, self.single_writer);
    }

    /// Records the time from a signal's arrival to its write.
    pub fn relay_seconds(&self, s: f64) {
        self.relay_seconds.record(s, self.single_writer);
    }
}

/// The gauges set as a whole rather than summed.
#[derive(Default)]
struct Levels {
    draining: AtomicI64,
    redis_up: AtomicI64,
    redis_subscribed: AtomicI64,
}

/// All metrics of one tracker.
pub struct Metrics {
    /// Worker shards, then the shared one; added to as workers start.
    shards: Mutex<Vec<Arc<Shard>>>,
    shared: Arc<Shard>,
    levels: Levels,
}

impl Metrics {
    /// Metrics with only the shared shard.
    pub fn new() -> Self {
        let shared = Arc::new(Shard::new(false));
        Self {
            shards: Mutex::new(vec![Arc::clone(&shared)]),
            shared,
            levels: Levels::default(),
        }
    }

    /// A new shard for one worker thread, which must be its only writer.
    pub fn worker_shard(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard::new(true));
        self.lock().push(Arc::clone(&shard));
        shard
    }

    /// The shard that any thread may write (Redis tasks, HTTP handlers).
    pub fn shared(&self) -> &Arc<Shard> {
        &self.shared
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Shard>>> {
        // The list is only pushed to: a panic elsewhere can't leave it half-written.
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets `tracker_draining`.
    pub fn set_draining(&self, on: bool) {
        self.levels.draining.store(i64::from(on), Ordering::Relaxed);
    }

    /// Sets `tracker_redis_up`.
    pub fn set_redis_up(&self, up: bool) {
        self.levels.redis_up.store(i64::from(up), Ordering::Relaxed);
    }

    /// Sets `tracker_redis_subscribed`.
    pub fn set_redis_subscribed(&self, on: bool) {
        self.levels
            .redis_subscribed
            .store(i64::from(on), Ordering::Relaxed);
    }

    /// Open connections, summed over the shards.
    #[cfg(test)]
    pub fn open_connections(&self) -> i64 {
        self.lock().iter().map(|s| s.connections.get()).sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let shards = self.lock().clone();
        render::render(&shards, &self.levels)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn shards_add_up() {
        let m = Metrics::new();
        let a = m.worker_shard();
        let b = m.worker_shard();
        a.relayed(SignalKind::Offer, RelayPath::Local);
        b.relayed(SignalKind::Offer, RelayPath::Local);
        m.shared().relayed(SignalKind::Offer, RelayPath::Remote);
        a.connections(3);
        b.connections(-1);
        a.dropped(DropReason::QueueFull, 5);
        b.dropped_bytes(DropReason::QueueFull, 700);
        a.relay_seconds(0.0003);
        b.relay_seconds(7.0);
        m.set_draining(true);
        let text = m.render();
        let v = |s: &str| value(&text, s);
        assert_eq!(
            v(r#"tracker_messages_relayed_total{kind="offer",path="local"}"#),
            2.0
        );
        assert_eq!(
            v(r#"tracker_messages_relayed_total{kind="offer",path="remote"}"#),
            1.0
        );
        assert_eq!(
            v(r#"tracker_messages_relayed_total{kind="cands",path="local"}"#),
            0.0
        );
        assert_eq!(v("tracker_connections"), 2.0);
        assert_eq!(
            v(r#"tracker_messages_dropped_total{reason="queue_full"}"#),
            5.0
        );
        assert_eq!(
            v(r#"tracker_outbox_dropped_bytes_total{reason="queue_full"}"#),
            700.0
        );
        assert_eq!(v("tracker_draining"), 1.0);
        assert_eq!(v(r#"tracker_relay_seconds_bucket{le="0.0005"}"#), 1.0);
        assert_eq!(v(r#"tracker_relay_seconds_bucket{le="5"}"#), 1.0);
        assert_eq!(v(r#"tracker_relay_seconds_bucket{le="+Inf"}"#), 2.0);
        assert_eq!(v("tracker_relay_seconds_count"), 2.0);
        assert!((v("tracker_relay_seconds_sum") - 7.0003).abs() < 1e-9);
        assert_eq!(
            v(r#"tracker_messages_received_total{kind="join",format="msgpack"}"#),
            0.0
        );
        assert!(text.contains("# TYPE tracker_relay_seconds histogram"));
        assert!(text.contains("# HELP tracker_connections Open WebSocket connections."));
        assert!(v("process_resident_memory_bytes") > 0.0);
    }
}
