//! The flash crowd with short times: instances that take 3 s to boot and hold 45 viewers each,
//! arrivals climbing fivefold in 12 s through a real haproxy, the real autoscaler and
//! `autoscaler-surge` (the driver `scripts/demo --scenario surge` runs with a 60 s boot). The
//! test checks what the autoscaler does, not how fast: the fleet grows ahead of the load, no
//! scale-in while the event lasts, back to the minimum after it without dropping anyone, and
//! the report prints its figures.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::process::{Command, Stdio};

use testkit::autoscaler::{Autoscaler, fleet_config, haproxy_options};
use testkit::haproxy::Haproxy;
use testkit::process::{temp_dir, workspace_bin};
use testkit::redis::RedisServer;

#[test]
fn a_flash_crowd_is_met_ahead_and_the_fleet_returns_to_its_minimum() {
    let redis = RedisServer::start();
    let haproxy = Haproxy::start(&[], &haproxy_options());
    let autoscaler = Autoscaler::start(|state| {
        fleet_config(
            &haproxy,
            &redis,
            state,
            r#"
[targets]
connections = 30.0
conn_rate = 20.0
msg_rate = 0.0

[scaling]
min_instances = 2
max_instances = 6
max_surge = 4
warmup_secs = 1
scale_in_window_secs = 15
boot_estimate_secs = 3
trend_window_secs = 8
max_reconnect_window_secs = 3
drain_deadline_secs = 20
launch_timeout_secs = 30
"#,
        )
        .replace(
            "[local.env]",
            "boot_delay_secs = 3\n\n[local.env]\nTRACKER__LIMITS__MAX_CONNECTIONS = \"45\"",
        )
    });
    let tmp = temp_dir("surge");
    let out = tmp.path();
    let run = Command::new(env!("CARGO_BIN_EXE_autoscaler-surge"))
        .args(["--front", &haproxy.ws_url()])
        .args(["--status", &autoscaler.status.to_string()])
        .arg("--simulator")
        .arg(workspace_bin("simulator"))
        .arg("--out")
        .arg(out)
        .args(["--base-rate", "2", "--factor", "5"])
        .args([
            "--baseline-secs",
            "5",
            "--climb-secs",
            "12",
            "--plateau-secs",
            "10",
        ])
        .args([
            "--watch-min-secs",
            "8",
            "--watch-max-secs",
            "16",
            "--videos",
            "10",
        ])
        .args(["--max-connections", "45", "--settle-timeout-secs", "90"])
        .stdin(Stdio::null())
        .output()
        .expect("run autoscaler-surge");
    let text = String::from_utf8_lossy(&run.stdout);
    eprintln!("{text}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "autoscaler-surge failed");
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("surge.json")).unwrap()).unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    };
    let failed = line("failed or refused joins: ").expect("the failed joins line");
    assert!(failed.ends_with(" %"), "{failed}");
    assert_eq!(
        line("viewers dropped without reconnect: ").as_deref(),
        Some("viewers dropped without reconnect: 0"),
        "a viewer was dropped"
    );
    // Ahead of the load: the fleet grew past its minimum while the event lasted.
    assert!(
        figures["peak_serving"].as_u64().unwrap() >= 3,
        "never grew: {}",
        autoscaler.log()
    );
    assert_eq!(
        figures["scale_ins_within_surge"], 0,
        "scaled in during the surge"
    );
    assert!(
        figures["back_to_min_secs"].is_number(),
        "not back to the minimum: {}",
        autoscaler.log()
    );
    assert!(figures["attempts"].as_u64().unwrap() > 100, "{figures}");
    assert!(
        std::fs::read_to_string(out.join("surge.svg"))
            .unwrap()
            .contains("<polyline")
    );
}
