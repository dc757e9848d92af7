//! When a WebTorrent ramp step holds, and the knee.

use super::options::Plan;
use super::report::{Knee, StepReport, ratio};
use super::stats::Count;

/// A step reached less than this share of the requests its connections were paced for. Not
/// 0.9 as for native arrivals: each new connection starts at a random point of its first
/// interval (up to a whole interval lost), which costs a short step up to ~15 %.
const MIN_RATE_SHARE: f64 = 0.75;

/// `Ok` when the step held; else every reason it didn't.
///
/// # Errors
/// The bounds crossed, in words.
pub fn judge(step: &StepReport, plan: &Plan) -> Result<(), String> {
    let mut why = Vec::new();
    for (name, s) in [
        ("announce", &step.announce),
        ("offer", &step.offer),
        ("answer", &step.answer),
    ] {
        if s.count > 0 && s.p99_ms > plan.max_p99_ms {
            why.push(format!(
                "{name} p99 {:.1} ms > {:.1} ms",
                s.p99_ms, plan.max_p99_ms
            ));
        }
    }
    if step.loss_ratio > plan.max_loss {
        why.push(format!(
            "{:.2} % of offers and answers lost",
            step.loss_ratio * 100.0
        ));
    }
    if step.failure_ratio > plan.max_loss {
        why.push(format!(
            "{} failures ({:.2} % of frames sent) {:?}",
            step.counts.get(Count::Failures),
            step.failure_ratio * 100.0,
            step.failures
        ));
    }
    if step.timeout_ratio > plan.max_loss {
        why.push(format!(
            "{:.2} % of requests got no response",
            step.timeout_ratio * 100.0
        ));
    }
    let c = |k| step.counts.get(k);
    let attempts = c(Count::Connects) + c(Count::ConnectFailures);
    if ratio(c(Count::ConnectFailures), attempts) > plan.max_loss {
        why.push(format!(
            "{} of {attempts} connection attempts failed {:?}",
            c(Count::ConnectFailures),
            step.connect_failures
        ));
    }
    // Paced peers: a closed loop that can't keep its pace means responses come too late.
    let paced = f64::from(step.target_connections) * plan.request_rate;
    if paced > 0.0 && step.requests_per_s < paced * MIN_RATE_SHARE {
        why.push(format!(
            "sent {:.0} requests/s of {paced:.0} paced",
            step.requests_per_s
        ));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// The knee: the last step before the first that didn't hold.
pub fn knee(steps: &[StepReport]) -> Option<Knee> {
    let held = steps
        .iter()
        .take_while(|s| s.verdict.as_deref() == Some("held"))
        .last()?;
    Some(Knee {
        step: held.index,
        connections: held.target_connections,
        announces_per_s: held.announces_per_s,
        relayed_per_s: held.relayed_per_s,
        announce_p99_ms: held.announce.p99_ms,
        offer_p99_ms: held.offer.p99_ms,
        answer_p99_ms: held.answer.p99_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Summary;
    use crate::webtorrent::options::WebtorrentArgs;

    fn plan() -> Plan {
        use clap::Parser;
        let cli = crate::options::Cli::try_parse_from([
            "simulator",
            "webtorrent",
            "--url",
            "ws://127.0.0.1:1/announce",
            "--ramp",
            "--request-rate",
            "2",
        ])
        .unwrap();
        let crate::options::Command::Webtorrent(w) = cli.command else {
            panic!("not webtorrent")
        };
        let w: WebtorrentArgs = w;
        w.plan(1).unwrap()
    }

    fn step(i: usize, p99: f64) -> StepReport {
        let summary = Summary {
            count: 100,
            p99_ms: p99,
            ..Summary::default()
        };
        StepReport {
            index: i,
            target_connections: 100,
            requests_per_s: 200.0,
            announce: summary,
            offer: summary,
            answer: summary,
            ..StepReport::default()
        }
    }

    #[test]
    fn verdicts_name_every_bound_crossed() {
        let p = plan();
        assert!(judge(&step(0, 5.0), &p).is_ok());
        let why = judge(&step(0, 80.0), &p).unwrap_err();
        assert!(
            why.contains("announce p99") && why.contains("answer p99"),
            "{why}"
        );
        let mut slow = step(0, 5.0);
        slow.requests_per_s = 100.0;
        slow.loss_ratio = 0.05;
        let why = judge(&slow, &p).unwrap_err();
        assert!(
            why.contains("100 requests/s of 200") && why.contains("lost"),
            "{why}"
        );
    }

    #[test]
    fn the_knee_is_the_last_step_that_held() {
        let mut steps: Vec<StepReport> = (0..3).map(|i| step(i, 5.0)).collect();
        steps[0].verdict = Some("held".into());
        steps[1].verdict = Some("held".into());
        steps[2].verdict = Some("announce p99".into());
        assert_eq!(knee(&steps).map(|k| k.step), Some(1));
        steps[0].verdict = Some("broke".into());
        assert_eq!(knee(&steps), None);
    }
}
