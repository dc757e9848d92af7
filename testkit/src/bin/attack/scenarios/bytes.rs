//! Item 2, memory bounded in bytes: receivers that never read flooded with byte-heavy signals
//! (RSS per stalled receiver), victims that read normally sent large frames (RSS they keep
//! afterwards) and an SDP of control characters (refused?), and sockets holding an unfinished
//! fragmented message open with pings (closed in time?).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use swarmtrack_protocol::{Cands, ClientMsg, Format, ServerMsg};
use testkit::native::{Client, offer};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::{Checks, kib};
use crate::fleet::Fleet;
use crate::net::{viewer_from, viewer_with, ws_from};
use crate::table::Row;
use crate::{
    FRAGMENT_CLOSE_MAX, SETUP, STALLED_RECEIVER_BYTES_MAX, Scale, VICTIM_RETAINED_BYTES_MAX,
};

/// Empty candidates in one `cands`: 8 KB of MessagePack, ~190 KB as a `Vec<String>` (issue 14).
const EMPTY_CANDIDATES: usize = 8_000;
/// The stalled receivers' socket receive buffer.
const STALLED_RCVBUF: u32 = 4096;
/// Characters of the large SDPs (under `max_message_bytes`, 16 KiB, as MessagePack).
const LARGE_SDP_CHARS: usize = 15_000;
/// Time for the tracker to settle before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);
/// The fragmented message's first part.
const FRAGMENT_BYTES: usize = 60 * 1024;

pub fn run(f: Arc<Fleet>, s: Scale) -> Checks {
    Box::pin(async move {
        let mut rows = Row::or_error(2, "stalled receivers", stalled(&f, s).await);
        rows.extend(Row::or_error(2, "large frames", victims(&f, s).await));
        rows.extend(Row::or_error(2, "fragments", fragments(&f, s).await));
        rows
    })
}

/// A sender and a receiver in a swarm of their own on tracker t1.
async fn pair(
    f: &Fleet,
    swarm: &str,
    rcvbuf: Option<u32>,
    format: Format,
) -> anyhow::Result<(Client, Client)> {
    let mut rx = viewer_with(SETUP, f.trackers[0], format, rcvbuf).await?;
    rx.join(swarm, 1).await;
    let mut tx = viewer_from(SETUP, f.trackers[0], Format::MsgPack).await?;
    tx.join(swarm, 1).await;
    Ok((tx, rx))
}

async fn stalled(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    let mut pairs = Vec::new();
    for i in 0..s.stalled_receivers {
        pairs.push(
            pair(
                f,
                &format!("atk-stall-{i}"),
                Some(STALLED_RCVBUF),
                Format::MsgPack,
            )
            .await?,
        );
    }
    tokio::time::sleep(SETTLE).await;
    let m0 = f.metrics(0).await?;
    let rss0 = f.rss(0)?;
    let empty: Vec<std::borrow::Cow<'static, str>> = vec!["".into(); EMPTY_CANDIDATES];
    let mut refused = 0;
    for (i, (tx, rx)) in pairs.iter_mut().enumerate() {
        for n in 0..s.signals_per_receiver {
            tx.send(&ClientMsg::Cands(Cands {
                swarm: format!("atk-stall-{i}").into(),
                to: rx.peer,
                sid: format!("s{n}").into(),
                c: empty.clone(),
                end: None,
            }))
            .await;
        }
        refused += tx
            .sync()
            .await
            .iter()
            .filter(|m| matches!(m, ServerMsg::Error { .. }))
            .count();
    }
    tokio::time::sleep(SETTLE).await;
    let rss1 = f.rss(0)?;
    let m1 = f.metrics(0).await?;
    let per = rss1.saturating_sub(rss0) as f64 / s.stalled_receivers as f64;
    let dropped = m0.delta(&m1, "tracker_messages_dropped_total", &[]);
    for (tx, rx) in pairs {
        tx.close().await;
        drop(rx);
    }
    Ok(vec![Row::check(
        2,
        "stalled receivers: RSS per receiver",
        format!(
            "<= {} per receiver that doesn't read (outbox_bytes + max_unsent_bytes + slack)",
            kib(STALLED_RECEIVER_BYTES_MAX as f64)
        ),
        format!(
            "+{} per receiver ({} receivers x {} cands of {EMPTY_CANDIDATES} empty strings; {refused} refusals to senders, {dropped} drops counted)",
            kib(per),
            s.stalled_receivers,
            s.signals_per_receiver
        ),
        per <= STALLED_RECEIVER_BYTES_MAX as f64,
    )])
}

/// Waits for the next signal, skipping nothing else; `None` when none comes within `wait`.
async fn next_signal(c: &mut Client, wait: Duration) -> Option<ServerMsg<'static>> {
    tokio::time::timeout(wait, c.recv()).await.ok()
}

async fn victims(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    // Victims read JSON: a control character is six bytes there once escaped.
    let mut pairs = Vec::new();
    for i in 0..s.victims {
        pairs.push(pair(f, &format!("atk-victim-{i}"), None, Format::Json).await?);
    }
    tokio::time::sleep(SETTLE).await;
    let rss0 = f.rss(0)?;
    // Two large legitimate offers each (coalesced into one frame when they queue together).
    let big = "a".repeat(LARGE_SDP_CHARS);
    let mut received = 0;
    for (i, (tx, rx)) in pairs.iter_mut().enumerate() {
        let swarm = format!("atk-victim-{i}");
        tx.send(&offer(&swarm, rx.peer, "big1", &big)).await;
        tx.send(&offer(&swarm, rx.peer, "big2", &big)).await;
        for _ in 0..2 {
            if let Some(ServerMsg::Offer(_)) = next_signal(rx, Duration::from_secs(5)).await {
                received += 1;
            }
        }
    }
    tokio::time::sleep(SETTLE).await;
    let retained = f.rss(0)?.saturating_sub(rss0) as f64 / s.victims as f64;

    // An SDP of control characters: refused with `bad_message`, or relayed?
    let ctl = "\u{1}".repeat(LARGE_SDP_CHARS);
    let (mut bad, mut delivered) = (0, 0);
    for (i, (tx, rx)) in pairs.iter_mut().enumerate() {
        tx.send(&offer(&format!("atk-victim-{i}"), rx.peer, "ctl", &ctl))
            .await;
        bad += tx
            .sync()
            .await
            .iter()
            .filter(
                |m| matches!(m, ServerMsg::Error { code, .. } if code.as_str() == "bad_message"),
            )
            .count();
        if let Some(ServerMsg::Offer(_)) = next_signal(rx, Duration::from_millis(500)).await {
            delivered += 1;
        }
    }
    for (tx, rx) in pairs {
        tx.close().await;
        rx.close().await;
    }
    Ok(vec![
        Row::check(
            2,
            "large frames: RSS a reading victim keeps",
            format!(
                "<= {} per victim after the frame (buffers back to idle size)",
                kib(VICTIM_RETAINED_BYTES_MAX as f64)
            ),
            format!(
                "+{} per victim ({received} offers of {LARGE_SDP_CHARS} B to {} victims)",
                kib(retained),
                s.victims
            ),
            retained <= VICTIM_RETAINED_BYTES_MAX as f64,
        ),
        Row::check(
            2,
            "control characters in SDP",
            "refused with bad_message, never relayed",
            format!(
                "{bad}/{} refused with bad_message, {delivered} relayed (x6 once JSON-escaped)",
                s.victims
            ),
            bad == s.victims && delivered == 0,
        ),
    ])
}

async fn fragments(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    let rss0 = f.rss(0)?;
    let mut tasks = JoinSet::new();
    let payload = vec![b'a'; FRAGMENT_BYTES];
    let start = Instant::now();
    for _ in 0..s.fragments {
        let mut ws = ws_from(SETUP, f.trackers[0], "", Duration::from_secs(10)).await?;
        let first = Frame::message(payload.clone(), OpCode::Data(Data::Text), false);
        ws.send(Message::Frame(first)).await?;
        tasks.spawn(async move {
            let opened = Instant::now();
            let deadline = opened + FRAGMENT_CLOSE_MAX + Duration::from_secs(5);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // Pings keep it alive; the message is never finished.
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if Instant::now() > deadline || ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                            return None;
                        }
                    }
                    m = ws.next() => match m {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Some(opened.elapsed()),
                        Some(Ok(_)) => {}
                    },
                }
            }
        });
    }
    tokio::time::sleep(SETTLE).await;
    let held = f.rss(0)?.saturating_sub(rss0) as f64 / s.fragments as f64;
    let mut closed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(d)) = r {
            closed.push(d);
        }
    }
    let in_time = closed.iter().filter(|d| **d <= FRAGMENT_CLOSE_MAX).count();
    Ok(vec![Row::check(
        2,
        "unfinished fragmented message kept alive by pings",
        format!("closed within {FRAGMENT_CLOSE_MAX:?} (write_timeout_secs + slack)"),
        format!(
            "{in_time}/{} closed in time (slowest {:.1?}); +{} per socket while held; {:.0?} in all",
            s.fragments,
            closed.iter().max().copied().unwrap_or_default(),
            kib(held),
            start.elapsed()
        ),
        in_time == s.fragments,
    )])
}
