//! Drives a WebTorrent step in one worker: opens connections up to the step's count (a ramp
//! adds connections; the earlier ones stay), each a closed-loop peer.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio_util::sync::CancellationToken;

use super::peer;
use super::shared::Ctx;
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
        let want = step.target.max(0.0) as u32;
        let from = self.opened.fetch_max(want, Relaxed);
        for conn in from..want {
            if stop.is_cancelled() {
                return;
            }
            tasks.spawn(peer::run(Arc::clone(&self), conn));
        }
    }

    fn settle(&self, before: std::time::Instant) {
        Ctx::settle(self, before);
    }

    fn busy(&self) -> bool {
        self.ledger.awaiting()
    }
}
