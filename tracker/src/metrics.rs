//! The tracker's Prometheus metrics.
//!
//! Each tracker owns its recorder (not the process-global one), so several trackers in one
//! process, as in the tests, keep separate figures. Every handle is created once here; the
//! message path only touches atomics. Labels are fixed sets, never swarm or peer ids.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::protocol::{ErrorCode, Format};
use crate::relay::SignalKind;
use crate::webtorrent::request::FailureKind;

/// Latency buckets for `_seconds` histograms: 50 µs to 5 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Why a connection ended; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The viewer closed it or the socket failed.
    Client,
    /// No frame within the idle timeout.
    Idle,
    /// Writes stalled: a slow consumer.
    Slow,
    /// A frame too big to read.
    TooBig,
    /// A WebSocket protocol violation (bad frame, invalid UTF-8 in text).
    Protocol,
    /// Closed by drain or shutdown.
    Drain,
}

impl CloseReason {
    const ALL: [CloseReason; 6] = [
        CloseReason::Client,
        CloseReason::Idle,
        CloseReason::Slow,
        CloseReason::TooBig,
        CloseReason::Protocol,
        CloseReason::Drain,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Idle => "idle",
            CloseReason::Slow => "slow",
            CloseReason::TooBig => "too_big",
            CloseReason::Protocol => "protocol",
            CloseReason::Drain => "drain",
        }
    }
}

/// Why a viewer connected: on its own, or told to by a draining instance (it asked for
/// `/v1/ws?reconnect=1`); the label of `tracker_viewers_joined_total`, so an autoscaler counts
/// arrivals without the viewers a drain moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A new viewer (or one back after an error).
    New,
    /// A viewer moved here by another instance's drain.
    Reconnect,
}

impl Origin {
    const ALL: [Origin; 2] = [Origin::New, Origin::Reconnect];

    fn as_str(self) -> &'static str {
        match self {
            Origin::New => "new",
            Origin::Reconnect => "reconnect",
        }
    }
}

/// Why an upgrade was refused; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// At `max_connections`.
    Full,
    /// The instance is draining.
    Draining,
    /// `Origin` not allowed.
    Origin,
}

/// Why a relayed message was not delivered; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The target's outbox was full.
    QueueFull,
    /// The target is gone.
    UnknownPeer,
    /// The target is not in that swarm (the sender gets `unknown_peer`).
    TargetNotInSwarm,
    /// The sender is not in that swarm (the sender gets `not_in_swarm`).
    SenderNotInSwarm,
    /// The sender was over its message rate.
    RateLimited,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::UnknownPeer,
        DropReason::TargetNotInSwarm,
        DropReason::SenderNotInSwarm,
        DropReason::RateLimited,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::TargetNotInSwarm => "target_not_in_swarm",
            DropReason::SenderNotInSwarm => "sender_not_in_swarm",
            DropReason::RateLimited => "rate_limited",
        }
    }
}

/// All metric handles of one tracker, plus the renderer.
pub struct Metrics {
    handle: PrometheusHandle,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Connections opened since start.
    pub connections_opened: Counter,
    /// Open connections that have joined a swarm (or announced) at least once.
    pub viewers: Gauge,
    viewers_joined: [Counter; Origin::ALL.len()],
    closed: [Counter; CloseReason::ALL.len()],
    refused: [Counter; 3],
    received: [[Counter; 2]; RECEIVED_KINDS.len()],
    webtorrent_failures: [Counter; FailureKind::ALL.len()],
    /// Time to process a WebTorrent announce (reply written, offers handed to the relay).
    pub announce_seconds: Histogram,
    relayed_local: [Counter; 3],
    dropped: [Counter; DropReason::ALL.len()],
    errors: [Counter; ErrorCode::ALL.len()],
    /// WebSocket frames written to viewers.
    pub frames_sent: Counter,
    /// Messages written to viewers (a coalesced `batch` frame holds several).
    pub messages_sent: Counter,
    /// Payload bytes read from viewers.
    pub bytes_received: Counter,
    /// Payload bytes written to viewers.
    pub bytes_sent: Counter,
    /// Swarms with at least one local member.
    pub swarms: Gauge,
    /// Local swarm memberships (a viewer in two swarms counts twice).
    pub memberships: Gauge,
    /// 1 while draining.
    pub draining: Gauge,
    /// Time to answer a `join` with `peers`.
    pub join_seconds: Histogram,
    /// Time from a signal's arrival to its write on the target's socket.
    pub relay_seconds: Histogram,
    /// 1 while the Redis command link is up (0 also when Redis isn't configured).
    pub redis_up: Gauge,
    /// 1 while this instance is subscribed to its relay channel.
    pub redis_subscribed: Gauge,
    /// Reconnections of the Redis command link.
    pub redis_reconnects: Counter,
    /// Resubscriptions of the relay channel (each one may have lost messages).
    pub redis_resubscribes: Counter,
    /// Batches received from Redis and dropped because the inbound queue was full.
    pub remote_inbound_dropped: Counter,
    relayed_remote: [Counter; 3],
    remote_dropped: [Counter; RemoteDrop::ALL.len()],
    /// Batches published to other instances.
    pub batches_published: Counter,
    /// Batches received from other instances.
    pub batches_received: Counter,
    /// Signals per published batch.
    pub batch_messages: Histogram,
    /// Bytes per published batch, as sent to Redis.
    pub batch_bytes: Histogram,
    /// MessagePack bytes of published batches, before compression.
    pub batch_raw_bytes_total: Counter,
    /// Bytes of published batches as sent to Redis.
    pub batch_wire_bytes_total: Counter,
    /// Published batches that were deflated.
    pub batches_compressed: Counter,
    /// Membership and pairing commands that failed (Redis down, timeout, error).
    pub redis_errors: Counter,
    /// Refreshes that found this instance's id held by another tracker.
    pub instance_id_conflicts: Counter,
}

/// Why a signal for or from another instance was dropped; a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteDrop {
    /// Redis was down when the signal was to be sent.
    RedisDown,
    /// The outbound queue to the batcher was full.
    OutboundFull,
    /// The publish failed.
    PublishFailed,
    /// A received batch didn't decode.
    BadBatch,
    /// Published, but no instance was subscribed to that channel (the target instance is
    /// gone or resubscribing).
    NoSubscriber,
}

impl RemoteDrop {
    const ALL: [RemoteDrop; 5] = [
        RemoteDrop::RedisDown,
        RemoteDrop::OutboundFull,
        RemoteDrop::PublishFailed,
        RemoteDrop::BadBatch,
        RemoteDrop::NoSubscriber,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RemoteDrop::RedisDown => "redis_down",
            RemoteDrop::OutboundFull => "outbound_full",
            RemoteDrop::PublishFailed => "publish_failed",
            RemoteDrop::BadBatch => "bad_batch",
            RemoteDrop::NoSubscriber => "no_subscriber",
        }
    }
}

/// What a received message was, for `tracker_messages_received_total{kind}`.
#[derive(Debug, Clone, Copy)]
pub enum ReceivedKind {
    /// `join`
    Join = 0,
    /// `leave`
    Leave,
    /// `offer`
    Offer,
    /// `answer`
    Answer,
    /// `cands`
    Cands,
    /// `ping`
    Ping,
    /// Refused before its type was known: undecodable, too large, or over the rate.
    Invalid,
    /// WebTorrent `announce` (without an answer; one carrying an answer counts as `answer`).
    Announce,
    /// WebTorrent `scrape`.
    Scrape,
}

const RECEIVED_KINDS: [&str; 9] = [
    "join", "leave", "offer", "answer", "cands", "ping", "invalid", "announce", "scrape",
];

impl Metrics {
    /// Builds a recorder and registers every metric, so all series exist from the start.
    pub fn new() -> Self {
        let recorder = build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || Self::register(handle))
    }

    fn register(handle: PrometheusHandle) -> Self {
        use metrics::{
            counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
        };
        describe_gauge!("tracker_connections", "Open WebSocket connections.");
        describe_counter!(
            "tracker_connections_opened_total",
            "WebSocket connections accepted."
        );
        describe_gauge!(
            "tracker_viewers",
            "Open connections that have joined a swarm or announced."
        );
        describe_counter!(
            "tracker_viewers_joined_total",
            "Connections whose first join or announce succeeded, by origin (new, reconnect)."
        );
        describe_counter!(
            "tracker_connections_closed_total",
            "WebSocket connections ended, by reason."
        );
        describe_counter!(
            "tracker_connections_refused_total",
            "Upgrades refused, by reason."
        );
        describe_counter!(
            "tracker_messages_received_total",
            "Client messages, by kind and frame format."
        );
        describe_counter!(
            "tracker_messages_relayed_total",
            "Signals handed to a target viewer, by kind and path."
        );
        describe_counter!(
            "tracker_messages_dropped_total",
            "Messages not delivered or not processed, by reason."
        );
        describe_counter!(
            "tracker_errors_sent_total",
            "Error replies sent to viewers, by code."
        );
        describe_counter!(
            "tracker_frames_sent_total",
            "WebSocket frames written to viewers."
        );
        describe_counter!(
            "tracker_messages_sent_total",
            "Messages written to viewers; over frames it is the coalescing factor."
        );
        describe_counter!(
            "tracker_received_bytes_total",
            "Payload bytes read from viewers."
        );
        describe_counter!(
            "tracker_sent_bytes_total",
            "Payload bytes written to viewers."
        );
        describe_gauge!("tracker_swarms", "Swarms with at least one local viewer.");
        describe_gauge!("tracker_memberships", "Local swarm memberships.");
        describe_gauge!("tracker_draining", "1 while the instance drains.");
        describe_histogram!("tracker_join_seconds", "Time from join to peers.");
        describe_histogram!(
            "tracker_announce_seconds",
            "Time to process a WebTorrent announce."
        );
        describe_counter!(
            "tracker_webtorrent_failures_total",
            "WebTorrent `failure reason` replies, by reason."
        );
        describe_histogram!(
            "tracker_relay_seconds",
            "Time from a signal's arrival to its write to the target."
        );
        for (name, help) in [
            ("tracker_redis_up", "1 while the Redis command link is up."),
            (
                "tracker_redis_subscribed",
                "1 while subscribed to this instance's relay channel.",
            ),
        ] {
            describe_gauge!(name, help);
        }
        for (name, help) in [
            (
                "tracker_redis_reconnects_total",
                "Reconnections of the Redis command link.",
            ),
            (
                "tracker_redis_resubscribes_total",
                "Resubscriptions of the relay channel; messages published meanwhile are lost.",
            ),
            (
                "tracker_remote_dropped_total",
                "Signals to or from other instances dropped, by reason.",
            ),
            (
                "tracker_remote_inbound_dropped_total",
                "Received batches dropped because the inbound queue was full.",
            ),
            (
                "tracker_batches_published_total",
                "Batches published to other instances.",
            ),
            (
                "tracker_batches_received_total",
                "Batches received from other instances.",
            ),
            (
                "tracker_batch_raw_bytes_total",
                "MessagePack bytes of published batches before compression.",
            ),
            (
                "tracker_batch_wire_bytes_total",
                "Bytes of published batches as sent to Redis.",
            ),
            (
                "tracker_batches_compressed_total",
                "Published batches that were deflated.",
            ),
            (
                "tracker_redis_errors_total",
                "Membership commands that failed or were skipped (Redis down, timeout, error).",
            ),
            (
                "tracker_instance_id_conflicts_total",
                "Refreshes that found this instance's id held by another tracker.",
            ),
        ] {
            describe_counter!(name, help);
        }
        describe_histogram!("tracker_batch_messages", "Signals per published batch.");
        describe_histogram!(
            "tracker_batch_bytes",
            "Bytes per published batch, as sent to Redis."
        );

        let closed = CloseReason::ALL
            .map(|r| counter!("tracker_connections_closed_total", "reason" => r.as_str()));
        let viewers_joined =
            Origin::ALL.map(|o| counter!("tracker_viewers_joined_total", "origin" => o.as_str()));
        let refused = ["full", "draining", "origin"]
            .map(|r| counter!("tracker_connections_refused_total", "reason" => r));
        let received = RECEIVED_KINDS.map(|kind| {
            [Format::Json, Format::MsgPack].map(|f| {
                counter!("tracker_messages_received_total", "kind" => kind, "format" => f.as_str())
            })
        });
        let webtorrent_failures = FailureKind::ALL
            .map(|r| counter!("tracker_webtorrent_failures_total", "reason" => r.as_str()));
        let relayed_local = SignalKind::ALL.map(
            |k| counter!("tracker_messages_relayed_total", "kind" => k.as_str(), "path" => "local"),
        );
        let dropped = DropReason::ALL
            .map(|r| counter!("tracker_messages_dropped_total", "reason" => r.as_str()));
        let errors =
            ErrorCode::ALL.map(|c| counter!("tracker_errors_sent_total", "code" => c.as_str()));
        let relayed_remote = SignalKind::ALL.map(|k| {
            counter!("tracker_messages_relayed_total", "kind" => k.as_str(), "path" => "remote")
        });
        let remote_dropped = RemoteDrop::ALL
            .map(|r| counter!("tracker_remote_dropped_total", "reason" => r.as_str()));
        Self {
            handle,
            connections: gauge!("tracker_connections"),
            connections_opened: counter!("tracker_connections_opened_total"),
            viewers: gauge!("tracker_viewers"),
            viewers_joined,
            closed,
            refused,
            received,
            webtorrent_failures,
            announce_seconds: histogram!("tracker_announce_seconds"),
            relayed_local,
            dropped,
            errors,
            frames_sent: counter!("tracker_frames_sent_total"),
            messages_sent: counter!("tracker_messages_sent_total"),
            bytes_received: counter!("tracker_received_bytes_total"),
            bytes_sent: counter!("tracker_sent_bytes_total"),
            swarms: gauge!("tracker_swarms"),
            memberships: gauge!("tracker_memberships"),
            draining: gauge!("tracker_draining"),
            join_seconds: histogram!("tracker_join_seconds"),
            relay_seconds: histogram!("tracker_relay_seconds"),
            redis_up: gauge!("tracker_redis_up"),
            redis_subscribed: gauge!("tracker_redis_subscribed"),
            redis_reconnects: counter!("tracker_redis_reconnects_total"),
            redis_resubscribes: counter!("tracker_redis_resubscribes_total"),
            remote_inbound_dropped: counter!("tracker_remote_inbound_dropped_total"),
            relayed_remote,
            remote_dropped,
            batches_published: counter!("tracker_batches_published_total"),
            batches_received: counter!("tracker_batches_received_total"),
            batch_messages: histogram!("tracker_batch_messages"),
            batch_bytes: histogram!("tracker_batch_bytes"),
            batch_raw_bytes_total: counter!("tracker_batch_raw_bytes_total"),
            batch_wire_bytes_total: counter!("tracker_batch_wire_bytes_total"),
            batches_compressed: counter!("tracker_batches_compressed_total"),
            redis_errors: counter!("tracker_redis_errors_total"),
            instance_id_conflicts: counter!("tracker_instance_id_conflicts_total"),
        }
    }

    /// Counts a closed connection.
    pub fn closed(&self, reason: CloseReason) {
        self.closed[reason as usize].increment(1);
    }

    /// Counts a connection's first successful join or announce.
    pub fn viewer_joined(&self, origin: Origin) {
        self.viewers_joined[origin as usize].increment(1);
    }

    /// Counts a refused upgrade.
    pub fn refused(&self, reason: RefuseReason) {
        self.refused[reason as usize].increment(1);
    }

    /// Counts a received message.
    pub fn received(&self, kind: ReceivedKind, format: Format) {
        self.received[kind as usize][format as usize].increment(1);
    }

    /// Counts a WebTorrent failure reply.
    pub fn webtorrent_failure(&self, kind: FailureKind) {
        self.webtorrent_failures[kind as usize].increment(1);
    }

    /// Counts a signal handed to a local target.
    pub fn relayed_local(&self, kind: SignalKind) {
        self.relayed_local[kind as usize].increment(1);
    }

    /// Counts a signal from another instance handed to a local target.
    pub fn relayed_remote(&self, kind: SignalKind) {
        self.relayed_remote[kind as usize].increment(1);
    }

    /// Counts a signal to or from another instance that was dropped.
    pub fn remote_dropped(&self, reason: RemoteDrop, n: u64) {
        self.remote_dropped[reason as usize].increment(n);
    }

    /// Counts an undelivered signal.
    pub fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].increment(1);
    }

    /// Counts an error reply.
    pub fn error_sent(&self, code: ErrorCode) {
        self.errors[code as usize].increment(1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram samples into their buckets; call it periodically.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// How often [`Metrics::upkeep`] should run.
    pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn build_recorder() -> PrometheusRecorder {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("tracker_batch_messages".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("tracker_batch_bytes".into()),
                &[
                    256.0,
                    1024.0,
                    4096.0,
                    16384.0,
                    65536.0,
                    262_144.0,
                    1_048_576.0,
                ],
            )
        });
    // Fixed, non-empty bucket lists can't fail; fall back to summaries if they ever do.
    match builder {
        Ok(b) => b.build_recorder(),
        Err(_) => PrometheusBuilder::new().build_recorder(),
    }
}
