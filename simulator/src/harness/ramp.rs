//! A ramp's verdicts and its knee, for either mode: a step holds when it crossed none of the
//! mode's bounds; one that didn't says why, and which side ran out of CPU: the tracker (its
//! CPU from `--tracker-pid` near what its affinity allows) or the simulator (a process near its
//! one thread's core, or its schedule behind). The knee is the last step before the first that
//! didn't hold.

use super::report::StepReport;

/// Schedule lag beyond this means the simulator itself was saturated, ms.
pub const SIM_LAG_MS: u64 = 100;
/// A process at this share of its CPUs or more has run out of CPU.
pub const SATURATED: f64 = 0.9;

/// The verdict on a step from the bounds it crossed (`why`): `Ok` when none.
///
/// # Errors
/// Every reason, then who ran out of CPU.
pub fn verdict<S>(step: &StepReport<S>, why: Vec<String>) -> Result<(), String> {
    if why.is_empty() {
        return Ok(());
    }
    let mut why = why;
    why.push(bottleneck(step));
    Err(why.join("; "))
}

/// Which side ran out of CPU in `step`, in words: the tracker, the simulator, or the CPUs they
/// run on, taken by other processes (a shared machine), or none of them.
pub fn bottleneck<S>(step: &StepReport<S>) -> String {
    let sim = step.sim_lag_ms > SIM_LAG_MS || step.sim_cpu_max_cores >= SATURATED;
    let sim_words = format!(
        "the simulator's busiest process used {:.2} of its core and fell {} ms behind its schedule",
        step.sim_cpu_max_cores, step.sim_lag_ms
    );
    let busy = |share: Option<f64>| {
        share.map_or(String::new(), |b| {
            format!(", {:.0} % busy with anything", b * 100.0)
        })
    };
    let neighbours = match (step.tracker_cpus_busy, step.sim_cpus_busy) {
        (Some(b), _) if b >= SATURATED => Some(format!(
            "the tracker's CPUs were {:.0} % busy and the tracker used {:.0} %: other processes \
             took the rest",
            b * 100.0,
            step.tracker_cpu_share.unwrap_or(0.0) * 100.0
        )),
        (_, Some(b)) if b >= SATURATED => Some(format!(
            "the simulator's CPUs were {:.0} % busy, not all with the simulator",
            b * 100.0
        )),
        _ => None,
    };
    match (step.tracker_cpu_share, step.tracker_cpu_cores) {
        (Some(share), Some(cores)) if share >= SATURATED => format!(
            "the tracker ran out of CPU ({cores:.2} cores, {:.0} % of what it may use); {sim_words}",
            share * 100.0
        ),
        (Some(share), Some(cores)) if sim => format!(
            "the simulator ran out of CPU, not the tracker ({cores:.2} cores, {:.0} % of what it \
             may use{}): {sim_words}",
            share * 100.0,
            busy(step.tracker_cpus_busy)
        ),
        (Some(share), Some(cores)) => match neighbours {
            Some(n) => format!(
                "neither ran out of CPU, but {n} (tracker {cores:.2} cores, {:.0} % of what it may \
                 use; {sim_words})",
                share * 100.0
            ),
            None => format!(
                "neither ran out of CPU (tracker {cores:.2} cores, {:.0} % of what it may use{}; \
                 {sim_words}{})",
                share * 100.0,
                busy(step.tracker_cpus_busy),
                busy(step.sim_cpus_busy)
            ),
        },
        _ if sim => format!("{sim_words}: the simulator may be the bottleneck"),
        _ => format!("{sim_words} (give --tracker-pid to see the tracker's CPU)"),
    }
}

/// The knee's index: the step before the first that didn't hold (the last, when all held).
pub fn knee<S>(steps: &[StepReport<S>]) -> Option<usize> {
    steps
        .iter()
        .take_while(|s| s.verdict.as_deref() == Some("held"))
        .last()
        .map(|s| s.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: usize, verdict: &str) -> StepReport<()> {
        StepReport {
            index: i,
            verdict: Some(verdict.into()),
            ..StepReport::default()
        }
    }

    #[test]
    fn the_knee_is_the_last_step_that_held() {
        let mut steps = vec![
            step(0, "held"),
            step(1, "held"),
            step(2, "p99"),
            step(3, "held"),
        ];
        assert_eq!(knee(&steps), Some(1));
        steps[0].verdict = Some("broke".into());
        assert_eq!(knee(&steps), None);
    }

    #[test]
    fn verdicts_name_who_ran_out() {
        let mut s = step(0, "");
        assert!(verdict(&s, vec![]).is_ok());
        s.tracker_cpu_cores = Some(0.97);
        s.tracker_cpu_share = Some(0.97);
        s.sim_cpu_max_cores = 0.4;
        let why = verdict(&s, vec!["relay p99 80 ms".into()]).unwrap_err();
        assert!(
            why.starts_with("relay p99 80 ms; the tracker ran out"),
            "{why}"
        );
        s.tracker_cpu_share = Some(0.5);
        s.sim_cpu_max_cores = 0.98;
        let why = verdict(&s, vec!["x".into()]).unwrap_err();
        assert!(
            why.contains("the simulator ran out of CPU, not the tracker"),
            "{why}"
        );
        s.sim_cpu_max_cores = 0.3;
        assert!(
            verdict(&s, vec!["x".into()])
                .unwrap_err()
                .contains("neither")
        );
        s.tracker_cpu_share = None;
        s.tracker_cpu_cores = None;
        s.sim_lag_ms = 400;
        let why = verdict(&s, vec!["x".into()]).unwrap_err();
        assert!(why.contains("may be the bottleneck"), "{why}");
    }
}
