//! The scaling policy: a pure function from one tick's observations and the history of
//! recommendations to a decision. No I/O and no clock: the caller passes `now`, so the tests
//! are tables of cases.
//!
//! As Kubernetes' HPA does it: per signal, `ceil(total / target)`, kept at the current size
//! while the load/capacity ratio is within the tolerance band; the recommendation is the
//! maximum over signals, clamped to min/max. Scale-out acts at once, capped by `max_surge`;
//! scale-in goes only to the highest recommendation over the window, one drain at a time, and
//! never while figures are missing, an instance launches or warms up. Launching instances count
//! as capacity, so a slow boot doesn't launch a second wave.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{ScalingConfig, TargetsConfig};
use crate::provider::Phase;

/// Load figures: one instance's, or the fleet's total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Signals {
    /// New connections per second.
    pub conn_rate: f64,
    /// Client messages per second.
    pub msg_rate: f64,
    /// Open connections.
    pub connections: f64,
}

impl std::ops::AddAssign for Signals {
    fn add_assign(&mut self, o: Self) {
        self.conn_rate += o.conn_rate;
        self.msg_rate += o.msg_rate;
        self.connections += o.connections;
    }
}

/// What the policy knows of one instance.
#[derive(Clone, Debug)]
pub struct InstanceView {
    /// Provider id.
    pub id: String,
    /// Where it is in its life.
    pub phase: Phase,
    /// How long it has been serving (since it became ready); `None` before.
    pub serving_for: Option<Duration>,
    /// Its figures this tick; `None` when they couldn't be read or no rate exists yet.
    pub signals: Option<Signals>,
    /// HAProxy sessions on it now (picks the emptiest for scale-in).
    pub sessions: u64,
}

/// What to do this tick.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Nothing.
    Hold,
    /// Launch this many instances.
    ScaleOut {
        /// Instances to launch.
        count: usize,
    },
    /// Drain and remove this instance.
    ScaleIn {
        /// Its provider id.
        id: String,
    },
}

/// The policy's answer for one tick.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// Instances counted as capacity (launching and serving).
    pub capacity: usize,
    /// This tick's recommendation (to record in the [`History`]).
    pub recommendation: usize,
    /// The size scale-in aims at: the highest recommendation over the window.
    pub stabilized: usize,
    /// The fleet's total load over the instances whose figures count.
    pub load: Signals,
    /// Whether some serving instance past its warm-up had no figures.
    pub missing_metrics: bool,
    /// What to do.
    pub action: Action,
    /// Why, in a few words.
    pub reason: &'static str,
}

/// Recommendations of the last window, oldest first; bounded by the window (and a count).
#[derive(Clone, Debug, Default)]
pub struct History {
    recommendations: VecDeque<(Instant, usize)>,
    first: Option<Instant>,
}

/// At most this many recommendations are kept (a 300 s window at a 100 ms poll).
const HISTORY_CAP: usize = 3_000;

impl History {
    /// Records this tick's recommendation and forgets those older than `window`.
    pub fn record(&mut self, now: Instant, recommendation: usize, window: Duration) {
        self.first.get_or_insert(now);
        self.recommendations.push_back((now, recommendation));
        while let Some(&(at, _)) = self.recommendations.front() {
            if now.duration_since(at) > window || self.recommendations.len() > HISTORY_CAP {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
    }

    /// Whether the recommendations reach back a whole window (a fresh or restarted autoscaler
    /// has not seen enough to scale in).
    pub fn covers(&self, now: Instant, window: Duration) -> bool {
        self.first
            .is_some_and(|first| now.saturating_duration_since(first) >= window)
    }

    /// The highest recommendation within `window` before `now`.
    pub fn highest(&self, now: Instant, window: Duration) -> Option<usize> {
        self.recommendations
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= window)
            .map(|(_, r)| *r)
            .max()
    }
}

/// Decides what to do this tick from `instances` (every live instance of the fleet) and
/// `history` (earlier recommendations; the caller records [`Decision::recommendation`]).
/// `settling`: a drain is running or ended less than `drain_settle_secs` ago, so its viewers
/// are reconnecting elsewhere: connections/sec is left out (moves, not arrivals) and no other
/// scale-in starts.
pub fn decide(
    instances: &[InstanceView],
    history: &History,
    now: Instant,
    scaling: &ScalingConfig,
    targets: &TargetsConfig,
    settling: bool,
) -> Decision {
    let warmup = Duration::from_secs(scaling.warmup_secs);
    let window = Duration::from_secs(scaling.scale_in_window_secs);
    let capacity = instances
        .iter()
        .filter(|i| matches!(i.phase, Phase::Launching | Phase::Serving))
        .count();
    let launching = instances.iter().any(|i| i.phase == Phase::Launching);
    let draining = instances.iter().any(|i| i.phase == Phase::Draining);
    let serving = || instances.iter().filter(|i| i.phase == Phase::Serving);
    let warming = serving().any(|i| i.serving_for.is_none_or(|d| d < warmup));
    let warm: Vec<&InstanceView> = serving()
        .filter(|i| i.serving_for.is_some_and(|d| d >= warmup))
        .collect();
    let missing_metrics = warm.iter().any(|i| i.signals.is_none());
    let mut load = Signals::default();
    for s in warm.iter().filter_map(|i| i.signals) {
        load += s;
    }
    let counted = warm.iter().filter(|i| i.signals.is_some()).count();

    let per_signal = |total: f64, target: f64| -> Option<usize> {
        if target <= 0.0 {
            return None;
        }
        if capacity > 0 {
            let ratio = total / (capacity as f64 * target);
            if (ratio - 1.0).abs() <= scaling.tolerance {
                return Some(capacity);
            }
        }
        Some((total / target).ceil() as usize)
    };
    let mut recommendation = if counted == 0 {
        // Nothing to judge by: hold what there is (the min/max clamp still applies).
        capacity
    } else {
        [
            per_signal(
                load.conn_rate,
                if settling { 0.0 } else { targets.conn_rate },
            ),
            per_signal(load.msg_rate, targets.msg_rate),
            per_signal(load.connections, targets.connections),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(capacity)
    };
    if missing_metrics {
        recommendation = recommendation.max(capacity);
    }
    let recommendation = recommendation.clamp(scaling.min_instances, scaling.max_instances);
    let stabilized = history
        .highest(now, window)
        .map_or(recommendation, |h| h.max(recommendation));

    let decision = |action, reason| Decision {
        capacity,
        recommendation,
        stabilized,
        load,
        missing_metrics,
        action,
        reason,
    };
    if recommendation > capacity {
        let count = (recommendation - capacity).min(scaling.max_surge);
        let reason = if capacity < scaling.min_instances {
            "below min_instances"
        } else {
            "load above target"
        };
        return decision(Action::ScaleOut { count }, reason);
    }
    let above_max = capacity > scaling.max_instances;
    if !above_max && stabilized >= capacity {
        return decision(Action::Hold, "within target");
    }
    // Scale-in from here; each guard names why not yet.
    if draining {
        return decision(Action::Hold, "a drain is in progress");
    }
    if settling && !above_max {
        return decision(Action::Hold, "viewers of the last drain still reconnecting");
    }
    if !above_max {
        if missing_metrics {
            return decision(Action::Hold, "metrics missing: no scale-in");
        }
        if launching || warming {
            return decision(Action::Hold, "an instance is launching or warming up");
        }
        if !history.covers(now, window) {
            return decision(Action::Hold, "scale-in window not yet observed");
        }
    }
    let emptiest = serving().min_by(|a, b| a.sessions.cmp(&b.sessions).then(b.id.cmp(&a.id)));
    match emptiest {
        Some(i) => decision(
            Action::ScaleIn { id: i.id.clone() },
            if above_max {
                "above max_instances"
            } else {
                "load below target over the window"
            },
        ),
        None => decision(Action::Hold, "no serving instance to drain"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn scaling() -> ScalingConfig {
        ScalingConfig {
            min_instances: 1,
            max_instances: 6,
            tolerance: 0.1,
            scale_in_window_secs: 60,
            max_surge: 2,
            warmup_secs: 10,
            drain_deadline_secs: 30,
            launch_timeout_secs: 60,
            drain_settle_secs: 10,
        }
    }

    fn targets() -> TargetsConfig {
        TargetsConfig {
            conn_rate: 100.0,
            msg_rate: 1_000.0,
            connections: 1_000.0,
        }
    }

    /// A serving instance past its warm-up carrying `conn_rate` new connections/s.
    fn warm(id: &str, conn_rate: f64) -> InstanceView {
        InstanceView {
            id: id.to_string(),
            phase: Phase::Serving,
            serving_for: Some(Duration::from_secs(600)),
            signals: Some(Signals {
                conn_rate,
                msg_rate: conn_rate,
                connections: conn_rate,
            }),
            sessions: conn_rate as u64,
        }
    }

    fn with(mut i: InstanceView, f: impl FnOnce(&mut InstanceView)) -> InstanceView {
        f(&mut i);
        i
    }

    /// A history that has seen `recommendation` every 5 s for `secs` seconds up to `now`.
    fn history(now: Instant, secs: u64, recommendation: usize) -> History {
        let mut h = History::default();
        let window = Duration::from_secs(60);
        for t in (0..=secs).rev().step_by(5) {
            h.record(now - Duration::from_secs(t), recommendation, window);
        }
        h
    }

    struct Case {
        name: &'static str,
        instances: Vec<InstanceView>,
        /// Seconds of history and the recommendation it holds.
        history: (u64, usize),
        scaling: ScalingConfig,
        settling: bool,
        expect: Action,
    }

    fn case(
        name: &'static str,
        instances: Vec<InstanceView>,
        history: (u64, usize),
        expect: Action,
    ) -> Case {
        Case {
            name,
            instances,
            history,
            scaling: scaling(),
            settling: false,
            expect,
        }
    }

    fn scale_in(id: &str) -> Action {
        Action::ScaleIn { id: id.to_string() }
    }

    #[test]
    fn table() {
        let out = |count| Action::ScaleOut { count };
        let cases = vec![
            case(
                "steady load at target: no action",
                vec![warm("a", 100.0), warm("b", 100.0)],
                (120, 2),
                Action::Hold,
            ),
            case(
                "step up: scale out at once",
                vec![warm("a", 150.0), warm("b", 150.0)],
                (120, 2),
                out(1),
            ),
            case(
                "noisy load inside the tolerance (+9 %): no action",
                vec![warm("a", 109.0), warm("b", 109.0)],
                (120, 2),
                Action::Hold,
            ),
            case(
                "noisy load inside the tolerance (-9 %): no action",
                vec![warm("a", 91.0), warm("b", 91.0)],
                (120, 2),
                Action::Hold,
            ),
            case(
                "load drop: no scale-in before the window (history still high)",
                vec![warm("a", 10.0), warm("b", 10.0)],
                (120, 2),
                Action::Hold,
            ),
            case(
                "load drop: no scale-in before a whole window is observed",
                vec![warm("a", 10.0), warm("b", 10.0)],
                (30, 1),
                Action::Hold,
            ),
            case(
                "load low over the whole window: drain the emptiest",
                vec![warm("a", 12.0), warm("b", 10.0)],
                (120, 1),
                scale_in("b"),
            ),
            case(
                "missing metrics: never scale in",
                vec![warm("a", 10.0), with(warm("b", 0.0), |i| i.signals = None)],
                (120, 1),
                Action::Hold,
            ),
            case(
                "missing metrics: still scale out on what is known",
                vec![warm("a", 400.0), with(warm("b", 0.0), |i| i.signals = None)],
                (120, 2),
                out(2),
            ),
            case(
                "warm-up: a new instance's figures don't count and block scale-in",
                vec![
                    warm("a", 10.0),
                    with(warm("b", 500.0), |i| {
                        i.serving_for = Some(Duration::from_secs(3))
                    }),
                ],
                (120, 1),
                Action::Hold,
            ),
            case(
                "launching instances count as capacity",
                vec![
                    warm("a", 190.0),
                    with(warm("b", 0.0), |i| {
                        i.phase = Phase::Launching;
                        i.serving_for = None;
                        i.signals = None;
                    }),
                ],
                (120, 2),
                Action::Hold,
            ),
            case(
                "max surge caps one step",
                vec![warm("a", 900.0)],
                (120, 1),
                out(2),
            ),
            case(
                "max_instances caps scale-out",
                vec![
                    warm("a", 900.0),
                    warm("b", 900.0),
                    warm("c", 900.0),
                    warm("d", 900.0),
                    warm("e", 900.0),
                ],
                (120, 5),
                out(1),
            ),
            case(
                "at max_instances: no action however high the load",
                (0..6)
                    .map(|i| warm(["a", "b", "c", "d", "e", "f"][i], 900.0))
                    .collect(),
                (120, 6),
                Action::Hold,
            ),
            case(
                "min_instances: an empty fleet launches up to the minimum",
                vec![],
                (0, 0),
                out(1),
            ),
            case(
                "min_instances: no scale-in below the minimum",
                vec![warm("a", 0.0)],
                (120, 1),
                Action::Hold,
            ),
            case(
                "one drain at a time",
                vec![
                    warm("a", 1.0),
                    warm("b", 1.0),
                    with(warm("c", 0.0), |i| i.phase = Phase::Draining),
                ],
                (120, 1),
                Action::Hold,
            ),
            case(
                "a draining instance is not capacity",
                vec![
                    warm("a", 150.0),
                    with(warm("b", 0.0), |i| i.phase = Phase::Draining),
                ],
                (120, 1),
                out(1),
            ),
            Case {
                settling: true,
                ..case(
                    "drained viewers reconnecting: their connections/sec is no arrival",
                    vec![warm("a", 150.0), warm("b", 150.0)],
                    (120, 2),
                    Action::Hold,
                )
            },
            Case {
                settling: true,
                ..case(
                    "settling after a drain: no second scale-in yet",
                    vec![warm("a", 1.0), warm("b", 1.0)],
                    (120, 1),
                    Action::Hold,
                )
            },
        ];
        let now = Instant::now() + Duration::from_secs(3_600);
        for c in cases {
            let h = if c.history.0 == 0 && c.history.1 == 0 {
                History::default()
            } else {
                history(now, c.history.0, c.history.1)
            };
            let d = decide(&c.instances, &h, now, &c.scaling, &targets(), c.settling);
            assert_eq!(d.action, c.expect, "{}: {d:?}", c.name);
        }
    }

    #[test]
    fn max_instances_lowered_drains_at_once() {
        let now = Instant::now();
        let mut s = scaling();
        s.max_instances = 1;
        let d = decide(
            &[warm("a", 90.0), warm("b", 5.0)],
            &History::default(),
            now,
            &s,
            &targets(),
            false,
        );
        assert_eq!(d.action, scale_in("b"));
    }

    #[test]
    fn highest_signal_wins() {
        let now = Instant::now() + Duration::from_secs(3_600);
        let mut a = warm("a", 50.0);
        a.signals = Some(Signals {
            conn_rate: 50.0,
            msg_rate: 3_000.0,
            connections: 10.0,
        });
        let d = decide(
            &[a],
            &history(now, 120, 1),
            now,
            &scaling(),
            &targets(),
            false,
        );
        assert_eq!(d.recommendation, 3);
        assert_eq!(d.action, Action::ScaleOut { count: 2 });
    }

    #[test]
    fn history_forgets_beyond_the_window() {
        let now = Instant::now() + Duration::from_secs(3_600);
        let window = Duration::from_secs(60);
        let mut h = History::default();
        h.record(now - Duration::from_secs(100), 5, window);
        h.record(now - Duration::from_secs(30), 2, window);
        h.record(now, 1, window);
        assert_eq!(h.highest(now, window), Some(2));
        assert!(h.covers(now, window));
    }
}
