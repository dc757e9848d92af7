//! Drives a native step in one process: viewers arrive at the step's rate (Poisson, open loop:
//! a slow tracker doesn't slow arrivals down, a slow simulator shows as schedule lag), and a
//! pacer asks random connected viewers for extra negotiations at the step's renegotiation rate.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::measure::C;
use super::shared::Ctx;
use super::viewer;
use crate::harness::engine::{Load, StepRun, Tasks, Winding};
use crate::harness::schedule::Poisson;
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

/// Starts viewers at the step's rate until it ends or `stop`.
async fn arrive(ctx: Arc<Ctx>, step: StepRun, tasks: Tasks, stop: CancellationToken) {
    let Some(mut arrivals) = Poisson::new(ctx.job.seed ^ 0x5151, step.target, &step) else {
        return;
    };
    while let Some(due) = arrivals.next(&stop).await {
        ctx.stats.lag(Instant::now().saturating_duration_since(due));
        let id = ctx.next_viewer.fetch_add(1, Relaxed);
        tasks.spawn(viewer::run(Arc::clone(&ctx), id));
    }
}

/// Asks random viewers for extra negotiations at the step's rate.
async fn pace(ctx: Arc<Ctx>, step: StepRun, stop: CancellationToken) {
    let Some(mut asks) = Poisson::new(ctx.job.seed ^ 0xA5A5, step.extra, &step) else {
        return;
    };
    while asks.next(&stop).await.is_some() {
        if !ctx.registry.renegotiate(&mut asks.rng) {
            ctx.stats.count(C::RenegotiationsSkipped, 1);
        }
    }
}
