//! `simulator pairs` against a real tracker (in this process, on a free loopback port): both
//! formats relay with nothing refused, the tracker's refusals are counted, and bad options are
//! refused by name. Small numbers, about a second of load each; every wait has a deadline.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use serde_json::Value;
use testkit::process::temp_dir;
use testkit::simulator::{f, report, simulate, text, u};
use testkit::tracker::{TestServer, test_config};

async fn pairs(url: &str, extra: &[&str], name: &str) -> Value {
    let tmp = temp_dir(name);
    let json = tmp.path().join("r.json");
    let pid = std::process::id().to_string();
    let mut args = vec![
        "pairs",
        "--url",
        url,
        "--connections",
        "8",
        "--warmup",
        "200ms",
        "--duration",
        "1s",
        "--server-pid",
        &pid,
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (out, _) = simulate(&args).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("RESULT "),
        "{}",
        text(&out)
    );
    report(&json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_relay_in_both_formats_with_nothing_refused() {
    let mut c = test_config();
    // The per-connection rate limit is a policy, not what this mode measures.
    c.limits.messages_per_sec = 1_000_000;
    c.limits.burst = 1_000_000;
    let t = TestServer::with_config(c).await;
    for format in ["json", "msgpack"] {
        let r = pairs(
            &t.ws_url(),
            &["--format", format, "--in-flight", "4"],
            "pairs",
        )
        .await;
        assert_eq!(r["format"], format);
        assert_eq!(r["server"], "swarmtrack");
        assert!(u(&r, "/messages") > 100, "{r:#}");
        assert!(f(&r, "/msgs_per_s") > 100.0);
        assert!(u(&r, "/per_s_min") > 0, "a second without a message: {r:#}");
        assert!(u(&r, "/p99_us") >= u(&r, "/p50_us"));
        assert!(
            r["faults"].as_object().unwrap().is_empty(),
            "{}",
            r["faults"]
        );
        // The tracker runs in this process: its CPU and the generator's were both read.
        assert!(f(&r, "/server_cpu_s") > 0.0);
        assert!(f(&r, "/server_cpus/process") > 0.0);
        assert!(r["load_cpus"]["interrupts"].is_number());
        assert!(r["ran_out"].is_string() && r["verdict"].is_string());
        // Real captures: a frame holds an SDP or a candidate batch, hundreds of bytes.
        assert!(u(&r, "/frame_bytes") > 200, "{r:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_and_the_loop_goes_on() {
    let mut c = test_config();
    // Each viewer may send a burst of 20, then 5 a second: most of the load is refused.
    c.limits.messages_per_sec = 5;
    c.limits.burst = 20;
    let t = TestServer::with_config(c).await;
    let r = pairs(&t.ws_url(), &["--in-flight", "2"], "pairs-limited").await;
    assert!(
        u(&r, "/faults/error_rate_limited") > 0,
        "no rate_limited error counted: {}",
        r["faults"]
    );
    assert!(
        r["faults"].get("connection_lost").is_none(),
        "{}",
        r["faults"]
    );
}

#[tokio::test]
async fn bad_options_are_refused_by_name() {
    let t = TestServer::start().await;
    let url = t.ws_url();
    for (args, needle) in [
        (vec!["--connections", "7"], "--connections"),
        (vec!["--in-flight", "0"], "--in-flight"),
        (vec!["--server", "bare", "--format", "msgpack"], "JSON only"),
        (vec!["--server-pid", "4294967295"], "--server-pid"),
    ] {
        let mut all = vec!["pairs", "--url", url.as_str()];
        all.extend_from_slice(&args);
        let (out, _) = simulate(&all).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out)
        );
    }
    let (out, _) = simulate(&["pairs", "--url", "ws://10.0.0.1:80/v1/ws"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
