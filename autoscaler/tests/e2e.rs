//! End to end with the local provider: real haproxy, redis, trackers and simulator load.
//! Short windows and fast checks in the test config keep each test to tens of seconds.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::collections::BTreeSet;
use std::time::Duration;

use autoscaler::config::HaproxyConfig;
use autoscaler::haproxy::{Haproxy as Runtime, ServerStat};
use testkit::autoscaler::{Autoscaler, fleet_config, haproxy_options};
use testkit::haproxy::Haproxy;
use testkit::process::{Process, pid_alive};
use testkit::redis::RedisServer;
use testkit::simulator;
use testkit::{LONG_DEADLINE, eventually_blocking};

/// The backend's servers as the autoscaler's own client reads them.
fn servers(h: &Haproxy) -> Vec<ServerStat> {
    let rt = Runtime::new(&HaproxyConfig {
        socket: h.socket().to_path_buf(),
        ..HaproxyConfig::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(rt.show_stat()).unwrap_or_default()
}

fn up(h: &Haproxy) -> Vec<ServerStat> {
    servers(h)
        .into_iter()
        .filter(|s| s.status == "UP")
        .collect()
}

/// `simulator run` against the front end, its JSON report written to `json`.
fn simulate(h: &Haproxy, json: &std::path::Path, args: &[&str]) -> Process {
    let url = h.ws_url();
    let json = json.to_str().expect("a UTF-8 path");
    let mut all = vec![
        "run", "--url", &url, "--quiet", "--videos", "20", "--json", json,
    ];
    all.extend_from_slice(args);
    simulator::spawn(&all)
}

#[test]
fn load_scales_out_and_back_in_without_dropping_viewers() {
    let redis = RedisServer::start();
    let haproxy = Haproxy::start(&[], &haproxy_options());
    // Only new connections/sec count: 10 per instance.
    let autoscaler = Autoscaler::start(|state| {
        fleet_config(
            &haproxy,
            &redis,
            state,
            r#"
[targets]
conn_rate = 10.0
msg_rate = 0.0
connections = 0.0

[scaling]
min_instances = 1
max_instances = 3
max_surge = 2
warmup_secs = 1
scale_in_window_secs = 6
drain_deadline_secs = 20
launch_timeout_secs = 20
max_reconnect_window_secs = 3
"#,
        )
    });

    // A fleet of one.
    eventually_blocking("the first instance UP in haproxy", LONG_DEADLINE, || {
        (up(&haproxy).len() == 1).then_some(())
    });
    let first = servers(&haproxy)[0].name.clone();

    let tmp = testkit::process::temp_dir("sim");
    let dir = tmp.path();
    // Steady viewers that stay through the whole scale-in: they must all get `reconnect`.
    let steady_json = dir.join("steady.json");
    let mut steady = simulate(
        &haproxy,
        &steady_json,
        &[
            "--rate",
            "2",
            "--duration",
            "90s",
            "--watch-min",
            "120s",
            "--watch-max",
            "120s",
            "--grace",
            "1s",
        ],
    );
    // A burst: 30 new viewers a second for 12 s, each watching 2-4 s.
    let burst_json = dir.join("burst.json");
    let mut burst = simulate(
        &haproxy,
        &burst_json,
        &[
            "--rate",
            "30",
            "--duration",
            "12s",
            "--watch-min",
            "2s",
            "--watch-max",
            "4s",
        ],
    );

    // Scale-out: at least two instances, and a new one takes viewers.
    let grown = eventually_blocking("a second instance serving viewers", LONG_DEADLINE, || {
        let s = servers(&haproxy);
        (s.len() >= 2 && s.iter().any(|x| x.name != first && x.total > 0)).then_some(s)
    });
    let grown: BTreeSet<String> = grown.into_iter().map(|s| s.name).collect();
    // Remember every tracker process the fleet had, to see them exit.
    let pids: Vec<(String, u32)> =
        eventually_blocking("pids of the grown fleet", LONG_DEADLINE, || {
            let r = autoscaler.records();
            (r.len() >= 2 && r.iter().all(|(_, p, _)| p.is_some())).then(|| {
                r.into_iter()
                    .map(|(id, p, _)| (id, p.unwrap_or(0)))
                    .collect()
            })
        });

    eventually_blocking("the burst to end", LONG_DEADLINE, || burst.try_exit());

    // Scale-in back to the minimum while the steady viewers stay.
    let end = eventually_blocking(
        "the fleet back to one server",
        Duration::from_secs(60),
        || {
            let s = servers(&haproxy);
            (s.len() == 1 && autoscaler.records().len() == 1).then_some(s)
        },
    );
    // The drained viewers' reconnects are moves, not arrivals: no new launch follows.
    let ticks = || {
        autoscaler
            .status()
            .and_then(|s| s["ticks"].as_u64())
            .unwrap_or(0)
    };
    let at = ticks();
    eventually_blocking("four more ticks", LONG_DEADLINE, || {
        (ticks() >= at + 4).then_some(())
    });
    assert_eq!(
        autoscaler.records().len(),
        1,
        "relaunched after the scale-in"
    );
    let kept = &end[0].name;
    for (id, pid) in &pids {
        if format!("as-{id}") != *kept {
            assert!(
                !pid_alive(*pid),
                "drained tracker {id} (pid {pid}) still runs"
            );
        }
    }
    assert!(
        grown.len() >= 2,
        "grew to {grown:?} only (log: {})",
        autoscaler.log()
    );

    // The story is over: the steady viewers leave (Ctrl-C makes the simulator wind down and
    // write its report).
    steady.signal("INT");
    let status = eventually_blocking(
        "the steady simulator to end",
        Duration::from_secs(60),
        || steady.try_exit(),
    );
    assert!(status.success(), "steady simulator failed");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&steady_json).unwrap()).unwrap();
    let total = &report["total"];
    let closes: u64 = total["closes"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    let reconnects = total["reconnects"].as_u64().unwrap_or(0);
    eprintln!(
        "steady viewers: {} connects, {} reconnects, closes by tracker {:?}, failures {:?}",
        total["connects"], reconnects, total["closes"], total["connect_failures_by"]
    );
    assert!(reconnects > 0, "no viewer was told to reconnect: {total}");
    assert_eq!(
        closes, 0,
        "viewers dropped without reconnect: {}",
        total["closes"]
    );
    assert_eq!(
        total["connect_failures"].as_u64(),
        Some(0),
        "{}",
        total["connect_failures_by"]
    );
}

#[test]
fn restarted_autoscaler_launches_no_duplicate_and_readds_after_reload() {
    let redis = RedisServer::start();
    let mut haproxy = Haproxy::start(&[], &haproxy_options());
    let mut autoscaler = Autoscaler::start(|state| {
        fleet_config(
            &haproxy,
            &redis,
            state,
            r#"
[scaling]
min_instances = 2
max_instances = 4
max_surge = 2
warmup_secs = 1
scale_in_window_secs = 30
launch_timeout_secs = 20
"#,
        )
    });

    // Killed as soon as its first launch is recorded, before the instance is ready.
    eventually_blocking("a first launch recorded", LONG_DEADLINE, || {
        (!autoscaler.records().is_empty()).then_some(())
    });
    autoscaler.kill();
    let before = autoscaler.records();
    assert!(before.len() <= 2, "{before:?}");
    autoscaler.launch();

    let ticks = |a: &Autoscaler| a.status().and_then(|s| s["ticks"].as_u64()).unwrap_or(0);
    eventually_blocking("two instances UP", LONG_DEADLINE, || {
        (up(&haproxy).len() == 2).then_some(())
    });
    let at = ticks(&autoscaler);
    eventually_blocking("five more ticks", LONG_DEADLINE, || {
        (ticks(&autoscaler) >= at + 5).then_some(())
    });
    let records = autoscaler.records();
    assert_eq!(records.len(), 2, "duplicate launch: {records:?}");
    // Adopted: every instance whose process had started before the crash.
    for (id, _, _) in before.iter().filter(|(_, pid, _)| pid.is_some()) {
        assert!(
            records.iter().any(|(r, _, _)| r == id),
            "{id} launched before the crash was not adopted: {records:?}"
        );
    }
    assert_eq!(servers(&haproxy).len(), 2);

    // A reload forgets dynamic servers: the next ticks add them again.
    haproxy.restart();
    eventually_blocking("servers re-added after the reload", LONG_DEADLINE, || {
        (up(&haproxy).len() == 2).then_some(())
    });
    assert_eq!(autoscaler.records().len(), 2);
}

#[test]
fn dry_run_decides_but_changes_nothing() {
    let redis = RedisServer::start();
    let haproxy = Haproxy::start(&[], &haproxy_options());
    let autoscaler =
        Autoscaler::start(|state| fleet_config(&haproxy, &redis, state, "dry_run = true"));
    // An empty fleet below its minimum: the decision is a launch, logged only.
    let status = eventually_blocking("a scale-out decision", LONG_DEADLINE, || {
        let s = autoscaler.status()?;
        let last = s["decisions"].as_array()?.last()?.clone();
        (last[1]["action"]["kind"] == "scale_out" && s["ticks"].as_u64()? >= 3).then_some(s)
    });
    assert_eq!(status["dry_run"], serde_json::Value::Bool(true));
    assert!(
        autoscaler.records().is_empty(),
        "{:?}",
        autoscaler.records()
    );
    assert!(servers(&haproxy).is_empty());
    let page = autoscaler.get("/").unwrap();
    assert!(
        page.contains("(dry run)") && page.contains("<svg"),
        "{page}"
    );
    let metrics = autoscaler.get("/metrics").unwrap();
    assert!(metrics.contains("autoscaler_launches_total 0"), "{metrics}");
}
