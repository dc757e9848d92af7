//! The simulator round robin over two trackers on one real Redis: every relayed message is
//! delivered or refused with an error naming it, none lost, as on one tracker. Viewers come
//! and go during the run, so signals to viewers that left the other instance are refused
//! there and the refusal comes back across Redis.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use testkit::process::temp_dir;
use testkit::redis::RedisServer;
use testkit::simulator::{report, simulate, text, u};
use testkit::tracker::{TestServer, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_two_instances_nothing_is_lost() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.redis.url = Some(redis.url());
    config.redis.refresh_interval_secs = 1;
    let one = TestServer::with_config(config.clone()).await;
    let two = TestServer::with_config(config).await;
    for t in [&one, &two] {
        t.wait_metric("tracker_redis_up", 1.0).await;
        t.wait_metric("tracker_redis_subscribed", 1.0).await;
    }
    let tmp = temp_dir("sim-two");
    let json = tmp.path().join("r.json");
    // Short watch times: many viewers leave while others still signal to them.
    let (out, _) = simulate(&[
        "run",
        "--url",
        &one.ws_url(),
        "--url",
        &two.ws_url(),
        "--rate",
        "60",
        "--duration",
        "10s",
        "--watch-min",
        "1s",
        "--watch-max",
        "5s",
        "--videos",
        "20",
        "--want",
        "4",
        "--grace",
        "6s",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let r = report(&json);
    let accounting = &r["accounting"];
    eprintln!("accounting: {accounting}");
    let sent = u(&r, "/accounting/sent");
    assert!(sent > 1000, "too little traffic: {accounting:#}");
    assert_eq!(u(&r, "/accounting/lost"), 0, "{accounting:#}");
    assert_eq!(accounting["balanced"], true, "{accounting:#}");
    let remote = one
        .metric(r#"tracker_messages_relayed_total{kind="offer",path="remote"}"#)
        .await
        + two
            .metric(r#"tracker_messages_relayed_total{kind="offer",path="remote"}"#)
            .await;
    assert!(remote > 0.0, "no offer crossed instances");
}
