//! Item 1, one host fills the fleet: one source opens as many WebSockets through the front end
//! as it can and never joins; meanwhile a viewer from another source joins. Then: are the idle
//! sockets closed, and do WebSocket pings count toward the rate limit?

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use swarmtrack_protocol::{ClientMsg, Format, ServerMsg};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::{Checks, percentile};
use crate::fleet::Fleet;
use crate::net::{viewer_from, ws_from};
use crate::table::Row;
use crate::{
    ATTACKER, JOIN_P99_MAX, LEGIT, LEGIT_JOIN_TIMEOUT, NEVER_JOINED_CLOSE_MAX, SETUP, Scale,
};

/// Upgrades the flood has in flight at once.
const FLOOD_CONCURRENCY: usize = 200;
/// One upgrade of the flood may take this long (connect, upgrade, `welcome`).
const FLOOD_UPGRADE_TIMEOUT: Duration = Duration::from_secs(3);
/// The flood stops trying once this many upgrades failed: the front end stopped taking it.
const FLOOD_FAILURES_STOP: usize = 400;
/// The legitimate viewer stops after this many failed joins in a row: the p99 has failed
/// already, and each failure costs `LEGIT_JOIN_TIMEOUT`.
const LEGIT_FAILURES_STOP: usize = 5;

pub fn run(f: Arc<Fleet>, s: Scale) -> Checks {
    Box::pin(async move {
        let mut rows = Row::or_error(1, "flood", flood(&f, s).await);
        rows.extend(Row::or_error(1, "ping flood", pings(&f, s).await));
        rows
    })
}

/// When each flood socket opened and, once it did, when it was closed by the other side.
struct Held {
    opened: Instant,
    closed: Option<Instant>,
}

async fn flood(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    let held = Arc::new(Mutex::new(Vec::<Held>::new()));
    let live = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(FLOOD_CONCURRENCY));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = JoinSet::new();
    let start = Instant::now();
    for _ in 0..s.flood_sockets {
        if start.elapsed() > s.flood_open || failed.load(Ordering::Relaxed) >= FLOOD_FAILURES_STOP {
            break;
        }
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let (held, live, failed, stop, front) = (
            Arc::clone(&held),
            Arc::clone(&live),
            Arc::clone(&failed),
            stop.clone(),
            f.front,
        );
        tasks.spawn(async move {
            let opened = Instant::now();
            let ws = async {
                let mut ws = ws_from(ATTACKER, front, "", FLOOD_UPGRADE_TIMEOUT).await?;
                // `welcome` proves the tracker took it, not only HAProxy.
                tokio::time::timeout(FLOOD_UPGRADE_TIMEOUT, ws.next())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("closed before welcome"))??;
                anyhow::Ok(ws)
            }
            .await;
            drop(permit);
            let Ok(mut ws) = ws else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let slot = {
                let mut h = held.lock().await;
                h.push(Held {
                    opened,
                    closed: None,
                });
                h.len() - 1
            };
            live.fetch_add(1, Ordering::Relaxed);
            // Reading answers the tracker's pings (tungstenite queues the pong), like an idle
            // browser tab; never joins.
            let closed = tokio::select! {
                _ = stop.cancelled() => false,
                _ = async { while let Some(Ok(_)) = ws.next().await {} } => true,
            };
            live.fetch_sub(1, Ordering::Relaxed);
            if closed {
                held.lock().await[slot].closed = Some(Instant::now());
            }
        });
    }
    // Wait for the upgrades still in flight.
    let _ = gate.acquire_many(FLOOD_CONCURRENCY as u32).await?;
    let opened_for = start.elapsed();
    let holding = live.load(Ordering::Relaxed);
    let attempts = holding + failed.load(Ordering::Relaxed);

    // The legitimate viewer, from another source, joins one at a time while the flood holds.
    let mut lat = Vec::new();
    let mut legit_failed = 0;
    let mut last_error = String::new();
    let mut in_a_row = 0;
    let mut tried = 0;
    for i in 0..s.legit_joins {
        if in_a_row >= LEGIT_FAILURES_STOP {
            break;
        }
        tried += 1;
        let t = Instant::now();
        let join = async {
            // Each join from a source of its own, as viewers are: one source opening dozens
            // of sockets in seconds is what the per-source upgrade rate refuses.
            let [a, b, _, _] = LEGIT.octets();
            let source = Ipv4Addr::new(a, b, 20 + (i / 250) as u8, 3 + (i % 250) as u8);
            let mut v = viewer_from(source, f.front, Format::MsgPack).await?;
            v.send(&ClientMsg::Join {
                swarm: format!("atk-legit-{}", i % 4).into(),
                want: 8,
            })
            .await;
            loop {
                if let ServerMsg::Peers { .. } = v.recv().await {
                    break;
                }
            }
            let took = t.elapsed();
            v.close().await;
            anyhow::Ok(took)
        };
        match tokio::time::timeout(LEGIT_JOIN_TIMEOUT, join).await {
            Ok(Ok(took)) => {
                lat.push(took);
                in_a_row = 0;
            }
            Ok(Err(e)) => {
                legit_failed += 1;
                in_a_row += 1;
                last_error = format!("{e:#}");
            }
            Err(_) => {
                legit_failed += 1;
                in_a_row += 1;
                last_error = format!("no peers within {LEGIT_JOIN_TIMEOUT:?}");
            }
        }
    }
    let ok = lat.len();
    let p99 = percentile(&mut lat, 99.0);
    let p50 = percentile(&mut lat, 50.0);
    let ms =
        |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));

    let mut rows = vec![
        Row::check(
            1,
            "flood: sockets one source holds",
            format!(
                "fewer than the front end's whole pool (maxconn {}): per-source limit",
                f.front_maxconn
            ),
            format!("{holding} held of {attempts} tried in {opened_for:.0?}"),
            (holding as u64) < f.front_maxconn,
        ),
        Row::check(
            1,
            "flood: legitimate viewer join (other source)",
            format!("p99 < {} ms, every join succeeds", JOIN_P99_MAX.as_millis()),
            format!(
                "p50 {} p99 {}, {ok}/{tried} joined{}{}",
                ms(p50),
                ms(p99),
                if tried < s.legit_joins {
                    format!(" (stopped after {LEGIT_FAILURES_STOP} failures in a row)")
                } else {
                    String::new()
                },
                if legit_failed > 0 {
                    format!(" (last failure: {last_error})")
                } else {
                    String::new()
                }
            ),
            legit_failed == 0 && p99.is_some_and(|p| p < JOIN_P99_MAX),
        ),
    ];

    // The flood's sockets never joined: each must be closed within the bound of its opening.
    let deadline = held
        .lock()
        .await
        .iter()
        .map(|h| h.opened)
        .max()
        .map_or(Instant::now(), |t| {
            t + NEVER_JOINED_CLOSE_MAX + Duration::from_secs(2)
        });
    while Instant::now() < deadline && live.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    let h = held.lock().await;
    let in_time = h
        .iter()
        .filter(|h| {
            h.closed
                .is_some_and(|c| c - h.opened <= NEVER_JOINED_CLOSE_MAX)
        })
        .count();
    let slowest = h
        .iter()
        .filter_map(|h| h.closed.map(|c| c - h.opened))
        .max();
    rows.push(Row::check(
        1,
        "flood: never-joining sockets closed",
        format!("closed within {NEVER_JOINED_CLOSE_MAX:?} of the upgrade"),
        format!(
            "{in_time}/{} closed in time{}",
            h.len(),
            slowest.map_or(String::new(), |s| format!(", slowest {s:.1?}"))
        ),
        in_time == h.len(),
    ));
    Ok(rows)
}

/// One socket sends `ping_flood` WebSocket pings at once: they must count toward its rate
/// limit (50/s, burst 200), not be answered one for one.
async fn pings(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    let before = f.metrics(0).await?;
    let mut ws = ws_from(
        SETUP,
        f.trackers[0],
        "format=msgpack",
        Duration::from_secs(10),
    )
    .await?;
    let mut sent = 0;
    let mut pongs = 0;
    let mut closed = false;
    for i in 0..s.ping_flood {
        if ws
            .send(Message::Ping(format!("{i}").into_bytes().into()))
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        sent += 1;
    }
    // Read what comes back for a moment: pongs, an error, a close.
    let read_until = Instant::now() + Duration::from_secs(2);
    while !closed {
        match tokio::time::timeout_at(read_until.into(), ws.next()).await {
            Ok(Some(Ok(Message::Pong(_)))) => pongs += 1,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => closed = true,
            Ok(Some(Ok(_))) => {}
            Err(_) => break,
        }
    }
    let after = f.metrics(0).await?;
    let limited = before.delta(
        &after,
        "tracker_messages_dropped_total",
        &["reason=\"rate_limited\""],
    );
    let limited = limited + before.delta(&after, "tracker_pings_rate_limited_total", &[]);
    let counted = before.delta(&after, "tracker_pings_received_total", &[]);
    Ok(vec![Row::check(
        1,
        "ping flood: pings rate limited",
        "pings count toward the rate limit (50/s, burst 200): refused past it, counted",
        format!(
            "{sent} pings sent, {pongs} pongs back, {counted} counted received, {limited} rate-limited{}",
            if closed { ", closed" } else { "" }
        ),
        limited > 0.0 || (closed && (pongs as usize) < sent),
    )])
}
