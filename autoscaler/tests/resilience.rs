//! The autoscaler is not fooled: a junk flood doesn't move its decision, a dead tracker on a
//! live instance is replaced (a new instance launched first, then the dead one terminated),
//! and it won't run without the trackers' admin token unless it only decides (`--dry-run`).
//! Real haproxy, redis, trackers and WebSocket clients.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use autoscaler::config::HaproxyConfig;
use autoscaler::haproxy::{Haproxy as Runtime, ServerStat};
use futures_util::SinkExt;
use testkit::autoscaler::{Autoscaler, fleet_config, haproxy_options};
use testkit::haproxy::Haproxy;
use testkit::process::{Process, free_addr, pid_alive, temp_dir};
use testkit::redis::RedisServer;
use testkit::{LONG_DEADLINE, eventually_blocking};
use tokio_tungstenite::tungstenite::Message;

fn up(h: &Haproxy) -> Vec<ServerStat> {
    let rt = Runtime::new(&HaproxyConfig {
        socket: h.socket().to_path_buf(),
        ..HaproxyConfig::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(rt.show_stat())
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s.status == "UP")
        .collect()
}

/// The admin address of instance `id` from the local provider's state file.
fn admin_of(a: &Autoscaler, id: &str) -> SocketAddr {
    let path = a.state_dir().join(format!("{id}.json"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["admin"].as_str().unwrap().parse().unwrap()
}

/// A tracker metric summed over its labels.
fn metric(admin: SocketAddr, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn ticks(a: &Autoscaler) -> u64 {
    a.status().and_then(|s| s["ticks"].as_u64()).unwrap_or(0)
}

/// Junk through the front end for `secs`: sockets that never join send malformed frames,
/// signals in swarms they never joined and far more than their rate; others connect and leave
/// at once.
async fn junk_flood(url: String, secs: u64) {
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for k in 0..40 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < end {
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if k % 4 == 0 {
                    // Churn: an upgrade that never becomes a viewer.
                    let _ = ws.close(None).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                for i in 0..400 {
                    let frame = match i % 3 {
                        0 => "not json".to_string(),
                        1 => r#"{"t":"offer","swarm":"x","to":"Gis8TQAAAACfOsDS5Bt3hQ","sid":"s","m":"v=0"}"#
                            .to_string(),
                        _ => r#"{"t":"nonsense"}"#.to_string(),
                    };
                    if ws.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = ws.close(None).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[test]
fn a_junk_flood_does_not_move_the_decision() {
    let redis = RedisServer::start();
    let haproxy = Haproxy::start(&[], &haproxy_options());
    // Small targets: the old signals (every upgrade, every frame) would have asked for many.
    let extra = r#"
[targets]
conn_rate = 5.0
msg_rate = 50.0
connections = 20.0

[scaling]
min_instances = 1
max_instances = 5
warmup_secs = 1
trend_window_secs = 5
"#;
    let mut autoscaler = Autoscaler::start(|state| fleet_config(&haproxy, &redis, state, extra));
    eventually_blocking("one instance UP", LONG_DEADLINE, || {
        (up(&haproxy).len() == 1).then_some(())
    });
    let (id, _, _) = autoscaler.records().remove(0);
    let admin = admin_of(&autoscaler, &id);
    // From now on it only decides.
    let config = std::fs::read_to_string(autoscaler.config_path()).unwrap();
    std::fs::write(
        autoscaler.config_path(),
        format!("dry_run = true\n{config}"),
    )
    .unwrap();
    autoscaler.kill();
    autoscaler.launch();
    let at = ticks(&autoscaler);
    eventually_blocking("ticks in dry run", LONG_DEADLINE, || {
        (ticks(&autoscaler) >= at + 4).then_some(())
    });
    let opened = metric(admin, "tracker_connections_opened_total");
    let invalid = metric(admin, "tracker_messages_received_total");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(junk_flood(haproxy.ws_url(), 4));

    // The flood happened: hundreds of upgrades and thousands of frames reached the tracker.
    let opened = metric(admin, "tracker_connections_opened_total") - opened;
    let received = metric(admin, "tracker_messages_received_total") - invalid;
    eprintln!("junk flood: {opened} upgrades, {received} frames in 4 s");
    assert!(opened >= 40.0, "only {opened} upgrades");
    assert!(received >= 2_000.0, "only {received} frames");
    // Every decision through it: hold at one instance, no load seen.
    let after = ticks(&autoscaler);
    let status = eventually_blocking("ticks after the flood", LONG_DEADLINE, || {
        let s = autoscaler.status()?;
        (s["ticks"].as_u64()? >= after + 2).then_some(s)
    });
    let during: Vec<&serde_json::Value> = status["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d[0].as_f64().is_some())
        .map(|d| &d[1])
        .collect();
    assert!(during.len() >= 4, "{status}");
    for d in &during {
        assert_eq!(d["action"]["kind"], "hold", "{d}");
        assert_eq!(d["recommendation"], 1, "{d}");
        assert_eq!(d["load"]["conn_rate"], 0.0, "{d}");
        assert_eq!(d["load"]["msg_rate"], 0.0, "{d}");
        assert_eq!(d["load"]["connections"], 0.0, "{d}");
    }
    assert_eq!(autoscaler.records().len(), 1);
}

/// The tracker process of a local instance (the machine's child).
fn tracker_of(machine: u32) -> u32 {
    eventually_blocking("the tracker process", LONG_DEADLINE, || {
        let children =
            std::fs::read_to_string(format!("/proc/{machine}/task/{machine}/children")).ok()?;
        children.split_whitespace().find_map(|p| {
            let pid: u32 = p.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains("--admin-listen")
                .then_some(pid)
        })
    })
}

#[test]
fn a_dead_tracker_on_a_live_instance_is_replaced_launch_first() {
    let redis = RedisServer::start();
    let haproxy = Haproxy::start(&[], &haproxy_options());
    let autoscaler = Autoscaler::start(|state| {
        fleet_config(
            &haproxy,
            &redis,
            state,
            r#"
[scaling]
min_instances = 2
max_instances = 4
warmup_secs = 1
unhealthy_polls = 3
launch_timeout_secs = 20
"#,
        )
    });
    let first = eventually_blocking("two instances UP", LONG_DEADLINE, || {
        let r = autoscaler.records();
        (up(&haproxy).len() == 2 && r.iter().all(|(_, p, _)| p.is_some())).then_some(r)
    });
    let (dead_id, machine, _) = first[0].clone();
    let machine = machine.unwrap();
    let tracker = tracker_of(machine);
    let _ = Command::new("kill")
        .args(["-KILL", &tracker.to_string()])
        .status();

    // The machine still runs: only the tracker is gone, as a crashed process on a live EC2
    // instance. It is replaced: a third instance, then the dead one terminated.
    eventually_blocking("the dead instance replaced", LONG_DEADLINE, || {
        let r = autoscaler.records();
        (r.len() == 2 && !r.iter().any(|(id, _, _)| *id == dead_id) && up(&haproxy).len() == 2)
            .then_some(())
    });
    assert!(!pid_alive(machine), "the replaced machine still runs");
    let status = autoscaler.status().unwrap();
    let events = status["events"].as_array().unwrap();
    let at = |kind: &str, id: Option<&str>| {
        events
            .iter()
            .find(|e| e["kind"] == kind && id.is_none_or(|id| e["id"] == id))
            .and_then(|e| e["at"].as_f64())
    };
    let replaced = at("replaced", Some(&dead_id)).expect("a replaced event");
    let launched: Vec<f64> = events
        .iter()
        .filter(|e| e["kind"] == "launch" && e["id"] != dead_id.as_str())
        .filter_map(|e| e["at"].as_f64())
        .collect();
    assert!(
        launched.iter().any(|&l| l <= replaced),
        "terminated before its replacement launched: {events:?}"
    );
    let metrics = autoscaler.get("/metrics").unwrap();
    assert!(
        metrics.contains("autoscaler_replacements_total 1"),
        "{metrics}"
    );
}

#[test]
fn no_admin_token_no_start_unless_dry_run() {
    let tmp = temp_dir("token");
    let dir = tmp.path();
    let config = dir.join("autoscaler.toml");
    std::fs::write(
        &config,
        format!(
            "[local]\nstate_dir = \"{}\"\n[haproxy]\nsocket = \"{}\"\n",
            dir.join("state").display(),
            dir.join("none.sock").display()
        ),
    )
    .unwrap();
    let run = |dry_run: bool| {
        let status = free_addr();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoscaler"));
        cmd.arg("--config")
            .arg(&config)
            .arg("--status-listen")
            .arg(status.to_string())
            .env_remove("TRACKER_ADMIN_TOKEN")
            .env_remove("AUTOSCALER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if dry_run {
            // Nobody reads it: a full pipe would block the daemon.
            cmd.arg("--dry-run").stderr(Stdio::null());
        } else {
            cmd.stderr(Stdio::piped());
        }
        (cmd, status)
    };
    let (mut refused, _) = run(false);
    let out = refused.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TRACKER_ADMIN_TOKEN"), "{err}");

    let (mut cmd, status) = run(true);
    let mut proc = Process::spawn("autoscaler --dry-run", &mut cmd);
    eventually_blocking("the dry run answering", LONG_DEADLINE, || {
        std::net::TcpStream::connect(status).ok().map(|_| ())
    });
    assert!(proc.is_running());
    proc.kill();
}
