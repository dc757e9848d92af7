//! The figures of a surge run, from the simulators' reports and the autoscaler's `/status`
//! samples, judged against the goals (written as JSON; [`crate::text`] writes them for people).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scenario::{Outcome, Scenario};

/// Failed or refused joins allowed, percent.
pub const GOAL_FAILED_PCT: f64 = 0.5;
/// Join p99 allowed at any second, ms.
pub const GOAL_JOIN_P99_MS: f64 = 200.0;

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Second {
    /// Seconds from the start.
    pub t: f64,
    /// Arrivals per second asked of the simulators.
    pub rate: f64,
    /// Viewers connected (all simulators).
    pub viewers: f64,
    /// Instances serving and UP in HAProxy.
    pub serving: usize,
    /// Instances launching (booting).
    pub launching: usize,
    /// Worst join p99 of the simulators this second, ms (`None`: no join this second).
    pub join_p99_ms: Option<f64>,
    /// Open viewers the autoscaler predicted one horizon ahead (its last decision).
    pub predicted: f64,
    /// The autoscaler's headroom (unused share of the serving instances' targets).
    pub headroom: f64,
}

/// A scale action.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionRow {
    /// Seconds from the start.
    pub t: f64,
    /// `scale_out` or `scale_in`.
    pub action: String,
    /// Instances launched (scale-out) or drained (scale-in).
    pub count: u64,
    /// Why.
    pub reason: String,
    /// Capacity before (launching + serving).
    pub capacity: u64,
    /// Open viewers then.
    pub viewers: f64,
    /// Open viewers predicted one horizon ahead.
    pub predicted: f64,
    /// The look-ahead, seconds.
    pub horizon_secs: f64,
    /// Unused share of the serving instances' targets.
    pub headroom: f64,
    /// Unused share of the serving instances' hard capacity (`max_connections`).
    pub hard_headroom: f64,
}

/// One drain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrainRow {
    /// Seconds from the start.
    pub t: f64,
    /// The drained instance.
    pub id: String,
    /// Seconds until it was removed.
    pub took_secs: Option<f64>,
    /// The autoscaler's note (reconnect window).
    pub detail: String,
    /// Highest new connections per second (arrivals and moved viewers) of a receiving
    /// instance during the drain.
    pub receiver_peak_rate: f64,
}

/// Everything the run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figures {
    /// Connection attempts (successful or not).
    pub attempts: u64,
    /// Attempts that failed or were refused.
    pub failed: u64,
    /// Of all attempts, percent.
    pub failed_pct: f64,
    /// Failures by cause.
    pub failed_by: BTreeMap<String, u64>,
    /// `join`s sent.
    pub joins: u64,
    /// Viewers closed by a tracker without being told to reconnect first.
    pub dropped: u64,
    /// `reconnect`s followed (drains).
    pub reconnects: u64,
    /// Worst join p99 of any second, ms.
    pub join_p99_max_ms: f64,
    /// Worst connect (TCP + upgrade + welcome) p99 over the run, ms.
    pub connect_p99_ms: f64,
    /// Seconds from the climb's start to the first launch (`None`: none).
    pub first_launch_into_climb: Option<f64>,
    /// Lowest unused share of the serving instances' hard capacity during the surge, and when
    /// (seconds from the start).
    pub min_hard_headroom: (f64, f64),
    /// Most viewers at once.
    pub peak_viewers: f64,
    /// Most instances serving.
    pub peak_serving: usize,
    /// Instances the peak needed at the autoscaler's connections target.
    pub needed_at_target: usize,
    /// Instances the peak needed at `max_connections`.
    pub needed_at_capacity: usize,
    /// Drains that started between the climb's start and the event's end.
    pub scale_ins_within_surge: usize,
    /// Seconds from the event's end to the fleet at its minimum (`None`: not in time).
    pub back_to_min_secs: Option<f64>,
    /// The fleet's minimum.
    pub min_instances: usize,
    /// A receiving instance's limit of new connections per second (`targets.conn_rate`).
    pub receiver_limit: f64,
    /// Scale actions.
    pub actions: Vec<ActionRow>,
    /// Drains.
    pub drains: Vec<DrainRow>,
    /// The run second by second.
    pub seconds: Vec<Second>,
    /// Autoscaler events: (seconds from the start, kind, instance, detail).
    pub events: Vec<(f64, String, String, String)>,
    /// Each goal and whether it was met.
    pub goals: Vec<(String, bool)>,
    /// Problems of the run itself (a simulator without a report, ...).
    pub problems: Vec<String>,
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn sum_map(into: &mut BTreeMap<String, u64>, m: &Value) {
    for (k, v) in m.as_object().into_iter().flatten() {
        *into.entry(k.clone()).or_default() += u(v);
    }
}

/// The simulators' viewers and join p99 per second of the run.
fn merge_timelines(o: &Outcome, end: usize) -> (Vec<f64>, Vec<Option<f64>>) {
    let mut viewers = vec![0.0; end + 1];
    let mut p99: Vec<Option<f64>> = vec![None; end + 1];
    for sim in &o.sims {
        let Some(points) = sim.report.as_ref().and_then(|r| r["timeline"].as_array()) else {
            continue;
        };
        let points: Vec<(f64, f64, f64)> = points
            .iter()
            .filter_map(|p| {
                Some((
                    sim.started + p["t_s"].as_f64()?,
                    p["viewers"].as_f64().unwrap_or(0.0),
                    p["join_p99_ms"].as_f64().unwrap_or(0.0),
                ))
            })
            .collect();
        let Some(&(last_t, ..)) = points.last() else {
            continue;
        };
        let mut k = 0;
        let mut current = 0.0;
        for (s, slot) in viewers.iter_mut().enumerate() {
            let s = s as f64;
            while k < points.len() && points[k].0 <= s + 1.0 {
                current = points[k].1;
                if points[k].2 > 0.0 && points[k].0 > s {
                    let cell = &mut p99[s as usize];
                    *cell = Some(cell.map_or(points[k].2, |c: f64| c.max(points[k].2)));
                }
                k += 1;
            }
            if s >= sim.started && s <= last_t + 1.0 {
                *slot += current;
            }
        }
    }
    (viewers, p99)
}

/// The last sample at or before `t`.
fn sample_at(o: &Outcome, t: f64) -> Option<&Value> {
    o.samples
        .iter()
        .rev()
        .find(|(at, _)| *at <= t)
        .map(|(_, s)| s)
}

fn count(s: &Value, f: impl Fn(&Value) -> bool) -> usize {
    s["instances"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|i| f(i)).count())
}

/// Computes the figures of a run.
pub fn figures(sc: &Scenario, o: &Outcome) -> Figures {
    let mut problems = Vec::new();
    let (mut attempts, mut failed, mut joins, mut dropped, mut reconnects) = (0, 0, 0, 0, 0);
    let mut failed_by = BTreeMap::new();
    let mut closes = BTreeMap::new();
    let mut connect_p99_ms: f64 = 0.0;
    for sim in &o.sims {
        let Some(r) = &sim.report else {
            problems.push(format!("{} wrote no report", sim.name));
            continue;
        };
        let t = &r["total"];
        attempts += u(&t["connects"]) + u(&t["connect_failures"]);
        failed += u(&t["connect_failures"]);
        joins += u(&t["joins"]);
        reconnects += u(&t["reconnects"]);
        sum_map(&mut failed_by, &t["connect_failures_by"]);
        sum_map(&mut closes, &t["closes"]);
        connect_p99_ms = connect_p99_ms.max(t["connect"]["p99_ms"].as_f64().unwrap_or(0.0));
        for p in r["problems"].as_array().into_iter().flatten() {
            problems.push(format!("{}: {}", sim.name, p.as_str().unwrap_or("?")));
        }
    }
    dropped += closes.values().sum::<u64>();
    let last = o
        .samples
        .last()
        .map_or(sc.surge_end(), |s| s.0)
        .max(sc.surge_end());
    let end = last.ceil() as usize;
    let (viewers, p99) = merge_timelines(o, end);
    let final_status = o.samples.last().map(|s| &s.1);
    let targets = final_status
        .map(|s| s["targets"].clone())
        .unwrap_or(Value::Null);
    let target_conn = targets["connections"].as_f64().unwrap_or(0.0);
    let receiver_limit = targets["conn_rate"].as_f64().unwrap_or(0.0);
    let min_instances = final_status
        .and_then(|s| s["min_instances"].as_u64())
        .unwrap_or(1) as usize;
    let decision_at = |t: f64| {
        o.decisions
            .iter()
            .rev()
            .find(|(at, _)| at - o.t0 <= t)
            .map(|(_, d)| d)
    };
    let seconds: Vec<Second> = (0..=end)
        .map(|s| {
            let t = s as f64;
            let sample = sample_at(o, t);
            let d = decision_at(t);
            Second {
                t,
                rate: sc.rate_at(t),
                viewers: viewers[s],
                serving: sample.map_or(0, |x| {
                    count(x, |i| i["phase"] == "serving" && i["haproxy"] == "UP")
                }),
                launching: sample.map_or(0, |x| count(x, |i| i["phase"] == "launching")),
                join_p99_ms: p99[s],
                predicted: d
                    .and_then(|d| d["predicted"]["connections"].as_f64())
                    .unwrap_or(0.0),
                headroom: d.and_then(|d| d["headroom"].as_f64()).unwrap_or(0.0),
            }
        })
        .collect();
    let hard = |serving: usize, viewers: f64| {
        if serving == 0 {
            0.0
        } else {
            1.0 - viewers / (serving as f64 * f64::from(sc.max_connections))
        }
    };
    let actions: Vec<ActionRow> = o
        .decisions
        .iter()
        // From the start of the load (the launches of the minimum fleet came before).
        .filter(|(at, d)| d["action"]["kind"] != "hold" && *at >= o.t0)
        .map(|(at, d)| {
            let t = at - o.t0;
            let serving = seconds.get(t.max(0.0) as usize).map_or(0, |s| s.serving);
            let viewers = d["load"]["connections"].as_f64().unwrap_or(0.0);
            ActionRow {
                t,
                action: d["action"]["kind"].as_str().unwrap_or("?").to_string(),
                count: d["action"]["ids"]
                    .as_array()
                    .map_or_else(|| u(&d["action"]["count"]), |ids| ids.len() as u64),
                reason: d["reason"].as_str().unwrap_or("").to_string(),
                capacity: u(&d["capacity"]),
                viewers,
                predicted: d["predicted"]["connections"].as_f64().unwrap_or(0.0),
                horizon_secs: d["horizon_secs"].as_f64().unwrap_or(0.0),
                headroom: d["headroom"].as_f64().unwrap_or(0.0),
                hard_headroom: hard(serving, viewers),
            }
        })
        .collect();
    let events: Vec<(f64, String, String, String)> = o
        .events
        .iter()
        .map(|e| {
            (
                e["at"].as_f64().unwrap_or(0.0) - o.t0,
                e["kind"].as_str().unwrap_or("").to_string(),
                e["id"].as_str().unwrap_or("").to_string(),
                e["detail"].as_str().unwrap_or("").to_string(),
            )
        })
        .filter(|e| e.0 >= 0.0)
        .collect();
    let drains: Vec<DrainRow> = events
        .iter()
        .filter(|e| e.1 == "drain")
        .map(|(t, _, id, detail)| {
            let removed = events
                .iter()
                .find(|e| e.0 >= *t && e.2 == *id && (e.1 == "removed" || e.1 == "gone"))
                .map(|e| e.0);
            let until = removed.unwrap_or(t + 60.0) + 2.0;
            let receiver_peak_rate = o
                .samples
                .iter()
                .filter(|(at, _)| *at >= *t && *at <= until)
                .flat_map(|(_, s)| s["instances"].as_array().cloned().unwrap_or_default())
                .filter(|i| i["phase"] == "serving" && i["id"] != id.as_str())
                .map(|i| {
                    i["signals"]["conn_rate"].as_f64().unwrap_or(0.0)
                        + i["signals"]["moved_rate"].as_f64().unwrap_or(0.0)
                })
                .fold(0.0, f64::max);
            DrainRow {
                t: *t,
                id: id.clone(),
                took_secs: removed.map(|r| r - t),
                detail: detail.clone(),
                receiver_peak_rate,
            }
        })
        .collect();
    let surge = sc.climb_start()..=sc.surge_end();
    let first_launch_into_climb = events
        .iter()
        .find(|e| e.1 == "launch" && e.0 >= sc.climb_start())
        .map(|e| e.0 - sc.climb_start());
    let min_hard_headroom = seconds
        .iter()
        .filter(|s| surge.contains(&s.t) && s.serving > 0)
        .map(|s| (hard(s.serving, s.viewers), s.t))
        .fold((1.0, 0.0), |a, b| if b.0 < a.0 { b } else { a });
    let scale_ins_within_surge = drains.iter().filter(|d| surge.contains(&d.t)).count();
    let peak_viewers = seconds.iter().map(|s| s.viewers).fold(0.0, f64::max);
    let peak_serving = seconds.iter().map(|s| s.serving).max().unwrap_or(0);
    let need = |per: f64| {
        if per > 0.0 {
            ((peak_viewers / per).ceil() as usize).max(min_instances)
        } else {
            min_instances
        }
    };
    let join_p99_max_ms = seconds
        .iter()
        .filter_map(|s| s.join_p99_ms)
        .fold(0.0, f64::max);
    let failed_pct = if attempts == 0 {
        0.0
    } else {
        failed as f64 * 100.0 / attempts as f64
    };
    let back_to_min_secs = o.back_to_min.map(|t| t - sc.surge_end());
    let receivers_peak = drains
        .iter()
        .map(|d| d.receiver_peak_rate)
        .fold(0.0, f64::max);
    let goals = vec![
        (
            format!("failed or refused joins <= {GOAL_FAILED_PCT} %"),
            failed_pct <= GOAL_FAILED_PCT && attempts > 0,
        ),
        (
            format!("join p99 <= {GOAL_JOIN_P99_MS} ms throughout"),
            join_p99_max_ms <= GOAL_JOIN_P99_MS,
        ),
        (
            "no scale-in within the surge".to_string(),
            scale_ins_within_surge == 0,
        ),
        (
            format!("back to the minimum ({min_instances}) after the surge"),
            back_to_min_secs.is_some(),
        ),
        ("nobody dropped".to_string(), dropped == 0),
        (
            "receiving instances under their limit during drains".to_string(),
            receivers_peak <= receiver_limit || drains.is_empty(),
        ),
    ];
    Figures {
        attempts,
        failed,
        failed_pct,
        failed_by,
        joins,
        dropped,
        reconnects,
        join_p99_max_ms,
        connect_p99_ms,
        first_launch_into_climb,
        min_hard_headroom,
        peak_viewers,
        peak_serving,
        needed_at_target: need(target_conn),
        needed_at_capacity: need(f64::from(sc.max_connections)),
        scale_ins_within_surge,
        back_to_min_secs,
        min_instances,
        receiver_limit,
        actions,
        drains,
        seconds,
        events,
        goals,
        problems,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::scenario::SimRun;

    fn scenario() -> Scenario {
        Scenario {
            front: String::new(),
            status: SocketAddr::from(([127, 0, 0, 1], 1)),
            simulator: PathBuf::new(),
            out: PathBuf::new(),
            base_rate: 2.0,
            factor: 3,
            baseline_secs: 10.0,
            climb_secs: 10.0,
            plateau_secs: 10.0,
            watch_min_secs: 5.0,
            watch_max_secs: 5.0,
            videos: 1,
            max_connections: 100,
            settle_timeout_secs: 60.0,
        }
    }

    fn sim(name: &str, started: f64, connects: u64, failures: u64, closes: u64) -> SimRun {
        let timeline: Vec<Value> = (1..=20)
            .map(|t| json!({"t_s": f64::from(t), "viewers": 60.0, "join_p99_ms": 3.0}))
            .collect();
        SimRun {
            name: name.into(),
            started,
            report: Some(json!({
                "total": {
                    "connects": connects, "connect_failures": failures, "joins": connects,
                    "reconnects": 4, "connect_failures_by": {"http 503": failures},
                    "closes": {"1012": closes}, "connect": {"p99_ms": 9.0}
                },
                "timeline": timeline,
                "problems": []
            })),
        }
    }

    fn status(serving: usize) -> Value {
        let instances: Vec<Value> = (0..serving)
            .map(|k| {
                json!({"id": format!("i{k}"), "phase": "serving", "haproxy": "UP",
                            "signals": {"conn_rate": 3.0, "moved_rate": 1.0}})
            })
            .collect();
        json!({"min_instances": 1, "targets": {"connections": 50.0, "conn_rate": 10.0},
               "instances": instances})
    }

    #[test]
    fn figures_of_a_run() {
        let sc = scenario();
        let t0 = 1_000.0;
        let outcome = Outcome {
            t0,
            sims: vec![
                sim("baseline", 0.0, 995, 5, 0),
                sim("step-0", 10.0, 1000, 0, 1),
            ],
            samples: (0..=40)
                .map(|t| (f64::from(t), status(if t < 15 { 2 } else { 3 })))
                .collect(),
            decisions: vec![(
                t0 + 12.0,
                json!({"action": {"kind": "scale_out", "count": 1}, "reason": "load rising",
                       "capacity": 2, "load": {"connections": 120.0},
                       "predicted": {"connections": 160.0}, "horizon_secs": 5.0,
                       "headroom": -0.2}),
            )],
            events: vec![
                json!({"at": t0 + 12.0, "kind": "launch", "id": "i2", "detail": "load rising"}),
                json!({"at": t0 + 35.0, "kind": "drain", "id": "i2", "detail": "window 1000 ms"}),
                json!({"at": t0 + 36.0, "kind": "removed", "id": "i2", "detail": "drained"}),
            ],
            back_to_min: Some(40.0),
        };
        let f = figures(&sc, &outcome);
        assert_eq!(
            (f.attempts, f.failed, f.dropped, f.reconnects),
            (2_000, 5, 1, 8)
        );
        assert!((f.failed_pct - 0.25).abs() < 1e-9);
        assert_eq!(f.first_launch_into_climb, Some(2.0));
        assert_eq!(f.scale_ins_within_surge, 0);
        assert_eq!(f.back_to_min_secs, Some(10.0));
        // 120 viewers on two instances of 100 between the step and the third instance.
        assert!(
            (f.min_hard_headroom.0 - 0.4).abs() < 1e-9,
            "{:?}",
            f.min_hard_headroom
        );
        assert_eq!(f.peak_viewers, 120.0);
        assert_eq!((f.needed_at_target, f.needed_at_capacity), (3, 2));
        assert_eq!(f.drains[0].took_secs, Some(1.0));
        assert_eq!(f.drains[0].receiver_peak_rate, 4.0);
        let met: Vec<bool> = f.goals.iter().map(|g| g.1).collect();
        // Joins and drains within their goals; one viewer dropped.
        assert_eq!(met, vec![true, true, true, true, false, true]);
    }
}
