//! `simulator webtorrent` against a real tracker (in this process, on a free loopback port): a
//! clean run where every offer is answered and every account balances, a short ramp, a drain
//! mid-run (peers come back after 1012), and bad options. Small numbers; every wait has a
//! deadline.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::time::Duration;

use serde_json::Value;
use testkit::process::temp_dir;
use testkit::simulator::{f, report, simulate, text, u};
use testkit::tracker::{TestServer, test_config};

/// Both accounts balance, nothing lost, and the tracker did nothing it shouldn't.
fn assert_balanced(r: &Value) {
    for kind in ["offers", "answers"] {
        let a = &r[kind];
        assert_eq!(a["balanced"], true, "{kind}: {a:#}");
        assert_eq!(u(a, "/untracked"), 0, "{kind}: {a:#}");
    }
    assert!(
        r["anomalies"].as_object().unwrap().is_empty(),
        "{:#}",
        r["anomalies"]
    );
    assert!(
        r["problems"].as_array().unwrap().is_empty(),
        "{:#}",
        r["problems"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_run_answers_every_offer_and_balances() {
    let t = TestServer::start().await;
    let tmp = temp_dir("sim-wt-clean");
    let dir = tmp.path();
    let (json, svg) = (dir.join("r.json"), dir.join("r.svg"));
    let url = t.announce_url();
    let (out, took) = simulate(&[
        "webtorrent",
        "--url",
        &url,
        "--connections",
        "24",
        "--torrents",
        "3",
        "--offers",
        "4",
        "--request-rate",
        "5",
        "--scrape-share",
        "0.2",
        "--duration",
        "2s",
        "--grace",
        "3s",
        "--seed",
        "11",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(took < Duration::from_secs(2 + 3 + 3), "took {took:?}");
    let r = report(&json);
    assert_eq!(r["mode"], "webtorrent run");
    assert_balanced(&r);
    let (o, a) = (&r["offers"], &r["answers"]);
    assert!(u(o, "/sent") > 100, "too little traffic: {o:#}");
    assert_eq!(u(o, "/lost"), 0, "{o:#}");
    assert!(u(o, "/received") > 0);
    // Every offer received was answered, and every answer came back.
    assert_eq!(u(a, "/sent"), u(o, "/received"), "{a:#}");
    assert_eq!(u(a, "/received"), u(a, "/sent"), "{a:#}");
    assert_eq!(u(a, "/lost"), 0);
    let total = &r["total"];
    let c = |k: &str| u(total, &format!("/counts/{k}"));
    assert_eq!(c("announce_responses"), c("announces"));
    assert_eq!(c("scrape_responses"), c("scrapes"));
    assert!(c("scrapes") > 0);
    assert_eq!(c("failures"), 0, "{}", total["failures"]);
    assert_eq!(c("request_timeouts"), 0);
    assert_eq!(c("connects"), 24);
    assert_eq!(u(total, "/announce/count"), c("announces"));
    assert_eq!(u(total, "/offer/count"), u(o, "/received"));
    assert_eq!(u(total, "/answer/count"), u(a, "/received"));
    for kind in ["announce", "offer", "answer"] {
        assert!(f(total, &format!("/{kind}/p99_ms")) >= f(total, &format!("/{kind}/p50_ms")));
    }
    assert!(c("bytes_out") > 0 && c("bytes_in") > 0);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("offers:") && table.contains("answer p99"),
        "{table}"
    );
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("offer p99"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ramp_adds_connections_and_names_its_knee() {
    let t = TestServer::start().await;
    let tmp = temp_dir("sim-wt-ramp");
    let dir = tmp.path();
    let json = dir.join("r.json");
    let url = t.announce_url();
    // Bounds no loopback step can cross: every step holds, the knee is the last.
    let (out, _) = simulate(&[
        "webtorrent",
        "--url",
        &url,
        "--ramp",
        "--connections",
        "10",
        "--connection-step",
        "10",
        "--step",
        "1s",
        "--max-steps",
        "3",
        "--torrents",
        "2",
        "--offers",
        "3",
        "--request-rate",
        "4",
        "--max-p99",
        "5s",
        "--max-loss",
        "1",
        "--grace",
        "3s",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&json);
    assert_eq!(r["mode"], "webtorrent ramp");
    let steps = r["steps"].as_array().unwrap();
    let conns: Vec<u64> = steps.iter().map(|s| u(s, "/target_connections")).collect();
    assert_eq!(conns, [10, 20, 30]);
    assert!(steps.iter().all(|s| s["verdict"] == "held"), "{steps:#?}");
    assert_eq!(u(&r, "/knee/step"), 2);
    assert_eq!(u(&r, "/knee/connections"), 30);
    assert!(f(&r, "/knee/relayed_per_s") > 0.0);
    assert!(r["outcome"].as_str().unwrap().contains("every step held"));
    assert_balanced(&r);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("knee: step 2"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_tracker_closes_with_1012_and_peers_come_back() {
    const PEERS: u64 = 20;
    let mut c = test_config();
    c.drain.reconnect_window_ms = 300;
    c.drain.close_grace_ms = 1000;
    c.drain.deadline_secs = 5;
    let first = TestServer::with_config(c).await;
    let tmp = temp_dir("sim-wt-drain");
    let dir = tmp.path();
    let json = dir.join("r.json");
    let url = first.announce_url();
    let sim = tokio::spawn({
        let json = json.clone();
        async move {
            simulate(&[
                "webtorrent",
                "--url",
                &url,
                "--connections",
                &PEERS.to_string(),
                "--torrents",
                "2",
                "--offers",
                "3",
                "--request-rate",
                "5",
                "--duration",
                "5s",
                "--lost-after",
                "1s",
                "--grace",
                "3s",
                "--quiet",
                "--json",
                json.to_str().unwrap(),
            ])
            .await
        }
    });
    // Drain once every peer is connected.
    let second = first.restart_once_connected(PEERS, test_config()).await;
    let (out, _) = sim.await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&json);
    let total = &r["total"];
    assert_eq!(
        u(total, "/counts/reconnects"),
        PEERS,
        "every peer closed with 1012 once: {total:#}"
    );
    assert!(
        total["closes"].as_object().unwrap().is_empty(),
        "1012 is a reconnect, not a close: {}",
        total["closes"]
    );
    // Offers in flight to or from a closing peer may be lost; every one is accounted for.
    for kind in ["offers", "answers"] {
        assert_eq!(r[kind]["balanced"], true, "{kind}: {:#}", r[kind]);
    }
    // Peers announce again on the new instance: offers relayed there.
    let late: f64 = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["t_s"].as_f64().unwrap() > 3.5)
        .map(|p| p["relayed_per_s"].as_f64().unwrap())
        .sum();
    assert!(late > 0.0, "nothing relayed after the drain");
    assert!(second.metric("tracker_connections_opened_total").await >= PEERS as f64);
}

#[tokio::test]
async fn invalid_options_exit_with_2_and_say_why() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["webtorrent", "--url", "ws://10.0.0.1:80/announce"],
            "127.0.0.0/8",
        ),
        (
            &["webtorrent", "--url", "wss://127.0.0.1/announce"],
            "ws://",
        ),
        (
            &["webtorrent", "--url", "ws://127.0.0.1:1/", "--offers", "17"],
            "--offers",
        ),
        (
            &[
                "webtorrent",
                "--url",
                "ws://127.0.0.1:1/",
                "--answer-probability",
                "1.5",
            ],
            "--answer-probability",
        ),
        (
            &[
                "webtorrent",
                "--url",
                "ws://127.0.0.1:1/",
                "--ramp",
                "--connection-step",
                "0",
            ],
            "must raise",
        ),
        (
            &[
                "webtorrent",
                "--url",
                "ws://127.0.0.1:1/",
                "--connections",
                "10000000",
            ],
            "--workers",
        ),
        (
            &[
                "webtorrent",
                "--url",
                "ws://127.0.0.1:1/",
                "--worker-at",
                "nowhere",
            ],
            "invalid value",
        ),
        (&["webtorrent"], "--url"),
    ];
    for (args, needle) in cases {
        let (out, took) = simulate(args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?} should mention {needle}: {err}"
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
}
