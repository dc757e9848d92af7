//! The run as one SVG: viewers against the fleet's capacity (serving instances x
//! `max_connections`; dashed: with the instances still booting) and the autoscaler's
//! prediction above, the instances on the right axis; the join p99 of each second and the
//! arrival rate below; launches, readiness and drains marked, the surge shaded.
//! Hand-written SVG, as the status page's chart: no plotting dependency for two panels.

use std::fmt::Write as _;

use crate::report::{Figures, GOAL_JOIN_P99_MS, Second};
use crate::scenario::Scenario;

const W: f64 = 960.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 64.0;
const TOP_Y: f64 = 40.0;
const TOP_H: f64 = 300.0;
const LOW_Y: f64 = 420.0;
const LOW_H: f64 = 150.0;
const H: f64 = 610.0;

/// A round step for about `n` ticks up to `max`.
fn tick_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= raw)
        .unwrap_or(10.0 * p)
}

/// A round number at least `v`, for an axis.
fn nice(v: f64) -> f64 {
    let step = tick_step(v.max(1.0), 5.0);
    (v.max(1.0) / step).ceil() * step
}

fn polyline(out: &mut String, points: &[(f64, f64)], style: &str) {
    if points.is_empty() {
        return;
    }
    let pts: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = write!(
        out,
        "<polyline fill='none' {style} points='{}'/>",
        pts.join(" ")
    );
}

/// Step line: each value holds until the next.
fn steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (k, &(x, y)) in points.iter().enumerate() {
        if k > 0 {
            out.push((x, points[k - 1].1));
        }
        out.push((x, y));
    }
    out
}

/// The chart of a run.
pub fn svg(sc: &Scenario, f: &Figures) -> String {
    let t_end = f.seconds.last().map_or(1.0, |s| s.t).max(1.0);
    let x = |t: f64| LEFT + t / t_end * (W - LEFT - RIGHT);
    let cap = f64::from(sc.max_connections);
    let top_max = nice(
        f.seconds
            .iter()
            .map(|s| {
                ((s.serving + s.launching) as f64 * cap)
                    .max(s.viewers)
                    .max(s.predicted)
            })
            .fold(1.0, f64::max),
    );
    let y_top = |v: f64| TOP_Y + TOP_H - v.min(top_max) / top_max * TOP_H;
    let p99_max = nice(
        f.seconds
            .iter()
            .filter_map(|s| s.join_p99_ms)
            .fold(GOAL_JOIN_P99_MS * 1.25, f64::max),
    );
    let rate_max = nice(f.seconds.iter().map(|s| s.rate).fold(1.0, f64::max));
    let y_p99 = |v: f64| LOW_Y + LOW_H - v.min(p99_max) / p99_max * LOW_H;
    let y_rate = |v: f64| LOW_Y + LOW_H - v / rate_max * LOW_H;

    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' viewBox='0 0 {W} {H}' \
         font-family='sans-serif' font-size='12'><rect width='{W}' height='{H}' fill='#fff'/>"
    );
    // The surge: from the climb's start to the event's end.
    let (a, b) = (x(sc.climb_start()), x(sc.surge_end().min(t_end)));
    let _ = write!(
        s,
        "<rect x='{a:.1}' y='{TOP_Y}' width='{:.1}' height='{}' fill='#f4f0e0'/>\
         <text x='{:.1}' y='{}' fill='#886'>surge</text>",
        b - a,
        LOW_Y + LOW_H - TOP_Y,
        a + 4.0,
        TOP_Y + 14.0
    );
    // Grid and axes: time every minute; viewers; instances at multiples of max_connections;
    // join p99; arrivals.
    let mut t = 0.0;
    while t <= t_end {
        let _ = write!(
            s,
            "<line x1='{0:.1}' x2='{0:.1}' y1='{TOP_Y}' y2='{1}' stroke='#eee'/>\
             <line x1='{0:.1}' x2='{0:.1}' y1='{LOW_Y}' y2='{2}' stroke='#eee'/>\
             <text x='{0:.1}' y='{3}' text-anchor='middle'>{4:.0} s</text>",
            x(t),
            TOP_Y + TOP_H,
            LOW_Y + LOW_H,
            LOW_Y + LOW_H + 16.0,
            t
        );
        t += 60.0;
    }
    let step = tick_step(top_max, 5.0);
    let mut v = 0.0;
    while v <= top_max {
        let _ = write!(
            s,
            "<text x='{:.1}' y='{:.1}' text-anchor='end'>{v:.0}</text>",
            LEFT - 6.0,
            y_top(v) + 4.0
        );
        v += step;
    }
    let mut n = 1.0;
    while n * cap <= top_max {
        let _ = write!(
            s,
            "<line x1='{0:.1}' x2='{1:.1}' y1='{2:.1}' y2='{2:.1}' stroke='#2a2'/>\
             <text x='{3:.1}' y='{4:.1}' fill='#2a2'>{n:.0} inst.</text>",
            W - RIGHT,
            W - RIGHT + 4.0,
            y_top(n * cap),
            W - RIGHT + 6.0,
            y_top(n * cap) + 4.0
        );
        n += 1.0;
    }
    for (y0, h) in [(TOP_Y, TOP_H), (LOW_Y, LOW_H)] {
        let _ = write!(
            s,
            "<rect x='{LEFT}' y='{y0}' width='{}' height='{h}' fill='none' stroke='#999'/>",
            W - LEFT - RIGHT
        );
    }
    let _ = write!(
        s,
        "<text x='{:.1}' y='{:.1}' text-anchor='end'>{p99_max:.0} ms</text>\
         <text x='{:.1}' y='{:.1}' text-anchor='end'>0</text>\
         <text x='{:.1}' y='{:.1}' fill='#777'>{rate_max:.0}/s</text>\
         <text x='{:.1}' y='{:.1}' fill='#777'>0/s</text>",
        LEFT - 6.0,
        LOW_Y + 4.0,
        LEFT - 6.0,
        LOW_Y + LOW_H,
        W - RIGHT + 6.0,
        LOW_Y + 4.0,
        W - RIGHT + 6.0,
        LOW_Y + LOW_H,
    );
    // Scale actions.
    for (t, kind, id, _) in &f.events {
        let (colour, dash) = match kind.as_str() {
            "launch" => ("#2a2", "5 3"),
            "ready" => ("#2a2", "1 3"),
            "drain" => ("#d60", "5 3"),
            _ => continue,
        };
        let _ = write!(
            s,
            "<line x1='{0:.1}' x2='{0:.1}' y1='{TOP_Y}' y2='{1}' stroke='{colour}' \
             stroke-dasharray='{dash}'><title>{kind} {id} at {t:.0} s</title></line>",
            x(*t),
            LOW_Y + LOW_H
        );
    }
    let series = |value: &dyn Fn(&Second) -> f64, y: &dyn Fn(f64) -> f64| {
        f.seconds
            .iter()
            .map(|p| (x(p.t), y(value(p))))
            .collect::<Vec<_>>()
    };
    let booting = steps(&series(&|p| (p.serving + p.launching) as f64 * cap, &y_top));
    polyline(&mut s, &booting, "stroke='#c22' stroke-dasharray='6 3'");
    let capacity = steps(&series(&|p| p.serving as f64 * cap, &y_top));
    polyline(&mut s, &capacity, "stroke='#c22' stroke-width='2'");
    let predicted: Vec<(f64, f64)> = f
        .seconds
        .iter()
        .filter(|p| p.predicted > 0.0)
        .map(|p| (x(p.t), y_top(p.predicted)))
        .collect();
    polyline(&mut s, &predicted, "stroke='#27c' stroke-dasharray='2 2'");
    polyline(
        &mut s,
        &series(&|p| p.viewers, &y_top),
        "stroke='#000' stroke-width='2'",
    );
    // Lower panel: join p99 per second, the goal, the arrival rate.
    let goal = y_p99(GOAL_JOIN_P99_MS);
    let _ = write!(
        s,
        "<line x1='{LEFT}' x2='{}' y1='{goal:.1}' y2='{goal:.1}' stroke='#c22' stroke-dasharray='4 2'/>\
         <text x='{:.1}' y='{:.1}' fill='#c22'>goal {GOAL_JOIN_P99_MS:.0} ms</text>",
        W - RIGHT,
        LEFT + 4.0,
        goal - 4.0
    );
    polyline(
        &mut s,
        &steps(&series(&|p| p.rate, &y_rate)),
        "stroke='#777' stroke-width='1'",
    );
    for p in &f.seconds {
        if let Some(v) = p.join_p99_ms {
            let _ = write!(
                s,
                "<circle cx='{:.1}' cy='{:.1}' r='1.5' fill='#a0a'/>",
                x(p.t),
                y_p99(v)
            );
        }
    }
    let _ = write!(
        s,
        "<text x='{LEFT}' y='24' font-size='14'>Flash crowd: viewers against the fleet's \
         capacity ({} per instance; the autoscaler looks {:.0} s ahead)</text>",
        sc.max_connections,
        f.actions
            .iter()
            .find(|a| a.action == "scale_out")
            .map_or(0.0, |a| a.horizon_secs)
    );
    let key = [
        ("#000", "viewers"),
        (
            "#c22",
            "capacity: serving x max_connections (dashed: + booting)",
        ),
        ("#27c", "viewers predicted one horizon ahead"),
        ("#2a2", "launch (dashed), ready (dotted); drain in orange"),
    ];
    for (k, (colour, label)) in key.iter().enumerate() {
        let _ = write!(
            s,
            "<text x='{:.1}' y='{:.1}' fill='{colour}'>&#9644; {label}</text>",
            LEFT + (k % 2) as f64 * 400.0,
            TOP_Y + TOP_H + 34.0 + (k / 2) as f64 * 16.0
        );
    }
    let _ = write!(
        s,
        "<text x='{LEFT}' y='{:.1}'><tspan fill='#a0a'>&#9679; join p99 of each second \
         (worst simulator)</tspan>  <tspan fill='#777'>&#9644; new viewers/s asked</tspan></text></svg>",
        LOW_Y - 8.0
    );
    s
}
