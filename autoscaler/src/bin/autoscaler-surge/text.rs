//! The surge report people read: the run every 10 s, the scale actions with their headroom,
//! the autoscaler's events, the scale-in, the figures (with the two lines the issue quotes:
//! `failed or refused joins: X %`, `viewers dropped without reconnect: N`) and the goals.

use std::fmt::Write as _;

use crate::report::Figures;
use crate::scenario::Scenario;

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1}"))
}

/// The report of a run.
pub fn text(sc: &Scenario, f: &Figures) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "== surge: {:.0}/s -> {:.0}/s in {:.0} s (after {:.0} s), {:.0} s at the top; watch {:.0}-{:.0} s; max_connections {}",
        sc.base_rate,
        sc.base_rate * f64::from(sc.factor),
        sc.climb_secs,
        sc.baseline_secs,
        sc.plateau_secs,
        sc.watch_min_secs,
        sc.watch_max_secs,
        sc.max_connections
    );
    let _ = writeln!(
        w,
        "\n-- over time (every 10 s; capacity = serving x max_connections)"
    );
    let _ = writeln!(
        w,
        "{:>6} {:>7} {:>8} {:>9} {:>9} {:>9} {:>10} {:>9} {:>12}",
        "t (s)",
        "rate/s",
        "viewers",
        "serving",
        "booting",
        "capacity",
        "predicted",
        "headroom",
        "join p99 ms"
    );
    for chunk in f.seconds.chunks(10) {
        let Some(s) = chunk.last() else { continue };
        let p99 = chunk
            .iter()
            .filter_map(|x| x.join_p99_ms)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        let _ = writeln!(
            w,
            "{:>6.0} {:>7.0} {:>8.0} {:>9} {:>9} {:>9} {:>10.0} {:>8.0}% {:>12}",
            s.t,
            s.rate,
            s.viewers,
            s.serving,
            s.launching,
            s.serving * sc.max_connections as usize,
            s.predicted,
            s.headroom * 100.0,
            opt_ms(p99)
        );
    }
    let _ = writeln!(
        w,
        "\n-- scale actions (headroom: unused share of the serving instances' target / max_connections)"
    );
    for a in &f.actions {
        let _ = writeln!(
            w,
            "  +{:>5.0} s {:<9} {:>2}  capacity {:>2}, viewers {:>5.0}, predicted {:>5.0} in {:.0} s, headroom {:>4.0}% / {:>4.0}%: {}",
            a.t,
            a.action,
            if a.action == "scale_out" {
                format!("+{}", a.count)
            } else {
                format!("-{}", a.count)
            },
            a.capacity,
            a.viewers,
            a.predicted,
            a.horizon_secs,
            a.headroom * 100.0,
            a.hard_headroom * 100.0,
            a.reason
        );
    }
    let _ = writeln!(w, "\n-- autoscaler events");
    for (t, kind, id, detail) in &f.events {
        let _ = writeln!(w, "  +{t:>5.0} s {kind:<9} {id}: {detail}");
    }
    let _ = writeln!(w, "\n-- scale-in");
    for d in &f.drains {
        let _ = writeln!(
            w,
            "  +{:>5.0} s drain {} ({}), removed after {} s; busiest receiver {:.1} new connections/s (limit {:.0})",
            d.t,
            d.id,
            d.detail,
            d.took_secs.map_or("-".into(), |s| format!("{s:.0}")),
            d.receiver_peak_rate,
            f.receiver_limit
        );
    }
    let _ = writeln!(
        w,
        "  scale-ins within the surge: {}; back to the minimum ({}) {} after the event ended",
        f.scale_ins_within_surge,
        f.min_instances,
        f.back_to_min_secs
            .map_or("not in time".to_string(), |s| format!("{s:.0} s"))
    );
    let _ = writeln!(w, "\n-- figures");
    let _ = writeln!(
        w,
        "  connection attempts {}, failed {} {:?}; joins {}; reconnects followed {}",
        f.attempts, f.failed, f.failed_by, f.joins, f.reconnects
    );
    let _ = writeln!(
        w,
        "  worst join p99 of any second {:.1} ms; connect p99 over the run {:.1} ms",
        f.join_p99_max_ms, f.connect_p99_ms
    );
    let _ = writeln!(
        w,
        "  first launch {} into the climb; lowest capacity headroom in the surge {:.0} % (at +{:.0} s)",
        f.first_launch_into_climb
            .map_or("none".to_string(), |t| format!("{t:.0} s")),
        f.min_hard_headroom.0 * 100.0,
        f.min_hard_headroom.1
    );
    let _ = writeln!(
        w,
        "  peak {:.0} viewers on {} serving instances: {} needed at the target, {} at max_connections (overshoot {})",
        f.peak_viewers,
        f.peak_serving,
        f.needed_at_target,
        f.needed_at_capacity,
        f.peak_serving as i64 - f.needed_at_target as i64
    );
    let _ = writeln!(w, "failed or refused joins: {:.2} %", f.failed_pct);
    let _ = writeln!(w, "viewers dropped without reconnect: {}", f.dropped);
    let _ = writeln!(w, "\n-- goals");
    for (goal, met) in &f.goals {
        let _ = writeln!(w, "  [{}] {goal}", if *met { "met" } else { "MISSED" });
    }
    for p in &f.problems {
        let _ = writeln!(w, "  problem: {p}");
    }
    out
}
