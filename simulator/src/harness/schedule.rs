//! Arrival schedules: the instants of a Poisson process over a step, open loop (a slow tracker
//! doesn't slow them down; a slow simulator shows as lag behind them).

use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::engine::StepRun;

/// Poisson arrivals at a rate, from a step's start to its end.
pub struct Poisson {
    /// The schedule's random numbers, for the caller's draws too.
    pub rng: StdRng,
    gap: Exp<f64>,
    next: Instant,
    end: Instant,
}

impl Poisson {
    /// Arrivals at `rate` per second over `step`; `None` for a rate that isn't above 0.
    pub fn new(seed: u64, rate: f64, step: &StepRun) -> Option<Self> {
        if rate.is_nan() || rate <= 0.0 {
            return None;
        }
        Some(Self {
            rng: StdRng::seed_from_u64(seed ^ ((step.index as u64) << 32)),
            gap: Exp::new(rate).ok()?,
            next: step.start,
            end: step.end,
        })
    }

    /// Waits for the next arrival and returns when it was due; `None` once the step is over
    /// or `stop` is cancelled.
    pub async fn next(&mut self, stop: &CancellationToken) -> Option<Instant> {
        self.next += Duration::from_secs_f64(self.gap.sample(&mut self.rng).min(3600.0));
        if self.next >= self.end {
            return None;
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => None,
            () = sleep_until(self.next) => Some(self.next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn arrivals_come_at_the_rate_within_the_step() {
        let start = Instant::now();
        let step = StepRun {
            index: 0,
            target: 200.0,
            extra: 0.0,
            start,
            end: start + Duration::from_secs(10),
        };
        let mut p = Poisson::new(7, step.target, &step).unwrap();
        let stop = CancellationToken::new();
        let mut n = 0u32;
        let mut last = start;
        while let Some(at) = p.next(&stop).await {
            assert!(at >= last && at < step.end);
            last = at;
            n += 1;
        }
        // 2,000 expected; 5 standard deviations is ±224.
        assert!((1776..=2224).contains(&n), "{n}");
        assert!(Poisson::new(7, 0.0, &step).is_none());
        let mut p = Poisson::new(7, 200.0, &step).unwrap();
        stop.cancel();
        assert_eq!(p.next(&stop).await, None);
    }
}
