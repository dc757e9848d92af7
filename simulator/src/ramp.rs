//! When a ramp step holds, and the knee.

use crate::report::{Knee, StepReport};

/// The bounds a step must stay within.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Highest p99 join and relay latency, ms.
    pub max_p99_ms: f64,
    /// Highest share of messages refused or lost, of errors per frame sent, and of failed
    /// connection attempts.
    pub max_loss: f64,
}

/// A step reached less than this share of its target arrival rate: it didn't hold.
const MIN_RATE_SHARE: f64 = 0.9;
/// Schedule lag beyond this means the simulator itself was saturated.
const SIM_LAG_MS: u64 = 100;

/// `Ok` when the step held; else every reason it didn't.
pub fn judge(s: &StepReport, b: &Bounds) -> Result<(), String> {
    let mut why = Vec::new();
    if s.relay.count > 0 && s.relay.p99_ms > b.max_p99_ms {
        why.push(format!(
            "relay p99 {:.1} ms > {:.1} ms",
            s.relay.p99_ms, b.max_p99_ms
        ));
    }
    if s.join.count > 0 && s.join.p99_ms > b.max_p99_ms {
        why.push(format!(
            "join p99 {:.1} ms > {:.1} ms",
            s.join.p99_ms, b.max_p99_ms
        ));
    }
    if s.loss_ratio > b.max_loss {
        why.push(format!(
            "{:.2} % of messages refused or lost ({} refused, {} lost of {})",
            s.loss_ratio * 100.0,
            s.refused,
            s.lost,
            s.sent
        ));
    }
    let errors = s.errors_total();
    if s.frames_out > 0 && errors as f64 / s.frames_out as f64 > b.max_loss {
        why.push(format!("{errors} errors {:?}", s.errors));
    }
    let attempts = s.connects + s.connect_failures;
    if attempts > 0 && s.connect_failures as f64 / attempts as f64 > b.max_loss {
        why.push(format!(
            "{} of {attempts} connection attempts failed {:?}",
            s.connect_failures, s.connect_failures_by
        ));
    }
    // Arrivals are Poisson: over a short step at a low rate, a count 10 % short is chance,
    // so the bound is also at least three standard deviations below the expected count.
    let expected = s.target_conn_rate * s.seconds;
    let floor = (expected * MIN_RATE_SHARE).min(expected - 3.0 * expected.sqrt());
    if s.target_conn_rate > 0.0 && (s.connects as f64) < floor {
        why.push(format!(
            "opened {:.0} connections/s of {:.0} asked",
            s.conn_rate, s.target_conn_rate
        ));
    }
    if why.is_empty() {
        return Ok(());
    }
    // What the tracker said is the first clue to why; name it even when under the bound.
    if errors > 0 && !why.iter().any(|w| w.contains(" errors ")) {
        why.push(format!("errors {:?}", s.errors));
    }
    if s.sim_lag_ms > SIM_LAG_MS {
        why.push(format!(
            "the simulator itself fell {} ms behind its schedule ({:.2} cores): it may be the bottleneck",
            s.sim_lag_ms, s.sim_cpu_cores
        ));
    }
    Err(why.join("; "))
}

/// The knee: the step before the first that failed (or the last, when none failed).
pub fn knee(steps: &[StepReport]) -> Option<Knee> {
    let held = steps
        .iter()
        .take_while(|s| s.verdict.as_deref() == Some("held"))
        .last()?;
    Some(Knee {
        step: held.index,
        conn_rate: held.conn_rate,
        msg_rate: held.msg_rate,
        relay_p99_ms: held.relay.p99_ms,
        join_p99_ms: held.join.p99_ms,
        viewers: held.viewers_peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;

    const B: Bounds = Bounds {
        max_p99_ms: 50.0,
        max_loss: 0.01,
    };

    fn step(i: usize, relay_p99: f64, lost: u64) -> StepReport {
        StepReport {
            index: i,
            target_conn_rate: 100.0,
            conn_rate: 100.0,
            sent: 1000,
            lost,
            loss_ratio: lost as f64 / 1000.0,
            frames_out: 1100,
            connects: 1000,
            seconds: 10.0,
            relay: Summary {
                count: 1000,
                p99_ms: relay_p99,
                ..Summary::default()
            },
            ..StepReport::default()
        }
    }

    #[test]
    fn verdicts() {
        assert!(judge(&step(0, 5.0, 0), &B).is_ok());
        assert!(
            judge(&step(0, 80.0, 0), &B)
                .unwrap_err()
                .contains("relay p99")
        );
        assert!(judge(&step(0, 5.0, 50), &B).unwrap_err().contains("lost"));
        let mut slow = step(0, 5.0, 0);
        slow.conn_rate = 50.0;
        slow.connects = 500;
        slow.sim_lag_ms = 400;
        let why = judge(&slow, &B).unwrap_err();
        assert!(
            why.contains("opened 50") && why.contains("simulator itself"),
            "{why}"
        );
        let mut errs = step(0, 5.0, 0);
        errs.errors.insert("rate_limited".into(), 100);
        assert!(judge(&errs, &B).unwrap_err().contains("rate_limited"));
    }

    #[test]
    fn knee_is_the_last_step_that_held() {
        let mut steps: Vec<StepReport> = (0..4).map(|i| step(i, 5.0, 0)).collect();
        for s in &mut steps[..2] {
            s.verdict = Some("held".into());
        }
        steps[2].verdict = Some("relay p99".into());
        assert_eq!(knee(&steps).map(|k| k.step), Some(1));
        steps[0].verdict = Some("broke".into());
        assert_eq!(knee(&steps), None);
    }
}
