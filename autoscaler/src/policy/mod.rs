//! The scaling policy: a pure function from one tick's observations, the history of
//! recommendations and the load's growth to a decision. No I/O and no clock: the caller passes
//! `now`, so the tests are tables of cases.
//!
//! As Kubernetes' HPA does it, with a look-ahead: per signal, `ceil(load / target)` on the load
//! predicted one provisioning time ahead ([`trend`]: growth rates fitted over the last
//! `trend_window_secs`; the horizon is the measured boot time plus a poll and HAProxy's rise
//! checks), kept at the current size while the predicted load/capacity ratio is within the
//! tolerance band; the recommendation is the maximum over signals, clamped to min/max.
//! Scale-out acts at once, capped by `max_surge`; scale-in goes only to the highest
//! recommendation over the window (predictions included, so a growing load keeps what it will
//! need), one scale-in at a time, and never while figures are missing, an instance launches,
//! warms up or is being replaced. Launching instances count as capacity, so a slow boot
//! doesn't launch a second wave; an unhealthy instance (its tracker failed `unhealthy_polls`
//! polls) doesn't, so it is replaced.

pub mod trend;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{ScalingConfig, TargetsConfig};
use crate::provider::Phase;
pub use trend::{Growth, Trend};

/// Load figures: one instance's, or the fleet's total. Only real viewers count (see
/// [`crate::tracker::TrackerFigures`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Signals {
    /// New viewers per second (not those moved by a drain).
    pub conn_rate: f64,
    /// Signals relayed or refused for a real reason, per second.
    pub msg_rate: f64,
    /// Open viewers.
    pub connections: f64,
    /// Viewers moved here by a drain, per second (shown, not a target: a move is no new load
    /// for the fleet).
    pub moved_rate: f64,
}

impl std::ops::AddAssign for Signals {
    fn add_assign(&mut self, o: Self) {
        self.conn_rate += o.conn_rate;
        self.msg_rate += o.msg_rate;
        self.connections += o.connections;
        self.moved_rate += o.moved_rate;
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
    /// `false`: its tracker failed `unhealthy_polls` polls in a row; it is no capacity and
    /// is being replaced.
    pub healthy: bool,
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
    /// Drain and remove these instances, together: each viewer moves once, onto the
    /// instances that stay.
    ScaleIn {
        /// Their provider ids.
        ids: Vec<String>,
        /// Their viewers reconnect spread over this window, sized to what the others take.
        reconnect_window_ms: u64,
    },
}

/// The policy's answer for one tick.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// Instances counted as capacity (launching, and serving healthy).
    pub capacity: usize,
    /// This tick's recommendation (to record in the [`History`]).
    pub recommendation: usize,
    /// The size scale-in aims at: the highest recommendation over the window.
    pub stabilized: usize,
    /// The fleet's total load over the instances whose figures were read.
    pub load: Signals,
    /// The load predicted one horizon ahead: what the recommendation is for.
    pub predicted: Signals,
    /// How fast the load grows.
    pub growth: Growth,
    /// The look-ahead, seconds: boot time, a poll and HAProxy's rise checks.
    pub horizon_secs: f64,
    /// Unused share of the serving instances' targets on the busiest signal now (negative:
    /// above target; 0 without serving instances).
    pub headroom: f64,
    /// Serving instances whose tracker stopped answering (no capacity; replaced).
    pub unhealthy: usize,
    /// Whether some healthy serving instance had no figures.
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

/// The fleet's load: the sum over every instance whose figures were read (serving or
/// draining: a viewer counts wherever it is until it has moved).
pub fn fleet_load(instances: &[InstanceView]) -> Signals {
    let mut load = Signals::default();
    for s in instances.iter().filter_map(|i| i.signals) {
        load += s;
    }
    load
}

/// Instances needed for `load` per signal, the maximum over signals; `capacity` when the
/// ratio is within the tolerance band of it.
fn needed(load: &Signals, capacity: usize, scaling: &ScalingConfig, t: &TargetsConfig) -> usize {
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
    [
        per_signal(load.conn_rate, t.conn_rate),
        per_signal(load.msg_rate, t.msg_rate),
        per_signal(load.connections, t.connections),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(capacity)
}

/// Unused share of `serving` instances' targets on the busiest signal.
fn headroom(load: &Signals, serving: usize, t: &TargetsConfig) -> f64 {
    if serving == 0 {
        return 0.0;
    }
    let n = serving as f64;
    [
        (load.conn_rate, t.conn_rate),
        (load.msg_rate, t.msg_rate),
        (load.connections, t.connections),
    ]
    .into_iter()
    .filter(|&(_, target)| target > 0.0)
    .map(|(v, target)| 1.0 - v / (n * target))
    .fold(1.0, f64::min)
}

/// Share of its `conn_rate` target a receiving instance spends on moved viewers (less its own
/// arrivals): the margin keeps it under the target despite the jitter of the reconnects
/// (measured in the surge demo: at 0.8 the busiest receiver's rate over one second reached the
/// target).
const RECEIVE_SHARE: f64 = 0.6;

/// Seconds the `receivers` (their figures) need to take `moving` viewers, each at
/// `RECEIVE_SHARE` of `targets.conn_rate` less its own arrivals (at least a quarter of the
/// target, so a busy fleet still drains); `None` without a rate target or receivers.
fn absorb_secs(moving: f64, receivers: &[Signals], targets: &TargetsConfig) -> Option<f64> {
    let target = targets.conn_rate;
    if target <= 0.0 || receivers.is_empty() {
        return None;
    }
    let spare: f64 = receivers
        .iter()
        .map(|r| (RECEIVE_SHARE * target - r.conn_rate - r.moved_rate).max(target / 4.0))
        .sum();
    Some(moving.max(0.0) / spare)
}

/// The window drained instances' `moving` viewers reconnect over (see [`absorb_secs`]),
/// between 1 s and `max`.
pub fn reconnect_window(
    moving: f64,
    receivers: &[Signals],
    targets: &TargetsConfig,
    max: Duration,
) -> Duration {
    absorb_secs(moving, receivers, targets).map_or(max, |secs| {
        Duration::from_secs_f64(secs.clamp(1.0, max.as_secs_f64().max(1.0)))
    })
}

/// Decides what to do this tick from `instances` (every live instance of the fleet),
/// `history` (earlier recommendations; the caller records [`Decision::recommendation`]) and
/// `growth` (from the [`Trend`]), sizing for the load `horizon` ahead.
pub fn decide(
    instances: &[InstanceView],
    history: &History,
    growth: &Growth,
    horizon: Duration,
    now: Instant,
    scaling: &ScalingConfig,
    targets: &TargetsConfig,
) -> Decision {
    let warmup = Duration::from_secs(scaling.warmup_secs);
    let window = Duration::from_secs(scaling.scale_in_window_secs);
    let serving = || {
        instances
            .iter()
            .filter(|i| i.phase == Phase::Serving && i.healthy)
    };
    let launching = instances
        .iter()
        .filter(|i| i.phase == Phase::Launching)
        .count();
    let capacity = launching + serving().count();
    let unhealthy = instances
        .iter()
        .filter(|i| i.phase == Phase::Serving && !i.healthy)
        .count();
    let draining = instances.iter().any(|i| i.phase == Phase::Draining);
    let warming = serving().any(|i| i.serving_for.is_none_or(|d| d < warmup));
    let missing_metrics = serving().any(|i| i.signals.is_none());
    let load = fleet_load(instances);
    let counted = instances.iter().filter(|i| i.signals.is_some()).count();
    let predicted = growth.predict(&load, horizon);

    let (mut now_needs, mut recommendation) = if counted == 0 {
        // Nothing to judge by: hold what there is (the min/max clamp still applies).
        (capacity, capacity)
    } else {
        (
            needed(&load, capacity, scaling, targets),
            needed(&predicted, capacity, scaling, targets),
        )
    };
    recommendation = recommendation.max(now_needs);
    if missing_metrics {
        recommendation = recommendation.max(capacity);
        now_needs = now_needs.max(capacity);
    }
    let clamp = |n: usize| n.clamp(scaling.min_instances, scaling.max_instances);
    let recommendation = clamp(recommendation);
    let stabilized = history
        .highest(now, window)
        .map_or(recommendation, |h| h.max(recommendation));

    let decision = |action, reason| Decision {
        capacity,
        recommendation,
        stabilized,
        load,
        predicted,
        growth: *growth,
        horizon_secs: horizon.as_secs_f64(),
        headroom: headroom(&load, serving().count(), targets),
        unhealthy,
        missing_metrics,
        action,
        reason,
    };
    if recommendation > capacity {
        let count = (recommendation - capacity).min(scaling.max_surge);
        let reason = if capacity < scaling.min_instances {
            "below min_instances"
        } else if unhealthy > 0 && recommendation <= capacity + unhealthy {
            "replacing an unhealthy instance"
        } else if clamp(now_needs) <= capacity {
            "load rising: forecast above target"
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
    if !above_max {
        if missing_metrics {
            return decision(Action::Hold, "metrics missing: no scale-in");
        }
        if unhealthy > 0 {
            return decision(Action::Hold, "an instance is being replaced");
        }
        if launching > 0 || warming {
            return decision(Action::Hold, "an instance is launching or warming up");
        }
        if !history.covers(now, window) {
            return decision(Action::Hold, "scale-in window not yet observed");
        }
    }
    // Every instance above the aim drains at once, so each viewer moves once, onto instances
    // that stay: the emptiest go, as many as the others take within the longest reconnect
    // window (at least one).
    let mut by_load: Vec<&InstanceView> = serving().collect();
    by_load.sort_by(|a, b| a.sessions.cmp(&b.sessions).then(b.id.cmp(&a.id)));
    if by_load.is_empty() {
        return decision(Action::Hold, "no serving instance to drain");
    }
    let viewers_of = |i: &InstanceView| {
        i.signals
            .map_or(0.0, |s| s.connections)
            .max(i.sessions as f64)
    };
    let max_window = Duration::from_secs(scaling.max_reconnect_window_secs);
    let mut k = capacity
        .saturating_sub(stabilized)
        .clamp(1, by_load.len().saturating_sub(1).max(1));
    let (ids, window) = loop {
        let (going, staying) = by_load.split_at(k);
        let moving: f64 = going.iter().map(|i| viewers_of(i)).sum();
        let receivers: Vec<Signals> = staying
            .iter()
            .map(|i| i.signals.unwrap_or_default())
            .collect();
        let fits = absorb_secs(moving, &receivers, targets)
            .is_none_or(|secs| secs <= max_window.as_secs_f64());
        if fits || k == 1 {
            let window = reconnect_window(moving, &receivers, targets, max_window);
            break (going.iter().map(|i| i.id.clone()).collect(), window);
        }
        k -= 1;
    };
    decision(
        Action::ScaleIn {
            ids,
            reconnect_window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        },
        if above_max {
            "above max_instances"
        } else {
            "load below target over the window"
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
