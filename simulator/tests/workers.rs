//! The harness across processes, against a real tracker (in this process, on a free loopback
//! port): a run carried by two workers reached over TCP (`simulator worker --listen`), a
//! worker that dies mid-run, WebTorrent peers split over two local workers, and the tracker's
//! CPU in every step (`--tracker-pid`: the tracker here is this test process).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::process::temp_dir;
use testkit::simulator::{report, simulate, text, u};
use testkit::tracker::{TestServer, test_config};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The most any step of these tests may take.
const DEADLINE: Duration = Duration::from_secs(30);
use tokio::process::{Child, Command};

/// A `simulator worker --listen 127.0.0.1:0` and the address it listens on.
async fn remote_worker() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_simulator"))
        .args(["worker", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the worker never said where it listens")
        .unwrap()
        .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_over_tcp_share_a_run_and_the_report_merges_them() {
    let t = TestServer::with_config(test_config()).await;
    let (_a, addr_a) = remote_worker().await;
    let (_b, addr_b) = remote_worker().await;
    let tmp = temp_dir("tcp-workers");
    let dir = tmp.path();
    let json = dir.join("r.json");
    let url = t.ws_url();
    let (out, _) = simulate(&[
        "run",
        "--url",
        &url,
        "--rate",
        "30",
        "--duration",
        "2s",
        "--watch-min",
        "60s",
        "--watch-max",
        "60s",
        "--videos",
        "3",
        "--grace",
        "4s",
        "--workers",
        "0",
        "--worker-at",
        &addr_a,
        "--worker-at",
        &addr_b,
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&json);
    assert_eq!(u(&r, "/workers"), 2);
    let sent = u(&r, "/accounting/sent");
    assert!(sent > 30, "too little traffic: {sent}");
    assert_eq!(
        u(&r, "/accounting/delivered"),
        sent,
        "{:#}",
        r["accounting"]
    );
    assert_eq!(r["accounting"]["balanced"], true);
    assert!(
        r["problems"].as_array().unwrap().is_empty(),
        "{}",
        r["problems"]
    );
    // Both workers' viewers connected: the tracker saw the two workers' source addresses'
    // connections, and the merged timeline counts them all.
    assert!(
        u(&r, "/total/connects") >= 40,
        "{}",
        u(&r, "/total/connects")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_is_named_in_the_report() {
    let t = TestServer::with_config(test_config()).await;
    let (mut a, addr_a) = remote_worker().await;
    let (_b, addr_b) = remote_worker().await;
    let url = t.ws_url();
    let tmp = temp_dir("dead-worker");
    let dir = tmp.path();
    let json = dir.join("r.json");
    let run = tokio::spawn(async move {
        simulate(&[
            "run",
            "--url",
            &url,
            "--rate",
            "20",
            "--duration",
            "4s",
            "--watch-min",
            "60s",
            "--watch-max",
            "60s",
            "--workers",
            "0",
            "--worker-at",
            &addr_a,
            "--worker-at",
            &addr_b,
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ])
        .await
    });
    // Once worker A has its run, it dies.
    let mut err = BufReader::new(a.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, err.next_line())
        .await
        .expect("worker A never got its run")
        .unwrap()
        .unwrap();
    assert!(line.starts_with("worker: run from"), "{line}");
    a.start_kill().unwrap();
    let (out, took) = run.await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("worker 0 at 127.0.0.1:") && stderr.contains("before finishing"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(4 + 5 + 5), "took {took:?}");
    let r = report(&dir.join("r.json"));
    assert!(u(&r, "/total/connects") > 0, "worker B's figures are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtorrent_peers_split_over_two_workers_and_every_step_shows_the_tracker_cpu() {
    let mut c = test_config();
    c.limits.messages_per_sec = 1000;
    c.limits.burst = 2000;
    let t = TestServer::with_config(c).await;
    let tmp = temp_dir("wt-workers");
    let dir = tmp.path();
    let json = dir.join("r.json");
    let url = t.announce_url();
    let pid = std::process::id().to_string();
    let started = Instant::now();
    let (out, _) = simulate(&[
        "webtorrent",
        "--url",
        &url,
        "--ramp",
        "--connections",
        "10",
        "--connection-step",
        "10",
        "--max-steps",
        "2",
        // Long enough that a new peer's random first request (up to half a second in) can't
        // make the step miss its pace, and latency bounds a loaded CI machine can't cross: the
        // test is about workers and CPU, not the knee.
        "--step",
        "2s",
        "--max-p99",
        "5s",
        "--request-rate",
        "2",
        "--offers",
        "3",
        "--torrents",
        "3",
        "--workers",
        "2",
        "--tracker-pid",
        &pid,
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(started.elapsed() < DEADLINE);
    let r = report(&json);
    assert_eq!(u(&r, "/workers"), 2);
    for kind in ["offers", "answers"] {
        assert_eq!(r[kind]["balanced"], true, "{kind}: {:#}", r[kind]);
        assert_eq!(u(&r[kind], "/lost"), 0, "{kind}: {:#}", r[kind]);
    }
    assert!(u(&r, "/offers/received") > 0);
    assert!(
        r["anomalies"].as_object().unwrap().is_empty(),
        "{}",
        r["anomalies"]
    );
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for s in steps {
        assert!(s["tracker_cpu_cores"].as_f64().unwrap() >= 0.0, "{s:#}");
        assert!(s["tracker_cpu_share"].as_f64().is_some(), "{s:#}");
        assert!(s["sim_cpu_max_cores"].as_f64().is_some(), "{s:#}");
    }
    assert_eq!(u(&r, "/knee/connections"), 20);
    assert!(r["knee"]["tracker_cpu_cores"].as_f64().is_some());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("tracker"), "{table}");
}
