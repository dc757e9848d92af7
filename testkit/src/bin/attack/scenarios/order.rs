//! Item 7, order and ghosts: signals from one sender to one receiver on another instance
//! arrive in the order they were sent; after a tracker is SIGKILLed, none of its peers is
//! handed out `GHOSTS_AFTER` later. (Runs last: it kills tracker t2.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarmtrack_protocol::{Cands, ClientMsg, Format, ServerMsg};
use testkit::native::join_until_paired;
use tokio::task::JoinSet;

use super::Checks;
use crate::fleet::Fleet;
use crate::net::viewer_from;
use crate::table::Row;
use crate::{GHOSTS_AFTER, OUT_OF_ORDER_MAX, SETUP, Scale};

/// Signals each sender sends at once (under its burst of 200, with room for its joins).
const PER_SENDER: usize = 150;
/// A receiver stops waiting once nothing came for this long.
const QUIET: Duration = Duration::from_secs(3);
/// Viewers of the tracker that is killed.
const DOOMED: usize = 6;

pub fn run(f: Arc<Fleet>, s: Scale) -> Checks {
    Box::pin(async move {
        let mut rows = Row::or_error(7, "order across instances", order(&f, s).await);
        rows.extend(Row::or_error(7, "ghosts after SIGKILL", ghosts(&f).await));
        rows
    })
}

// The bound is a named threshold (0 today) that the comparison must keep following.
#[allow(clippy::absurd_extreme_comparisons)]
async fn order(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    let mut pairs = Vec::new();
    for p in 0..s.order_pairs {
        let swarm = format!("atk-order-{p}");
        let mut rx = viewer_from(SETUP, f.trackers[1], Format::MsgPack).await?;
        rx.join(&swarm, 1).await;
        let mut tx = viewer_from(SETUP, f.trackers[0], Format::MsgPack).await?;
        join_until_paired(&mut tx, &swarm, rx.peer).await;
        pairs.push((swarm, tx, rx));
    }
    // Let the senders' token buckets refill after their joins.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut tasks = JoinSet::new();
    for (swarm, mut tx, mut rx) in pairs {
        tasks.spawn(async move {
            let to = rx.peer;
            let receive = async move {
                let (mut got, mut disorder, mut last) = (0u64, 0u64, None::<u64>);
                while let Ok(m) = tokio::time::timeout(QUIET, rx.recv()).await {
                    if let ServerMsg::Cands(c) = m {
                        let seq: u64 = c.sid.parse().unwrap_or(u64::MAX);
                        if last.is_some_and(|l| seq <= l) {
                            disorder += 1;
                        }
                        last = Some(seq);
                        got += 1;
                    }
                }
                rx.close().await;
                (got, disorder)
            };
            let send = async move {
                for n in 0..PER_SENDER {
                    tx.send(&ClientMsg::Cands(Cands {
                        swarm: swarm.as_str().into(),
                        to,
                        sid: n.to_string().into(),
                        c: vec![
                            format!(
                                "candidate:{n} 1 udp 2113937151 192.0.2.1 {} typ host",
                                10_000 + n
                            )
                            .into(),
                        ],
                        end: None,
                    }))
                    .await;
                }
                let refused = tx
                    .sync()
                    .await
                    .iter()
                    .filter(|m| matches!(m, ServerMsg::Error { .. }))
                    .count() as u64;
                // Errors for signals refused on the receiver's instance come back later.
                let mut late = 0;
                while let Ok(m) = tokio::time::timeout(QUIET, tx.recv()).await {
                    late += u64::from(matches!(m, ServerMsg::Error { .. }));
                }
                tx.close().await;
                refused + late
            };
            let ((got, disorder), refused) = tokio::join!(receive, send);
            (got, disorder, refused)
        });
    }
    let (mut got, mut disorder, mut refused) = (0, 0, 0);
    while let Some(r) = tasks.join_next().await {
        let (g, d, x) = r?;
        got += g;
        disorder += d;
        refused += x;
    }
    let sent = (s.order_pairs * PER_SENDER) as u64;
    let silent = sent.saturating_sub(got + refused);
    Ok(vec![
        Row::check(
            7,
            "order across instances",
            format!(
                "{OUT_OF_ORDER_MAX} out of order ({} senders on t1, receivers on t2)",
                s.order_pairs
            ),
            format!("{sent} sent, {got} delivered, {disorder} out of order"),
            disorder <= OUT_OF_ORDER_MAX,
        ),
        Row::check(
            8,
            "bursts across instances: nothing lost silently",
            "sent = delivered + refused (an error with its sid to the sender)",
            format!("{sent} sent = {got} delivered + {refused} refused + {silent} lost silently"),
            silent == 0,
        ),
    ])
}

async fn ghosts(f: &Fleet) -> anyhow::Result<Vec<Row>> {
    let swarm = "atk-ghost";
    let mut doomed = Vec::new();
    for _ in 0..DOOMED {
        let mut c = viewer_from(SETUP, f.trackers[1], Format::MsgPack).await?;
        c.join(swarm, 1).await;
        doomed.push(c);
    }
    let dead = doomed[0].instance;
    // Another instance sees them before the kill.
    let mut seer = viewer_from(SETUP, f.trackers[0], Format::MsgPack).await?;
    join_until_paired(&mut seer, swarm, doomed[0].peer).await;
    let status = std::process::Command::new("kill")
        .args(["-KILL", &f.pids[1].to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -KILL {} failed", f.pids[1]);
    let killed = Instant::now();
    drop(doomed);
    tokio::time::sleep_until((killed + GHOSTS_AFTER).into()).await;
    let mut c = viewer_from(SETUP, f.trackers[0], Format::MsgPack).await?;
    let peers = c.join(swarm, 16).await;
    let handed = peers.iter().filter(|p| p.instance() == dead).count();
    c.close().await;
    seer.close().await;
    Ok(vec![Row::check(
        7,
        "ghosts after SIGKILL",
        format!("none of the dead tracker's peers handed out {GHOSTS_AFTER:?} after"),
        format!(
            "{handed} of {} peers handed out {:.1?} after belong to the dead tracker",
            peers.len(),
            killed.elapsed()
        ),
        handed == 0,
    )])
}
