//! A WebTorrent run: the peers, the 1 s clock, the steps (judged in a ramp), the wind-down and
//! the report.
//!
//! The run is one process: a torrent's swarm spans every connection, and one ledger must see
//! each offer's sender and receiver. Each step opens connections up to its count (a ramp adds
//! `--connection-step`, the earlier ones stay); every second the ledger settles what is older
//! than the lost-after bound and the stats are taken. At the end, peers stop sending requests
//! but answer the offers still in flight; once nothing is awaited (or half the grace time is
//! gone) they close, and whatever is still outstanding is lost.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ledger::Ledger;
use super::options::Plan;
use super::report::{Point, Report, StepReport};
use super::stats::{Count, Snapshot, Stats};
use super::wire::Sdp;
use super::{peer, ramp};
use crate::payload::Browser;
use crate::stats::process_cpu_ms;
use crate::target::Target;

/// How often the wind-down checks whether offers and answers are still in flight.
const QUIESCE_POLL: Duration = Duration::from_millis(10);

/// What every peer shares.
pub struct Ctx {
    /// The plan.
    pub plan: Plan,
    /// The run's tag in every id, so two runs against one tracker don't mix.
    pub tag: u8,
    /// Parsed target URLs.
    pub targets: Vec<Target>,
    /// Measurements.
    pub stats: Stats,
    /// Offers and answers in flight.
    pub ledger: Ledger,
    /// Cancelled at wind-down: no new requests; offers in flight are still answered.
    pub quiesce: CancellationToken,
    /// Cancelled once nothing is in flight: peers close.
    pub finish: CancellationToken,
    /// Complete (non-trickle) SDP, as simple-peer sends it: Chrome's and Firefox's offer and
    /// answer.
    sdp: [Sdp; 4],
    zipf: Zipf<f64>,
}

impl Ctx {
    /// The shared state of a run.
    ///
    /// # Errors
    /// A target or a distribution parameter the plan shouldn't have let through.
    pub fn new(plan: Plan) -> anyhow::Result<Self> {
        let targets = plan
            .urls
            .iter()
            .map(|u| Target::parse(u, false))
            .collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(!targets.is_empty(), "no target URL");
        let zipf = Zipf::new(f64::from(plan.torrents), plan.zipf)
            .map_err(|e| anyhow::anyhow!("zipf distribution: {e}"))?;
        let sdp = [
            Sdp::new(
                "offer",
                include_str!("../../../fixtures/chrome-datachannel-offer-complete.sdp"),
            )?,
            Sdp::new(
                "answer",
                include_str!("../../../fixtures/chrome-datachannel-answer-complete.sdp"),
            )?,
            Sdp::new(
                "offer",
                include_str!("../../../fixtures/firefox-datachannel-offer-complete.sdp"),
            )?,
            Sdp::new(
                "answer",
                include_str!("../../../fixtures/firefox-datachannel-answer-complete.sdp"),
            )?,
        ];
        Ok(Self {
            tag: (plan.seed & 0xff) as u8,
            targets,
            stats: Stats::default(),
            ledger: Ledger::new(plan.max_in_flight),
            quiesce: CancellationToken::new(),
            finish: CancellationToken::new(),
            sdp,
            zipf,
            plan,
        })
    }

    /// The shortest time between two requests of a peer.
    pub fn interval(&self) -> Duration {
        if self.plan.request_rate > 0.0 {
            Duration::from_secs_f64(1.0 / self.plan.request_rate)
        } else {
            Duration::ZERO
        }
    }

    /// A torrent (its rank, from 1) drawn by popularity.
    pub fn torrent(&self, rng: &mut StdRng) -> u64 {
        self.zipf.sample(rng) as u64
    }

    /// The offer `browser` sends.
    pub fn offer_sdp(&self, browser: Browser) -> &Sdp {
        &self.sdp[if browser == Browser::Firefox { 2 } else { 0 }]
    }

    /// The answer `browser` sends.
    pub fn answer_sdp(&self, browser: Browser) -> &Sdp {
        &self.sdp[if browser == Browser::Firefox { 3 } else { 1 }]
    }

    /// Settles what is older than the lost-after bound (everything, with `all`) and takes the
    /// interval's measurements.
    fn take(&self, now: Instant, wall: Duration, cpu_ms: u64, all: bool) -> Snapshot {
        let before = if all {
            now + Duration::from_secs(1)
        } else {
            now - Duration::from_millis(self.plan.lost_after_ms)
        };
        let settled = self.ledger.sweep(before.into_std());
        self.stats.count(Count::OffersLost, settled.offers_lost);
        self.stats
            .count(Count::OffersUndeliverable, settled.offers_undeliverable);
        self.stats.count(Count::AnswersLost, settled.answers_lost);
        self.stats.take(wall, cpu_ms)
    }
}

/// Runs `plan` until its steps end, a ramp step fails, or `stop` is cancelled; returns the
/// report.
///
/// # Errors
/// Only when the plan can't be set up; everything the tracker does is measured, not an error.
pub async fn run(plan: Plan, stop: CancellationToken, quiet: bool) -> anyhow::Result<Report> {
    let ctx = Arc::new(Ctx::new(plan)?);
    let mut report = Report::new(&ctx.plan);
    let peers = TaskTracker::new();
    // Cancelled when the grace time is over: peers still running are dropped.
    let kill = CancellationToken::new();
    let start = Instant::now();
    let mut cpu = process_cpu_ms();
    let mut last = start;
    let mut take = |now: Instant, all: bool| {
        let c = process_cpu_ms();
        let snap = ctx.take(now, now - last, c.saturating_sub(cpu), all);
        cpu = c;
        last = now;
        snap
    };
    let mut total = Snapshot::default();
    let mut opened = 0u32;
    let mut step_end = start;
    'steps: for (i, step) in ctx.plan.steps.iter().enumerate() {
        for conn in opened..step.connections {
            let (ctx, kill) = (Arc::clone(&ctx), kill.clone());
            peers.spawn(async move {
                tokio::select! {
                    () = peer::run(ctx, conn) => {}
                    () = kill.cancelled() => {}
                }
            });
        }
        opened = opened.max(step.connections);
        step_end += Duration::from_millis(step.duration_ms);
        let mut acc = Snapshot::default();
        loop {
            let wake = (Instant::now() + Duration::from_secs(1)).min(step_end);
            let stopped = tokio::select! {
                () = sleep_until(wake) => false,
                () = stop.cancelled() => true,
            };
            let now = Instant::now();
            let snap = take(now, false);
            acc.then(&snap);
            total.then(&snap);
            report
                .timeline
                .push(Point::new((now - start).as_secs_f64(), i, &snap));
            if stopped {
                break 'steps;
            }
            if now >= step_end {
                let mut s = StepReport::new(i, Some(step), &acc);
                let failed = if ctx.plan.ramp {
                    let verdict = ramp::judge(&s, &ctx.plan);
                    let failed = verdict.is_err();
                    s.verdict = Some(verdict.err().unwrap_or_else(|| "held".into()));
                    failed
                } else {
                    false
                };
                if !quiet {
                    eprintln!("{}", s.line());
                }
                report.steps.push(s);
                if failed {
                    break 'steps;
                }
                break;
            }
        }
    }

    // Wind down: no more requests; offers in flight are answered; then peers close.
    ctx.quiesce.cancel();
    let grace = Duration::from_millis(ctx.plan.grace_ms);
    let quiet_by = Instant::now() + grace / 2;
    let mut idle_polls = 0;
    while idle_polls < 2 && Instant::now() < quiet_by {
        // Twice idle in a row: an answer sent just before the first poll has arrived.
        idle_polls = if ctx.ledger.awaiting() {
            0
        } else {
            idle_polls + 1
        };
        tokio::time::sleep(QUIESCE_POLL).await;
    }
    ctx.finish.cancel();
    peers.close();
    if tokio::time::timeout(grace.saturating_sub(grace / 2), peers.wait())
        .await
        .is_err()
    {
        report
            .problems
            .push("peers still running after the grace time were dropped".into());
        kill.cancel();
        peers.wait().await;
    }
    // Whatever is still outstanding now will never arrive.
    let tail = take(Instant::now(), true);
    total.then(&tail);
    report.finish(&ctx.plan, &total);
    Ok(report)
}
