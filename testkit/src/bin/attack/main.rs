//! `attack`: the hostile-internet suite of issue 14, run against a local fleet that
//! `scripts/attack` starts with `scripts/fleet` (two trackers, Redis, HAProxy in front).
//!
//! Every scenario comes from loopback, bounded in count and time, and measures the real thing:
//! the attacker and the legitimate viewer use different 127.x.y.z source addresses (HAProxy's
//! per-source limits key on `src`), memory is the trackers' RSS from /proc, Redis load is
//! `INFO commandstats`, counters are the trackers' /metrics. It prints one row per check:
//! scenario, the bound promised (issue 14 and the docs), what was observed, pass or fail; the
//! exit status is 1 when any check failed or could not run.

mod fleet;
mod net;
mod scenarios;
mod table;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::fleet::Fleet;
use crate::table::{Row, Verdict};

// ---- Thresholds: the bounds each check holds the fleet to (issue 14 and the docs) ----

/// A legitimate viewer's join through the front end, p99, while one source holds as many
/// sockets as it can (issue 14, "Done when").
pub const JOIN_P99_MAX: Duration = Duration::from_millis(100);
/// One attempt of the legitimate viewer (connect, `welcome`, `join`, `peers`); longer is a
/// failed join.
pub const LEGIT_JOIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A socket that never joins is closed within this long of opening (issue 14 item 1: "a
/// socket that hasn't joined within a configurable time is closed"): the default
/// `limits.join_timeout_secs` (30 s) plus 5 s of a loaded machine.
pub const NEVER_JOINED_CLOSE_MAX: Duration = Duration::from_secs(35);
/// Bytes one stalled receiver may pin in the tracker: `websocket.outbox_bytes` (256 KiB) of
/// queued signals plus `websocket.max_unsent_bytes` (256 KiB) of written output
/// (docs/ARCHITECTURE.md section 7), plus 64 KiB for its session and allocator slack.
pub const STALLED_RECEIVER_BYTES_MAX: u64 = (256 + 256 + 64) * 1024;
/// RSS a reading victim keeps after a large frame was written to it: buffers go back to their
/// idle size (issue 14 item 2), so what stays is allocator slack.
pub const VICTIM_RETAINED_BYTES_MAX: u64 = 16 * 1024;
/// An unfinished fragmented message is closed within `websocket.write_timeout_secs` (10 s,
/// docs/ARCHITECTURE.md section 9) plus 5 s of a loaded machine.
pub const FRAGMENT_CLOSE_MAX: Duration = Duration::from_secs(15);
/// Redis commands a swarm's re-joins may cost per second, however many there are: none is
/// waited for, and the sample they draw from is renewed in the background once over a second
/// old (one script call, which Redis' `INFO commandstats` counts as 4 commands with the
/// ZREMRANGEBYSCORE, PEXPIRE and ZRANDMEMBER it runs), plus slack.
pub const REJOIN_COMMANDS_MAX: f64 = 5.0;
/// Redis commands per swarm key per refresh interval (issue 14: one command per key, not per
/// member: one script call, which `INFO commandstats` counts with the ZADD, ZREMRANGEBYSCORE,
/// PEXPIRE and ZRANDMEMBER it runs, 5 in all, plus one for slack), and a fixed allowance per
/// interval, above the fleet's own traffic, for claims.
pub const REFRESH_COMMANDS_PER_KEY_MAX: f64 = 6.0;
/// See [`REFRESH_COMMANDS_PER_KEY_MAX`].
pub const REFRESH_COMMANDS_FIXED: f64 = 40.0;
/// Share of signals to invented instances refused to their sender before anything is queued
/// (issue 14 item 4), and Redis publishes they may cause.
pub const INVENTED_REFUSED_MIN: f64 = 1.0;
/// See [`INVENTED_REFUSED_MIN`].
pub const INVENTED_PUBLISHES_MAX: u64 = 0;
/// A forged, altered or replayed batch, or a ghost member, must reach no viewer (issue 14
/// item 5); the replay is published this long after the genuine batch.
pub const REPLAY_AFTER: Duration = Duration::from_secs(10);
/// How long a viewer waits for a forged signal before it counts as not delivered.
pub const FORGED_WAIT: Duration = Duration::from_secs(2);
/// Request headers must arrive within this long (docs/ARCHITECTURE.md section 9: 10 s), plus
/// 2 s of a loaded machine.
pub const HEADER_TIMEOUT_MAX: Duration = Duration::from_secs(12);
/// An idle keep-alive HTTP connection (before any upgrade) is closed within this long (issue
/// 14 item 6: "pre-upgrade HTTP has header and idle timeouts").
pub const KEEPALIVE_IDLE_MAX: Duration = Duration::from_secs(20);
/// Request header bytes the tracker must refuse (far above any browser's upgrade request).
pub const HEADER_ABUSE_BYTES: usize = 256 * 1024;
/// Signals delivered out of order across instances (issue 14 item 7).
pub const OUT_OF_ORDER_MAX: u64 = 0;
/// After a SIGKILL, none of the dead tracker's peers is handed out this long after (item 7).
pub const GHOSTS_AFTER: Duration = Duration::from_secs(2);
/// Signals lost (neither delivered nor refused) by the simulator across two trackers (item 8).
pub const LOST_MAX: u64 = 0;

// ---- Loopback sources: HAProxy's per-source limits key on `src` ----

/// The flooding host.
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 10, 2);
/// The legitimate viewer measured while the flood holds.
pub const LEGIT: Ipv4Addr = Ipv4Addr::new(127, 0, 20, 3);
/// Viewers set up by the other scenarios (victims, receivers, senders).
pub const SETUP: Ipv4Addr = Ipv4Addr::new(127, 0, 30, 4);
/// The pre-upgrade abuser (slowloris, headers).
pub const SLOW: Ipv4Addr = Ipv4Addr::new(127, 0, 40, 5);

/// How big and how long each scenario is.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Sockets the flooding source tries to hold (above the front end's maxconn of the fleet
    /// `scripts/attack` starts, so that without per-source limits it fills the pool).
    pub flood_sockets: usize,
    /// Time the flood may take to open them.
    pub flood_open: Duration,
    /// Joins the legitimate viewer makes while the flood holds.
    pub legit_joins: usize,
    /// WebSocket pings one socket sends at once.
    pub ping_flood: usize,
    /// Receivers that never read, each flooded by its own sender.
    pub stalled_receivers: usize,
    /// Signals sent to each stalled receiver (beyond the outbox's 64).
    pub signals_per_receiver: usize,
    /// Reading victims sent a control-character SDP.
    pub victims: usize,
    /// Sockets holding an unfinished fragmented message.
    pub fragments: usize,
    /// Sockets that join the same 16 swarms (memberships = this x 16).
    pub members: usize,
    /// Sockets sending to invented instances, each its burst of 200.
    pub inventors: usize,
    /// Slowloris connections.
    pub slow_conns: usize,
    /// Sender/receiver pairs across the two instances, each 150 signals (full: 10,050 in all).
    pub order_pairs: usize,
    /// The simulator's arrival rate and duration over both trackers.
    pub sim_rate: u32,
    /// See `sim_rate`.
    pub sim_for: Duration,
}

impl Scale {
    /// `--quick`: a minute or two, for scripts/test.
    pub const QUICK: Scale = Scale {
        flood_sockets: 1_500,
        flood_open: Duration::from_secs(20),
        legit_joins: 50,
        ping_flood: 1_000,
        stalled_receivers: 30,
        signals_per_receiver: 100,
        victims: 20,
        fragments: 50,
        members: 40,
        inventors: 5,
        slow_conns: 100,
        order_pairs: 20,
        sim_rate: 200,
        sim_for: Duration::from_secs(10),
    };
    /// The full run: the figures.
    pub const FULL: Scale = Scale {
        flood_sockets: 10_000,
        flood_open: Duration::from_secs(90),
        legit_joins: 200,
        ping_flood: 5_000,
        stalled_receivers: 100,
        signals_per_receiver: 150,
        victims: 50,
        fragments: 200,
        members: 100,
        inventors: 10,
        slow_conns: 500,
        order_pairs: 67,
        sim_rate: 600,
        sim_for: Duration::from_secs(15),
    };
}

/// Runs the attack scenarios of issue 14 against a fleet started by `scripts/fleet`.
#[derive(Debug, Parser)]
#[command(name = "attack")]
struct Cli {
    /// The fleet's env file (`$FLEET_DIR/env`, written by `scripts/fleet up`).
    #[arg(long)]
    env: PathBuf,
    /// The short run (a minute or two).
    #[arg(long)]
    quick: bool,
    /// Run only the scenarios of these items (1..8); all by default.
    #[arg(long = "only", value_delimiter = ',')]
    only: Vec<u8>,
    /// The simulator binary for item 8.
    #[arg(long)]
    simulator: PathBuf,
    /// The tracker binary, for the default-configuration check of item 6.
    #[arg(long)]
    tracker: PathBuf,
}

/// Longest any one scenario may take before it is abandoned (a failed check).
const SCENARIO_DEADLINE: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let scale = if cli.quick { Scale::QUICK } else { Scale::FULL };
    let fleet = match Fleet::load(&cli.env, cli.simulator.clone(), cli.tracker.clone()) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            eprintln!("attack: {e:#}");
            return ExitCode::from(2);
        }
    };
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    eprintln!(
        "attack: {} run against {} (front end maxconn {}), descriptor limit {limit}",
        if cli.quick { "quick" } else { "full" },
        fleet.front,
        fleet.front_maxconn
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for item in scenarios::ITEMS {
        if !cli.only.is_empty() && !cli.only.contains(&item.number) {
            continue;
        }
        eprintln!("attack: item {} ({})", item.number, item.name);
        let t = Instant::now();
        let task = tokio::spawn((item.run)(Arc::clone(&fleet), scale));
        let got = tokio::time::timeout(SCENARIO_DEADLINE, task).await;
        let item_rows = match got {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => vec![Row::error(item.number, item.name, format!("{e}"))],
            Err(_) => vec![Row::error(
                item.number,
                item.name,
                format!("did not finish within {SCENARIO_DEADLINE:?}"),
            )],
        };
        for r in &item_rows {
            eprintln!("  {}: {} -> {}", r.scenario, r.observed, r.verdict);
        }
        eprintln!("attack: item {} took {:.0?}", item.number, t.elapsed());
        rows.extend(item_rows);
    }
    print!("{}", table::render(&rows));
    let failed = rows.iter().filter(|r| r.verdict != Verdict::Pass).count();
    println!(
        "{} checks, {} passed, {} failed, in {:.0?}",
        rows.len(),
        rows.len() - failed,
        failed,
        started.elapsed()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
