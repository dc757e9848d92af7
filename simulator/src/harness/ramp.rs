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
    let pct = |x: f64| format!("{:.0} %", x * 100.0);
    let sim_words = format!(
        "the simulator's busiest process used {:.2} of its core{}, and its schedule fell {} ms \
         behind",
        step.sim_cpu_max_cores,
        step.sim_cpu_share.map_or(String::new(), |s| format!(
            ", all of it {} of its CPUs",
            pct(s)
        )),
        step.sim_lag_ms
    );
    let tracker_words = match (step.tracker_cpu_cores, step.tracker_cpu_share) {
        (Some(cores), Some(share)) => format!(
            "the tracker used {cores:.2} cores, {} of what it may use{}",
            pct(share),
            step.tracker_cpus_busy.map_or(String::new(), |b| format!(
                " (its CPUs {} busy with anything)",
                pct(b)
            ))
        ),
        _ => "give --tracker-pid to see the tracker's CPU".into(),
    };
    let tracker_out = step.tracker_cpu_share.is_some_and(|s| s >= SATURATED);
    let sim_out =
        step.sim_cpu_max_cores >= SATURATED || step.sim_cpu_share.is_some_and(|s| s >= SATURATED);
    let who = if tracker_out {
        "the tracker ran out of CPU".to_string()
    } else if sim_out {
        "the simulator ran out of CPU".to_string()
    } else if let Some(b) = step.tracker_cpus_busy.filter(|b| *b >= SATURATED) {
        format!(
            "the tracker's CPUs were {} busy but the tracker used {}: other processes took them \
             (a shared machine)",
            pct(b),
            pct(step.tracker_cpu_share.unwrap_or(0.0))
        )
    } else if let Some(b) = step.sim_cpus_busy.filter(|b| *b >= SATURATED) {
        format!(
            "the simulator's CPUs were {} busy, not with the simulator: other processes took them \
             (a shared machine)",
            pct(b)
        )
    } else if step.sim_lag_ms > SIM_LAG_MS {
        "the simulator fell behind its schedule: it may be the bottleneck".to_string()
    } else {
        "neither ran out of CPU".to_string()
    };
    format!("{who} ({tracker_words}; {sim_words})")
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
            why.starts_with("relay p99 80 ms; the tracker ran out of CPU ("),
            "{why}"
        );
        s.tracker_cpu_share = Some(0.5);
        s.sim_cpu_max_cores = 0.98;
        let why = verdict(&s, vec!["x".into()]).unwrap_err();
        assert!(why.contains("; the simulator ran out of CPU ("), "{why}");
        s.sim_cpu_max_cores = 0.3;
        s.sim_cpu_share = Some(0.95);
        let why = verdict(&s, vec!["x".into()]).unwrap_err();
        assert!(
            why.contains("the simulator ran out"),
            "three processes on one core: {why}"
        );
        s.sim_cpu_share = Some(0.5);
        assert!(
            verdict(&s, vec!["x".into()])
                .unwrap_err()
                .contains("neither")
        );
        s.tracker_cpus_busy = Some(0.97);
        let why = verdict(&s, vec!["x".into()]).unwrap_err();
        assert!(
            why.contains("were 97 % busy but the tracker used 50 %"),
            "{why}"
        );
        s.tracker_cpus_busy = Some(0.5);
        s.sim_cpus_busy = Some(0.99);
        s.sim_lag_ms = 300;
        let why = verdict(&s, vec!["x".into()]).unwrap_err();
        assert!(why.contains("not with the simulator"), "{why}");
        s.sim_cpus_busy = None;
        s.tracker_cpu_share = None;
        s.tracker_cpu_cores = None;
        let why = verdict(&s, vec!["x".into()]).unwrap_err();
        assert!(
            why.contains("may be the bottleneck") && why.contains("--tracker-pid"),
            "{why}"
        );
    }
}
