//! The look-ahead: how fast the fleet's load grows, fitted over the last `trend_window_secs`,
//! so the policy sizes the fleet for the load one boot time from now, not the load of now.
//!
//! Three series are kept, one point per tick: the level of open viewers (a running sum of each
//! instance's change between two ticks it was read in, so a viewer moved by a drain, an
//! instance whose metrics are missing for a tick, or a new instance adds no false growth), new
//! viewers per second and signals per second. A least-squares line through each gives its
//! slope; a slope counts only when it exceeds twice its standard error (and then whole: its
//! lower bound would see a surge's climb half a minute later, measured), so Poisson noise on a
//! flat load predicts no growth, while a climb stands out within a few ticks.
//! Pure: the caller passes the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Signals;

/// A slope counts only beyond this many standard errors (one-sided, about 97.5 %).
const CONFIDENCE: f64 = 2.0;
/// Fewest points a slope is fitted on.
const MIN_POINTS: usize = 4;
/// Most points kept (a 600 s window at a 100 ms poll).
const MAX_POINTS: usize = 6_000;

/// One tick's fleet figures.
#[derive(Clone, Copy, Debug)]
struct Point {
    at: Instant,
    level: f64,
    conn_rate: f64,
    msg_rate: f64,
}

/// The fleet's recent history of load, for its growth rates.
#[derive(Clone, Debug)]
pub struct Trend {
    window: Duration,
    level: f64,
    points: VecDeque<Point>,
}

/// How fast the load grows now; every figure is 0 or more (a falling load is left to the
/// scale-in window).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Growth {
    /// Open viewers per second.
    pub viewers_per_sec: f64,
    /// Change of new viewers per second, per second: the arrival rate's own growth.
    pub conn_rate_per_sec: f64,
    /// Change of signals per second, per second.
    pub msg_rate_per_sec: f64,
}

impl Growth {
    /// Whether any figure grows.
    pub fn any(&self) -> bool {
        self.viewers_per_sec > 0.0 || self.conn_rate_per_sec > 0.0 || self.msg_rate_per_sec > 0.0
    }

    /// The load `horizon` from now if it keeps growing so: rates grow linearly; open viewers
    /// grow at their rate now plus the arrivals' growth (departures lag behind arrivals by the
    /// watch time, so within a boot time they barely follow).
    pub fn predict(&self, load: &Signals, horizon: Duration) -> Signals {
        let h = horizon.as_secs_f64();
        Signals {
            conn_rate: load.conn_rate + self.conn_rate_per_sec * h,
            msg_rate: load.msg_rate + self.msg_rate_per_sec * h,
            connections: load.connections
                + self.viewers_per_sec * h
                + 0.5 * self.conn_rate_per_sec * h * h,
            moved_rate: load.moved_rate,
        }
    }
}

/// Least squares through `(x, y)`: the slope if it is above `CONFIDENCE` standard errors,
/// else 0 (noise could explain it; a falling load counts as 0 too), and the mean x. `None`
/// with too few points.
fn cautious_slope(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len();
    if n < MIN_POINTS {
        return None;
    }
    let nf = n as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let slope = sxy / sxx;
    let residual: f64 = points
        .iter()
        .map(|p| (p.1 - my - slope * (p.0 - mx)).powi(2))
        .sum();
    let se = (residual / (nf - 2.0) / sxx).sqrt();
    let significant = slope > CONFIDENCE * se;
    Some((if significant { slope } else { 0.0 }, mx))
}

impl Trend {
    /// A trend over `window` (zero: no look-ahead).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            level: 0.0,
            points: VecDeque::new(),
        }
    }

    /// Records one tick: `viewer_change`, the sum of each instance's change of open viewers
    /// since the last tick it was read in; `load`, the fleet's figures.
    pub fn record(&mut self, at: Instant, viewer_change: f64, load: &Signals) {
        if self.window.is_zero() {
            return;
        }
        self.level += viewer_change;
        self.points.push_back(Point {
            at,
            level: self.level,
            conn_rate: load.conn_rate,
            msg_rate: load.msg_rate,
        });
        while let Some(p) = self.points.front() {
            if at.saturating_duration_since(p.at) > self.window || self.points.len() > MAX_POINTS {
                self.points.pop_front();
            } else {
                break;
            }
        }
    }

    /// The growth at `now`: slopes over the window, each only beyond its noise. The viewers'
    /// slope is their average growth over the window, brought to `now` with the arrivals'
    /// growth since the window's middle.
    pub fn growth(&self, now: Instant) -> Growth {
        let Some(first) = self.points.front() else {
            return Growth::default();
        };
        let x = |p: &Point| p.at.saturating_duration_since(first.at).as_secs_f64();
        let series = |f: fn(&Point) -> f64| -> Vec<(f64, f64)> {
            self.points.iter().map(|p| (x(p), f(p))).collect()
        };
        let now_x = now.saturating_duration_since(first.at).as_secs_f64();
        let conn = cautious_slope(&series(|p| p.conn_rate));
        let msg = cautious_slope(&series(|p| p.msg_rate));
        let level = cautious_slope(&series(|p| p.level));
        let conn_rate_per_sec = conn.map_or(0.0, |c| c.0);
        let viewers_per_sec = level.map_or(0.0, |(slope, mid)| {
            slope + conn_rate_per_sec * (now_x - mid)
        });
        Growth {
            viewers_per_sec,
            conn_rate_per_sec,
            msg_rate_per_sec: msg.map_or(0.0, |m| m.0),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn load(conn_rate: f64) -> Signals {
        Signals {
            conn_rate,
            msg_rate: conn_rate * 10.0,
            connections: 0.0,
            moved_rate: 0.0,
        }
    }

    /// A deterministic stand-in for Poisson noise: +-`amp` alternating.
    fn wobble(i: u32, amp: f64) -> f64 {
        if i.is_multiple_of(2) { amp } else { -amp }
    }

    #[test]
    fn a_flat_noisy_load_predicts_no_growth() {
        let t0 = Instant::now();
        let mut t = Trend::new(Duration::from_secs(30));
        for i in 0..30 {
            // 5 viewers/s arriving, as many leaving; the rate read is noisy.
            t.record(
                t0 + Duration::from_secs(u64::from(i)),
                wobble(i, 3.0),
                &load(5.0 + wobble(i, 2.0)),
            );
        }
        let g = t.growth(t0 + Duration::from_secs(29));
        assert_eq!(g, Growth::default(), "{g:?}");
        assert!(!g.any());
    }

    #[test]
    fn a_climb_is_seen_and_projected() {
        let t0 = Instant::now();
        let mut t = Trend::new(Duration::from_secs(30));
        // Arrivals climb 0.3/s per second; open viewers grow by the arrivals (none leave yet).
        let mut rate = 4.0;
        for i in 0..20 {
            t.record(
                t0 + Duration::from_secs(u64::from(i)),
                rate,
                &load(rate + wobble(i, 0.5)),
            );
            rate += 0.3;
        }
        let now = t0 + Duration::from_secs(19);
        let g = t.growth(now);
        assert!(
            (0.15..=0.3).contains(&g.conn_rate_per_sec),
            "arrival growth {g:?}"
        );
        // At now the viewers grow by about the arrival rate now (9.7/s).
        assert!((7.0..=11.0).contains(&g.viewers_per_sec), "{g:?}");
        let now_load = Signals {
            connections: 500.0,
            ..load(9.7)
        };
        let p = g.predict(&now_load, Duration::from_secs(60));
        assert!(p.connections > 500.0 + 60.0 * 7.0, "{p:?}");
        assert!(p.conn_rate > 9.7 + 60.0 * 0.15, "{p:?}");
    }

    #[test]
    fn old_points_leave_the_window_and_no_window_means_no_look_ahead() {
        let t0 = Instant::now();
        let mut t = Trend::new(Duration::from_secs(10));
        for i in 0..10u32 {
            t.record(
                t0 + Duration::from_secs(u64::from(i)),
                50.0,
                &load(f64::from(i) * 10.0),
            );
        }
        // Then flat for longer than the window: the climb is forgotten.
        for i in 10..30u32 {
            t.record(t0 + Duration::from_secs(u64::from(i)), 0.0, &load(100.0));
        }
        assert_eq!(t.growth(t0 + Duration::from_secs(29)), Growth::default());
        let mut off = Trend::new(Duration::ZERO);
        for i in 0..10u32 {
            off.record(
                t0 + Duration::from_secs(u64::from(i)),
                50.0,
                &load(f64::from(i) * 10.0),
            );
        }
        assert_eq!(off.growth(t0 + Duration::from_secs(9)), Growth::default());
    }
}
