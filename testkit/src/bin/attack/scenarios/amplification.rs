//! Item 3, Redis amplification: what memberships cost Redis while nobody joins (the periodic
//! refresh), and what re-joining a swarm already joined costs, in Redis commands from
//! `INFO commandstats`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use swarmtrack_protocol::Format;
use tokio::task::JoinSet;

use super::Checks;
use crate::fleet::{Fleet, calls_between};
use crate::net::viewer_from;
use crate::table::Row;
use crate::{
    REFRESH_COMMANDS_FIXED, REFRESH_COMMANDS_PER_KEY_MAX, REJOIN_COMMANDS_MAX, SETUP, Scale,
};

/// Swarms every member socket joins (`limits.max_swarms_per_connection`).
const SWARMS: usize = 16;
/// The trackers' `redis.refresh_interval_secs` (default, scripts/fleet doesn't change it): a
/// window this long holds one refresh of each tracker.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Sockets that re-join (each a swarm of its own), and how often each does (under the 50/s
/// rate limit).
const REJOINERS: usize = 10;
const REJOIN_EVERY: Duration = Duration::from_millis(25);

pub fn run(f: Arc<Fleet>, s: Scale) -> Checks {
    Box::pin(async move { Row::or_error(3, "Redis amplification", amplify(&f, s).await) })
}

async fn amplify(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    // The fleet's own traffic with no memberships (heartbeats, health checks, claims): the
    // refresh is what memberships add to it.
    let calls_base = f.redis_calls()?;
    let t = Instant::now();
    tokio::time::sleep(REFRESH_INTERVAL).await;
    let base = calls_between(&calls_base, &f.redis_calls()?) as f64
        * REFRESH_INTERVAL.as_secs_f64()
        / t.elapsed().as_secs_f64();
    let mut members = Vec::new();
    for _ in 0..s.members {
        let mut c = viewer_from(SETUP, f.trackers[0], Format::MsgPack).await?;
        for k in 0..SWARMS {
            c.join(&format!("atk-amp-{k}"), 1).await;
        }
        members.push(c);
    }
    // The refresh: one interval with these memberships and nothing else going on.
    let calls0 = f.redis_calls()?;
    let t = Instant::now();
    tokio::time::sleep(REFRESH_INTERVAL).await;
    let idle = calls_between(&calls0, &f.redis_calls()?);
    let idle_for = t.elapsed();
    let memberships = s.members * SWARMS;
    let refresh_bound = SWARMS as f64 * REFRESH_COMMANDS_PER_KEY_MAX + REFRESH_COMMANDS_FIXED;

    // Re-joins of a swarm each socket is already in, for as long as the idle window: both
    // windows hold one refresh of each tracker, so their difference is what the re-joins cost.
    // Each re-joins a swarm where it is alone, so a join is short of `want` (a swarm with
    // enough local peers costs no Redis command already), after one first join.
    let mut rejoiners = Vec::new();
    for i in 0..REJOINERS {
        let mut c = viewer_from(SETUP, f.trackers[0], Format::MsgPack).await?;
        c.join(&format!("atk-rejoin-{i}"), 8).await;
        rejoiners.push(c);
    }
    let mut tasks = JoinSet::new();
    for (i, mut c) in rejoiners.into_iter().enumerate() {
        let until = Instant::now() + idle_for;
        tasks.spawn(async move {
            let mut n = 0u64;
            let mut tick = tokio::time::interval(REJOIN_EVERY);
            let swarm = format!("atk-rejoin-{i}");
            while Instant::now() < until {
                tick.tick().await;
                c.join(&swarm, 8).await;
                n += 1;
            }
            (c, n)
        });
    }
    let calls1 = f.redis_calls()?;
    let t = Instant::now();
    let mut rejoins = 0;
    while let Some(r) = tasks.join_next().await {
        let (c, n) = r?;
        rejoins += n;
        members.push(c);
    }
    let during = calls_between(&calls1, &f.redis_calls()?) as f64;
    let extra =
        (during - idle as f64 * t.elapsed().as_secs_f64() / idle_for.as_secs_f64()).max(0.0);
    let per_rejoin = extra / rejoins.max(1) as f64;
    let per_swarm_sec = extra / REJOINERS as f64 / t.elapsed().as_secs_f64();
    for c in members {
        c.close().await;
    }
    Ok(vec![
        Row::check(
            3,
            "membership refresh: Redis commands per interval",
            format!(
                "<= {refresh_bound:.0} per {REFRESH_INTERVAL:?} for {SWARMS} swarms above the fleet's own traffic (one command per key, not per member)"
            ),
            format!(
                "{idle} commands in {REFRESH_INTERVAL:?} for {memberships} memberships in {SWARMS} swarms, {base:.0} of them the fleet's own without any (heartbeats, health checks)"
            ),
            (idle as f64 - base).max(0.0) <= refresh_bound,
        ),
        Row::check(
            3,
            "re-join of a joined swarm: Redis commands",
            format!(
                "none waited for; <= {REJOIN_COMMANDS_MAX} commands per re-joined swarm per second, however many re-joins (one background renewal of its sample a second)"
            ),
            format!(
                "{per_swarm_sec:.1} per swarm per second, {per_rejoin:.3} per re-join ({rejoins} re-joins of {REJOINERS} swarms, {:.0} commands/s above idle)",
                extra / t.elapsed().as_secs_f64()
            ),
            per_swarm_sec <= REJOIN_COMMANDS_MAX,
        ),
    ])
}
