//! The plan of a run, for either mode: its steps of constant load, and each worker's share.
//!
//! A step's `target` is what the mode raises to load the tracker (native: viewers arriving
//! per second; WebTorrent: connections open), `extra` a second load it may raise with it
//! (native: renegotiations per second). A [`Job`] is what one worker process runs: its share of
//! every step, its number, and the mode's own settings; the parent sends it to the worker as
//! JSON.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One stretch of constant load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// The load the mode raises (native: arrivals/s; WebTorrent: connections).
    pub target: f64,
    /// A second load (native: renegotiations/s; WebTorrent: unused).
    pub extra: f64,
    /// Length, ms.
    pub duration_ms: u64,
}

/// What one process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job<S> {
    /// This worker's number (0-based); its swarms, ids and source addresses carry it.
    pub worker: u8,
    /// Workers in the run.
    pub workers: u8,
    /// Random seed of this worker.
    pub seed: u64,
    /// Random seed of the run (the same in every worker).
    pub run_seed: u64,
    /// This worker's share of each step.
    pub phases: Vec<Phase>,
    /// A message neither delivered nor refused after this long is lost, ms.
    pub lost_after_ms: u64,
    /// Wind-down time, ms.
    pub grace_ms: u64,
    /// The mode's settings.
    pub spec: S,
}

/// Invalid options, with the option named.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// `Err(Invalid(msg()))` unless `ok`.
///
/// # Errors
/// `msg()` when not `ok`.
pub fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), Invalid> {
    if ok { Ok(()) } else { Err(Invalid(msg())) }
}

/// `d` in whole milliseconds (saturating).
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The steps of a ramp: `start + k·step` (and `extra_start + k·extra_step`) for `count` steps.
pub fn ramp(
    start: f64,
    step: f64,
    extra_start: f64,
    extra_step: f64,
    count: u32,
    each: Duration,
) -> Vec<Phase> {
    (0..count)
        .map(|k| Phase {
            target: start + f64::from(k) * step,
            extra: extra_start + f64::from(k) * extra_step,
            duration_ms: ms(each),
        })
        .collect()
}

/// Worker `worker`'s share of `phases` when `workers` share them: the load divided evenly
/// (a count is split so the shares add up to it).
pub fn share(phases: &[Phase], worker: u8, workers: u8, whole: bool) -> Vec<Phase> {
    let n = f64::from(workers.max(1));
    phases
        .iter()
        .map(|p| Phase {
            target: if whole {
                let total = p.target.round();
                let base = (total / n).floor();
                let rest = total - base * n;
                base + if f64::from(worker) < rest { 1.0 } else { 0.0 }
            } else {
                p.target / n
            },
            extra: p.extra / n,
            duration_ms: p.duration_ms,
        })
        .collect()
}

/// A worker's seed from the run's.
pub fn seed_of(seed: u64, worker: u8) -> u64 {
    seed.wrapping_add(u64::from(worker).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_rise_and_shares_add_up() {
        let p = ramp(100.0, 50.0, 0.0, 10.0, 3, Duration::from_secs(5));
        let t: Vec<f64> = p.iter().map(|p| p.target).collect();
        assert_eq!(t, [100.0, 150.0, 200.0]);
        assert_eq!(p[2].extra, 20.0);
        assert_eq!(p[0].duration_ms, 5000);
        let rates = share(&p, 1, 2, false);
        assert_eq!(rates[2].target, 100.0);
        let counts: Vec<f64> = (0..3).map(|w| share(&p, w, 3, true)[0].target).collect();
        assert_eq!(counts, [34.0, 33.0, 33.0]);
        assert_ne!(seed_of(7, 0), seed_of(7, 1));
    }
}
