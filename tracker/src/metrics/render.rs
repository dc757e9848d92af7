//! The Prometheus text exposition (format 0.0.4) of the shards, summed.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{
    AcceptError, BatchRefusal, CloseReason, Counter, DirectorySkip, DropReason, FailureKind,
    Histogram, Levels, MembershipDrop, Origin, ReceivedKind, RefuseReason, RelayPath, RemoteDrop,
    Shard, SignalKind, process,
};
use swarmtrack_protocol::{ErrorCode, Format};

struct Out<'a> {
    text: String,
    shards: &'a [Arc<Shard>],
}

impl Out<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sum(&self, f: impl Fn(&Shard) -> &Counter) -> u64 {
        self.shards.iter().map(|s| f(s).get()).sum()
    }

    fn counter(&mut self, name: &str, help: &str, f: impl Fn(&Shard) -> &Counter) {
        self.head(name, "counter", help);
        let v = self.sum(f);
        let _ = writeln!(self.text, "{name} {v}");
    }

    /// A counter family with one label, one series per value.
    fn labeled<L: Copy>(
        &mut self,
        (name, label, help): (&str, &str, &str),
        values: &[L],
        text: impl Fn(L) -> &'static str,
        f: impl Fn(&Shard, L) -> &Counter,
    ) {
        self.head(name, "counter", help);
        for &v in values {
            let n = self.sum(|s| f(s, v));
            let _ = writeln!(self.text, "{name}{{{label}=\"{}\"}} {n}", text(v));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, v: i64) {
        self.head(name, "gauge", help);
        let _ = writeln!(self.text, "{name} {v}");
    }

    fn histogram(&mut self, name: &str, help: &str, f: impl Fn(&Shard) -> &Histogram) {
        self.head(name, "histogram", help);
        let Some(first) = self.shards.first() else {
            return;
        };
        let bounds = f(first).bounds();
        let mut cumulative = 0u64;
        for i in 0..=bounds.len() {
            cumulative += self.shards.iter().map(|s| f(s).count(i)).sum::<u64>();
            match bounds.get(i) {
                Some(b) => {
                    let _ = writeln!(self.text, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(self.text, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum: f64 = self.shards.iter().map(|s| f(s).sum()).sum();
        let _ = writeln!(self.text, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

pub(super) fn render(shards: &[Arc<Shard>], levels: &Levels) -> String {
    let mut o = Out {
        text: String::with_capacity(16 * 1024),
        shards,
    };
    let delta = |f: fn(&Shard) -> i64| shards.iter().map(|s| f(s)).sum::<i64>();
    o.gauge(
        "tracker_connections",
        "Open WebSocket connections.",
        delta(|s| s.connections.get()),
    );
    o.gauge(
        "tracker_http_connections",
        "Connections not upgraded yet (HTTP before the WebSocket upgrade); they count toward limits.max_connections with tracker_connections.",
        delta(|s| s.http_connections.get()),
    );
    o.labeled(
        (
            "tracker_accept_errors_total",
            "kind",
            "Failed accepts, by kind (descriptors: out of file descriptors, the waiting connection closed).",
        ),
        AcceptError::ALL,
        AcceptError::as_str,
        |s, k| &s.accept_errors[k as usize],
    );
    o.counter(
        "tracker_connections_opened_total",
        "WebSocket connections accepted.",
        |s| &s.connections_opened,
    );
    o.labeled(
        (
            "tracker_connections_closed_total",
            "reason",
            "WebSocket connections ended, by reason.",
        ),
        CloseReason::ALL,
        CloseReason::as_str,
        |s, r| &s.closed[r as usize],
    );
    o.gauge(
        "tracker_viewers",
        "Open connections that have joined a swarm or announced.",
        delta(|s| s.viewers.get()),
    );
    o.labeled(
        (
            "tracker_viewers_joined_total",
            "origin",
            "Connections whose first join or announce succeeded, by origin (new, reconnect).",
        ),
        Origin::ALL,
        Origin::as_str,
        |s, origin| &s.viewers_joined[origin as usize],
    );
    o.labeled(
        (
            "tracker_connections_refused_total",
            "reason",
            "Upgrades refused, by reason.",
        ),
        RefuseReason::ALL,
        RefuseReason::as_str,
        |s, r| &s.refused[r as usize],
    );
    o.head(
        "tracker_messages_received_total",
        "counter",
        "Client messages, by kind and frame format.",
    );
    for &k in ReceivedKind::ALL {
        for f in [Format::Json, Format::MsgPack] {
            let n = o.sum(|s| &s.received[k as usize][f as usize]);
            let _ = writeln!(
                o.text,
                "tracker_messages_received_total{{kind=\"{}\",format=\"{}\"}} {n}",
                k.as_str(),
                f.as_str()
            );
        }
    }
    o.head(
        "tracker_messages_relayed_total",
        "counter",
        "Signals handed to a target viewer, by kind and path.",
    );
    for &k in SignalKind::ALL {
        for &p in RelayPath::ALL {
            let n = o.sum(|s| &s.relayed[k as usize][p as usize]);
            let _ = writeln!(
                o.text,
                "tracker_messages_relayed_total{{kind=\"{}\",path=\"{}\"}} {n}",
                k.as_str(),
                p.as_str()
            );
        }
    }
    o.labeled(
        (
            "tracker_messages_dropped_total",
            "reason",
            "Signals not delivered or messages not processed, by reason.",
        ),
        DropReason::ALL,
        DropReason::as_str,
        |s, r| &s.dropped[r as usize],
    );
    o.labeled(
        (
            "tracker_outbox_dropped_bytes_total",
            "reason",
            "Bytes of the signals dropped at a viewer's outbox (full, or the viewer left), as \
             the outbox counts them.",
        ),
        &[DropReason::QueueFull, DropReason::TargetClosed],
        DropReason::as_str,
        |s, r| &s.dropped_bytes[r as usize],
    );
    o.labeled(
        (
            "tracker_errors_sent_total",
            "code",
            "Error replies sent to viewers, by code.",
        ),
        &ErrorCode::ALL,
        ErrorCode::as_str,
        |s, c| &s.errors[c as usize],
    );
    o.labeled(
        (
            "tracker_webtorrent_failures_total",
            "reason",
            "WebTorrent `failure reason` replies, by reason.",
        ),
        FailureKind::ALL,
        FailureKind::as_str,
        |s, r| &s.webtorrent_failures[r as usize],
    );
    for (name, help, f) in [
        (
            "tracker_frames_sent_total",
            "WebSocket frames written to viewers.",
            (|s: &Shard| &s.frames_sent) as fn(&Shard) -> &Counter,
        ),
        (
            "tracker_messages_sent_total",
            "Messages written to viewers; over frames it is the coalescing factor.",
            |s| &s.messages_sent,
        ),
        (
            "tracker_received_bytes_total",
            "Payload bytes read from viewers.",
            |s| &s.bytes_received,
        ),
        (
            "tracker_sent_bytes_total",
            "Payload bytes written to viewers.",
            |s| &s.bytes_sent,
        ),
        (
            "tracker_pings_received_total",
            "WebSocket pings received from viewers.",
            |s| &s.pings_received,
        ),
        (
            "tracker_pings_rate_limited_total",
            "WebSocket pings over the connection's message rate (each takes a token like a message).",
            |s| &s.pings_rate_limited,
        ),
    ] {
        o.counter(name, help, f);
    }
    o.gauge(
        "tracker_swarms",
        "Swarms with at least one local viewer.",
        delta(|s| s.swarms.get()),
    );
    o.gauge(
        "tracker_memberships",
        "Local swarm memberships.",
        delta(|s| s.memberships.get()),
    );
    let level = |a: &std::sync::atomic::AtomicI64| a.load(Ordering::Relaxed);
    o.gauge(
        "tracker_draining",
        "1 while the instance drains.",
        level(&levels.draining),
    );
    o.histogram("tracker_join_seconds", "Time from join to peers.", |s| {
        &s.join_seconds
    });
    o.histogram(
        "tracker_announce_seconds",
        "Time to process a WebTorrent announce.",
        |s| &s.announce_seconds,
    );
    o.histogram(
        "tracker_relay_seconds",
        "Time from a signal's arrival to its write to the target.",
        |s| &s.relay_seconds,
    );
    render_redis(&mut o, levels);
    render_process(&mut o);
    o.text
}

fn render_redis(o: &mut Out<'_>, levels: &Levels) {
    let level = |a: &std::sync::atomic::AtomicI64| a.load(Ordering::Relaxed);
    o.gauge(
        "tracker_redis_up",
        "1 while the Redis command link is up.",
        level(&levels.redis_up),
    );
    o.gauge(
        "tracker_redis_subscribed",
        "1 while subscribed to this instance's relay channel.",
        level(&levels.redis_subscribed),
    );
    for (name, help, f) in [
        (
            "tracker_redis_reconnects_total",
            "Reconnections of the Redis command link.",
            (|s: &Shard| &s.redis_reconnects) as fn(&Shard) -> &Counter,
        ),
        (
            "tracker_redis_resubscribes_total",
            "Resubscriptions of the relay channel; messages published meanwhile are lost.",
            |s| &s.redis_resubscribes,
        ),
        (
            "tracker_remote_inbound_dropped_total",
            "Received batches dropped because the inbound queue was full.",
            |s| &s.remote_inbound_dropped,
        ),
        (
            "tracker_batches_published_total",
            "Batches published to other instances.",
            |s| &s.batches_published,
        ),
        (
            "tracker_batches_received_total",
            "Batches received from other instances.",
            |s| &s.batches_received,
        ),
        (
            "tracker_batch_raw_bytes_total",
            "MessagePack bytes of published batches before compression.",
            |s| &s.batch_raw_bytes,
        ),
        (
            "tracker_batch_wire_bytes_total",
            "Bytes of published batches as sent to Redis.",
            |s| &s.batch_wire_bytes,
        ),
        (
            "tracker_batches_compressed_total",
            "Published batches that were deflated.",
            |s| &s.batches_compressed,
        ),
        (
            "tracker_redis_errors_total",
            "Membership commands that failed or were skipped (Redis down, timeout, error).",
            |s| &s.redis_errors,
        ),
        (
            "tracker_instance_id_conflicts_total",
            "Refreshes that found this instance's id held by another tracker.",
            |s| &s.instance_id_conflicts,
        ),
        (
            "tracker_liveness_refused_total",
            "Instance heartbeats read from Redis that don't verify under the fleet key.",
            |s| &s.liveness_refused,
        ),
        (
            "tracker_remote_unconfirmed_total",
            "Signals whose publish timed out or lost its link before Redis answered (delivered or not: unknown).",
            |s| &s.remote_unconfirmed,
        ),
    ] {
        o.counter(name, help, f);
    }
    o.labeled(
        (
            "tracker_remote_dropped_total",
            "reason",
            "Signals to or from other instances dropped, by reason.",
        ),
        RemoteDrop::ALL,
        RemoteDrop::as_str,
        |s, r| &s.remote_dropped[r as usize],
    );
    o.labeled(
        (
            "tracker_membership_writes_dropped_total",
            "reason",
            "Membership writes to Redis dropped, by reason.",
        ),
        MembershipDrop::ALL,
        MembershipDrop::as_str,
        |s, r| &s.membership_dropped[r as usize],
    );
    o.labeled(
        (
            "tracker_remote_batches_refused_total",
            "reason",
            "Batches received from Redis refused before decoding (their signals never counted), by reason.",
        ),
        BatchRefusal::ALL,
        BatchRefusal::as_str,
        |s, r| &s.batches_refused[r as usize],
    );
    o.labeled(
        (
            "tracker_directory_skipped_total",
            "reason",
            "Members read from Redis and not handed out, by reason.",
        ),
        DirectorySkip::ALL,
        DirectorySkip::as_str,
        |s, r| &s.directory_skipped[r as usize],
    );
    o.histogram(
        "tracker_batch_messages",
        "Signals per published batch.",
        |s| &s.batch_messages,
    );
    o.histogram(
        "tracker_batch_bytes",
        "Bytes per published batch, as sent to Redis.",
        |s| &s.batch_bytes,
    );
}

fn render_process(o: &mut Out<'_>) {
    let Some(p) = process::read() else {
        return;
    };
    o.head(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    );
    let _ = writeln!(o.text, "process_cpu_seconds_total {}", p.cpu_seconds);
    for (name, help, v) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes as f64,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds as f64,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            p.max_fds as f64,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time,
        ),
    ] {
        o.head(name, "gauge", help);
        let _ = writeln!(o.text, "{name} {v}");
    }
}
