//! The policy as tables of cases.

use super::*;

fn scaling() -> ScalingConfig {
    ScalingConfig {
        min_instances: 1,
        max_instances: 6,
        tolerance: 0.1,
        scale_in_window_secs: 60,
        max_surge: 2,
        warmup_secs: 10,
        boot_estimate_secs: 60,
        trend_window_secs: 30,
        unhealthy_polls: 3,
        max_reconnect_window_secs: 20,
        drain_deadline_secs: 30,
        launch_timeout_secs: 60,
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
            moved_rate: 0.0,
        }),
        healthy: true,
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
    growth: Growth,
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
        growth: Growth::default(),
        expect,
    }
}

fn scale_in(ids: &[&str], reconnect_window_ms: u64) -> Action {
    Action::ScaleIn {
        ids: ids.iter().map(|id| id.to_string()).collect(),
        reconnect_window_ms,
    }
}

const HORIZON: Duration = Duration::from_secs(60);

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
            // 10 viewers move to `a`, which takes 60 - 12 a second: the 1 s floor.
            scale_in(&["b"], 1_000),
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
            "warm-up: a new instance blocks scale-in",
            vec![
                warm("a", 10.0),
                with(warm("b", 10.0), |i| {
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
        case(
            "an unhealthy instance is no capacity: a replacement is launched",
            vec![
                warm("a", 150.0),
                with(warm("b", 0.0), |i| {
                    i.healthy = false;
                    i.signals = None;
                }),
            ],
            (120, 2),
            out(1),
        ),
        case(
            "an unhealthy instance blocks scale-in until it is gone",
            vec![
                warm("a", 10.0),
                warm("b", 10.0),
                with(warm("c", 0.0), |i| {
                    i.healthy = false;
                    i.signals = None;
                }),
            ],
            (120, 1),
            Action::Hold,
        ),
        case(
            "a draining instance's viewers are load for the others",
            vec![
                warm("a", 80.0),
                with(warm("b", 0.0), |i| {
                    i.phase = Phase::Draining;
                    i.signals = Some(Signals {
                        connections: 1_500.0,
                        ..Signals::default()
                    });
                }),
            ],
            (120, 1),
            out(1),
        ),
        Case {
            // 150 viewers growing by 20/s, arrivals climbing: 1,530 a minute from now.
            growth: Growth {
                viewers_per_sec: 20.0,
                conn_rate_per_sec: 0.1,
                msg_rate_per_sec: 0.0,
            },
            ..case(
                "look-ahead: the load fits now but not one boot time ahead",
                vec![with(warm("a", 40.0), |i| {
                    if let Some(s) = i.signals.as_mut() {
                        s.connections = 150.0;
                    }
                })],
                (120, 1),
                out(1),
            )
        },
        Case {
            growth: Growth {
                viewers_per_sec: 0.5,
                conn_rate_per_sec: 0.0,
                msg_rate_per_sec: 0.0,
            },
            ..case(
                "a load that grows slowly on too many instances: scale in all the same",
                vec![warm("a", 10.0), warm("b", 10.0)],
                (120, 1),
                scale_in(&["b"], 1_000),
            )
        },
        Case {
            growth: Growth {
                viewers_per_sec: 20.0,
                conn_rate_per_sec: 0.0,
                msg_rate_per_sec: 0.0,
            },
            ..case(
                "a load that grows into the capacity within the horizon keeps it",
                vec![warm("a", 10.0), warm("b", 10.0)],
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
        let d = decide(
            &c.instances,
            &h,
            &c.growth,
            HORIZON,
            now,
            &c.scaling,
            &targets(),
        );
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
        &Growth::default(),
        HORIZON,
        now,
        &s,
        &targets(),
    );
    assert_eq!(d.action, scale_in(&["b"], 1_000));
}

#[test]
fn highest_signal_wins() {
    let now = Instant::now() + Duration::from_secs(3_600);
    let mut a = warm("a", 50.0);
    a.signals = Some(Signals {
        conn_rate: 50.0,
        msg_rate: 3_000.0,
        connections: 10.0,
        moved_rate: 0.0,
    });
    let d = decide(
        &[a],
        &history(now, 120, 1),
        &Growth::default(),
        HORIZON,
        now,
        &scaling(),
        &targets(),
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

#[test]
fn reasons_and_headroom() {
    let now = Instant::now() + Duration::from_secs(3_600);
    let growing = Growth {
        viewers_per_sec: 20.0,
        ..Growth::default()
    };
    let d = decide(
        &[warm("a", 50.0)],
        &history(now, 120, 1),
        &growing,
        HORIZON,
        now,
        &scaling(),
        &targets(),
    );
    assert_eq!(d.reason, "load rising: forecast above target");
    assert!((d.headroom - 0.5).abs() < 1e-9, "{d:?}");
    assert!((d.predicted.connections - 1_250.0).abs() < 1e-9, "{d:?}");
    assert_eq!(d.horizon_secs, 60.0);
}

#[test]
fn reconnect_window_is_sized_to_the_receivers() {
    let t = targets();
    let max = Duration::from_secs(20);
    let busy = Signals {
        conn_rate: 20.0,
        ..Signals::default()
    };
    // 400 viewers, two receivers with 60 % of 100/s less 20/s spare each: 5 s.
    assert_eq!(
        reconnect_window(400.0, &[busy, busy], &t, max),
        Duration::from_secs(5)
    );
    // Receivers above their target still take a quarter of it: 400 / 50 = 8 s.
    let over = Signals {
        conn_rate: 150.0,
        ..Signals::default()
    };
    assert_eq!(
        reconnect_window(400.0, &[over, over], &t, max),
        Duration::from_secs(8)
    );
    // Never beyond the maximum, never under a second.
    assert_eq!(reconnect_window(1e6, &[busy], &t, max), max);
    assert_eq!(
        reconnect_window(3.0, &[busy], &t, max),
        Duration::from_secs(1)
    );
    assert_eq!(reconnect_window(3.0, &[], &t, max), max);
}

#[test]
fn scale_in_drains_every_excess_instance_at_once_as_far_as_the_others_take_them() {
    let now = Instant::now() + Duration::from_secs(3_600);
    let quiet = |id: &str, viewers: u64| {
        with(warm(id, 5.0), |i| {
            i.sessions = viewers;
            if let Some(s) = i.signals.as_mut() {
                s.connections = viewers as f64;
            }
        })
    };
    let fleet = vec![
        quiet("a", 50),
        quiet("b", 10),
        quiet("c", 20),
        quiet("d", 25),
    ];
    // One instance is enough: the three emptiest go, their 55 viewers onto `a` (55/s).
    let d = decide(
        &fleet,
        &history(now, 120, 1),
        &Growth::default(),
        HORIZON,
        now,
        &scaling(),
        &targets(),
    );
    assert_eq!(d.action, scale_in(&["b", "c", "d"], 1_000), "{d:?}");
    // With a 1 s window at most, `a` takes 55 viewers a second: b and c (30) fit, d not.
    let mut s = scaling();
    s.max_reconnect_window_secs = 1;
    let many = vec![
        quiet("a", 50),
        quiet("b", 10),
        quiet("c", 20),
        quiet("d", 60),
    ];
    let d = decide(
        &many,
        &history(now, 120, 1),
        &Growth::default(),
        HORIZON,
        now,
        &s,
        &targets(),
    );
    assert_eq!(d.action, scale_in(&["b", "c"], 1_000), "{d:?}");
}
