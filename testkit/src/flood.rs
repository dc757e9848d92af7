//! Stalled receivers flooded with worst-case signals: what a viewer that never reads costs a
//! tracker, in bytes (issue 14, "Bytes, not counts").
//!
//! `receivers` JSON viewers join one swarm with a small receive buffer and then never read
//! again; `senders` MessagePack viewers join it too and send each receiver `per_receiver`
//! signals of the worst kind, reading their own replies (`overloaded`) so that they stay
//! healthy themselves:
//! - [`Worst::Sdp`]: offers whose SDP fills `max_message_bytes` with `"`, which a JSON writer
//!   doubles (`\"`; control characters, which it would make six times larger, are refused);
//! - [`Worst::Padded`]: small `cands`, each in a frame padded to `max_message_bytes` with a
//!   field the tracker ignores, so that each signal comes in a frame far larger than itself
//!   (after ten offers as above, so that they wait in the outbox).
//!
//! The tracker's RSS is read from /proc before the receivers come, once they joined, and once
//! every signal sent was either relayed or dropped. `scripts/bench stalled` runs it; the
//! figure goes in docs/BENCHMARKS.md and the bound it is held to in docs/ARCHITECTURE.md.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use swarmtrack_protocol::{Format, PeerId, encode_client};
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

use crate::http::metric_value;
use crate::native::{Client, offer};
use crate::wait::Deadline;

/// The signals a flood is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worst {
    /// Offers of the largest SDP, every byte one a JSON writer escapes.
    Sdp,
    /// Small `cands`, each in a frame padded to `max_message_bytes` with a field the tracker
    /// ignores, after enough large offers that they wait.
    Padded,
}

/// A flood's shape.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// Stalled receivers.
    pub receivers: usize,
    /// Sending viewers, each to every receiver.
    pub senders: usize,
    /// Signals each sender sends each receiver.
    pub per_receiver: usize,
    /// The tracker's `limits.max_message_bytes`.
    pub max_message_bytes: usize,
    /// What is sent.
    pub worst: Worst,
}

/// What a flood cost the tracker.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    /// Tracker RSS before the receivers connected, bytes.
    pub rss_before: u64,
    /// Once they had joined, idle, bytes.
    pub rss_idle: u64,
    /// Once the flood was relayed or dropped, bytes.
    pub rss_flooded: u64,
    /// Signals sent.
    pub sent: u64,
    /// Of them relayed into an outbox.
    pub relayed: u64,
    /// Of them dropped at a full outbox (`queue_full`).
    pub dropped: u64,
    /// The bytes of those, as the outboxes count them.
    pub dropped_bytes: u64,
    /// Receivers the tracker closed as slow meanwhile (it must not, within the write timeout).
    pub closed_slow: u64,
}

impl FloodReport {
    /// RSS growth per stalled receiver, bytes.
    pub fn per_receiver(&self, receivers: usize) -> i64 {
        (self.rss_flooded as i64 - self.rss_idle as i64) / receivers.max(1) as i64
    }
}

/// The resident set of process `pid`, in bytes.
///
/// # Panics
/// When /proc has no such process.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Runs `flood` against the tracker at `ws_url` (its `/v1/ws`), whose process is `pid` and
/// whose `/metrics` are served on `metrics_addr`.
///
/// # Panics
/// When a connection fails or the tracker doesn't account for every signal within a minute.
pub async fn stalled_receivers(
    ws_url: &str,
    metrics_addr: std::net::SocketAddr,
    pid: u32,
    flood: Flood,
) -> FloodReport {
    const SWARM: &str = "flood";
    let rss_before = rss(pid);
    let mut receivers = Vec::with_capacity(flood.receivers);
    for _ in 0..flood.receivers {
        receivers.push(stalled(ws_url).await);
    }
    let ids: Vec<PeerId> = receivers.iter().map(|r| r.peer).collect();
    for r in &mut receivers {
        r.join(SWARM, 1).await;
    }
    // The receivers read nothing from here on; their kernel buffers fill first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = rss(pid);
    let before = metrics(metrics_addr).await;
    let frames = frames(&ids, flood);
    let per_sender = frames.len().div_ceil(flood.senders.max(1));
    let mut tasks = Vec::new();
    for chunk in frames.chunks(per_sender.max(1)).map(<[_]>::to_vec) {
        let url = ws_url.to_string();
        tasks.push(tokio::spawn(
            async move { send_all(&url, SWARM, chunk).await },
        ));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.expect("sender");
    }
    // Every signal relayed into an outbox or dropped: the tracker is done with the flood.
    let deadline = Deadline::after("the flood accounted for", Duration::from_secs(60));
    let after = loop {
        let m = metrics(metrics_addr).await;
        if m.relayed + m.dropped - before.relayed - before.dropped >= sent {
            break m;
        }
        assert!(
            !deadline.passed(),
            "the tracker accounted for {} of {sent} signals",
            m.relayed + m.dropped - before.relayed - before.dropped
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // What the sessions took from their outboxes is written (or waits) by now too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_flooded = rss(pid);
    let closed_slow = metrics(metrics_addr).await.closed_slow - before.closed_slow;
    drop(receivers);
    FloodReport {
        rss_before,
        rss_idle,
        rss_flooded,
        sent,
        relayed: after.relayed - before.relayed,
        dropped: after.dropped - before.dropped,
        dropped_bytes: after.dropped_bytes - before.dropped_bytes,
        closed_slow,
    }
}

/// A JSON viewer whose socket takes as little as the kernel allows, and which will stop
/// reading once it has joined.
async fn stalled(ws_url: &str) -> Client {
    let uri: tokio_tungstenite::tungstenite::http::Uri = ws_url.parse().expect("ws url");
    let addr = format!(
        "{}:{}",
        uri.host().expect("host"),
        uri.port_u16().expect("port")
    );
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(ws_url, MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade");
    Client::from_ws(ws, Format::Json).await
}

/// The frames of a flood, each to be sent by one of the senders.
fn frames(ids: &[PeerId], flood: Flood) -> Vec<Vec<u8>> {
    // The envelope (t, swarm, to, sid and their keys) takes ~70 bytes in MessagePack.
    let sdp = "\"".repeat(flood.max_message_bytes - 128);
    let offers = |rounds: usize, out: &mut Vec<Vec<u8>>| {
        for round in 0..rounds {
            for &to in ids {
                let sid = format!("o{round}");
                let msg = offer("flood", to, &sid, &sdp);
                out.push(encode_client(&msg, Format::MsgPack).expect("encode"));
            }
        }
    };
    let mut out = Vec::new();
    match flood.worst {
        Worst::Sdp => offers(flood.per_receiver, &mut out),
        Worst::Padded => {
            // Enough to fill the kernel's buffers and the unsent output: what follows waits.
            offers(10, &mut out);
            let pad = "x".repeat(flood.max_message_bytes - 256);
            for round in 0..flood.per_receiver {
                for &to in ids {
                    let frame = serde_json::json!({
                        "t": "cands", "swarm": "flood", "to": to.to_string(),
                        "sid": format!("c{round}"),
                        "c": ["candidate:1 1 udp 2122260223 192.168.1.20 50000 typ host"],
                        "pad": pad,
                    });
                    out.push(rmp_serde::to_vec_named(&frame).expect("encode"));
                }
            }
        }
    }
    out
}

/// One sender: joins, sends its frames while reading (and dropping) its replies; returns how
/// many signals it sent.
async fn send_all(url: &str, swarm: &str, frames: Vec<Vec<u8>>) -> u64 {
    let mut c = Client::connect_url(url, Format::MsgPack).await;
    c.join(swarm, 1).await;
    let (mut sink, mut stream) = c.into_ws().split();
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let mut signals = 0u64;
    for f in frames {
        signals += signals_in(&f);
        sink.send(Message::Binary(f.into())).await.expect("send");
    }
    // The replies (`overloaded`) are read until the tracker has answered everything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = sink.close().await;
    reader.abort();
    signals
}

/// Signals in one flood frame: a batch's messages, or one.
fn signals_in(frame: &[u8]) -> u64 {
    match rmp_serde::from_slice::<serde_json::Value>(frame) {
        Ok(v) => v
            .get("msgs")
            .and_then(|m| m.as_array())
            .map_or(1, |m| m.len() as u64),
        Err(_) => 1,
    }
}

/// The counters a flood is measured by.
struct Counters {
    relayed: u64,
    dropped: u64,
    dropped_bytes: u64,
    closed_slow: u64,
}

async fn metrics(addr: std::net::SocketAddr) -> Counters {
    let (_, text) = crate::http::request(addr, "GET", "/metrics", &[]).await;
    let sum = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    Counters {
        relayed: sum("tracker_messages_relayed_total{"),
        dropped: metric_value(
            &text,
            r#"tracker_messages_dropped_total{reason="queue_full"}"#,
        ) as u64,
        dropped_bytes: metric_value(
            &text,
            r#"tracker_outbox_dropped_bytes_total{reason="queue_full"}"#,
        ) as u64,
        closed_slow: metric_value(&text, r#"tracker_connections_closed_total{reason="slow"}"#)
            as u64,
    }
}
