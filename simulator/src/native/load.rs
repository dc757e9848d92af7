//! Drives a native step in one process: viewers arrive at the step's rate (Poisson, open loop:
//! a slow tracker doesn't slow arrivals down, a slow simulator shows as schedule lag), and a
//! pacer asks random connected viewers for extra negotiations at the step's renegotiation rate.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::measure::C;
use super::shared::Ctx;
use super::viewer;
use crate::harness::engine::{Load, StepRun, Tasks, Winding};
use crate::harness::stats::Stats;

impl Load for Ctx {
    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn winding(&self) -> &Winding {
        &self.winding
    }

    async fn drive(self: Arc<Self>, step: StepRun, tasks: Tasks, stop: CancellationToken) {
        tokio::join!(
            arrive(Arc::clone(&self), step, tasks, stop.clone()),
            pace(self, step, stop)
        );
    }

    fn settle(&self, before: std::time::Instant) {
        let lost = self.ledger.sweep(before);
        self.stats.count(C::Lost, lost);
    }

    fn busy(&self) -> bool {
        self.busy.load(Relaxed) > 0
    }
}

/// Starts viewers at the step's rate (Poisson arrivals, open loop) until it ends or `stop`.
async fn arrive(ctx: Arc<Ctx>, step: StepRun, tasks: Tasks, stop: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(ctx.job.seed ^ 0x5151 ^ (step.index as u64) << 32);
    let Ok(gap) = Exp::new(step.target.max(1e-9)) else {
        return;
    };
    let mut next = step.start;
    loop {
        next += Duration::from_secs_f64(gap.sample(&mut rng).min(3600.0));
        if next >= step.end {
            return;
        }
        tokio::select! {
            () = sleep_until(next) => {}
            () = stop.cancelled() => return,
        }
        ctx.stats
            .lag(Instant::now().saturating_duration_since(next));
        let id = ctx.next_viewer.fetch_add(1, Relaxed);
        tasks.spawn(viewer::run(Arc::clone(&ctx), id));
    }
}

/// Asks random viewers for extra negotiations at the step's rate.
async fn pace(ctx: Arc<Ctx>, step: StepRun, stop: CancellationToken) {
    if step.extra <= 0.0 {
        return;
    }
    let mut rng = StdRng::seed_from_u64(ctx.job.seed ^ 0xA5A5 ^ (step.index as u64) << 32);
    let Ok(gap) = Exp::new(step.extra) else {
        return;
    };
    let mut next = step.start;
    loop {
        next += Duration::from_secs_f64(gap.sample(&mut rng).min(3600.0));
        if next >= step.end {
            return;
        }
        tokio::select! {
            () = sleep_until(next) => {}
            () = stop.cancelled() => return,
        }
        if !ctx.registry.renegotiate(&mut rng) {
            ctx.stats.count(C::RenegotiationsSkipped, 1);
        }
    }
}
