//! Scale-out: several trackers and a real Redis (one server, or a 3-node cluster) behave as one.

use testkit::Deadline;
use testkit::fixtures::CHROME_OFFER_COMPLETE as OFFER_SDP;
use testkit::http::request as http;
use testkit::native::{Client, exchange_across, join_until_paired, offer};
use testkit::redis::{RedisCluster, RedisServer};
use testkit::tracker::{TestServer, TrackerProcess, test_config};
use tracker::config::Config;
use tracker::protocol::{ClientMsg, Format, ServerMsg};

/// How long one polling attempt waits for a relayed signal before trying again.
const SHORT: std::time::Duration = std::time::Duration::from_millis(300);

/// A tracker config on Redis with short timers, so expiry and reconnects happen within a test.
fn redis_config(url: Option<String>, cluster: Vec<String>) -> Config {
    let mut c = test_config();
    c.redis.url = url;
    c.redis.cluster = cluster;
    c.redis.membership_ttl_secs = 3;
    c.redis.refresh_interval_secs = 1;
    c.redis.reconnect_min_backoff_ms = 20;
    c.redis.reconnect_max_backoff_ms = 200;
    c.redis.health_check_ms = 200;
    c.redis.command_timeout_ms = 500;
    c.redis.connect_timeout_ms = 500;
    c
}

/// Both Redis links up: commands, and the subscription to the instance's relay channel.
async fn redis_ready(server: &TestServer) {
    server.wait_metric("tracker_redis_up", 1.0).await;
    server.wait_metric("tracker_redis_subscribed", 1.0).await;
}

/// Sends offers from `b` to `a` until one arrives: after an outage, the first ones may be lost.
async fn relay_until_delivered(b: &mut Client, a: &mut Client, swarm: &str, what: &str) {
    let deadline = Deadline::new(what);
    loop {
        b.send(&offer(swarm, a.peer, "retry", "sdp")).await;
        // Earlier attempts may arrive late: any offer from B proves the path works.
        if let Ok(ServerMsg::Offer(s)) = tokio::time::timeout(SHORT, a.recv()).await
            && s.from == b.peer
        {
            return;
        }
        deadline.tick().await;
    }
}

/// Two trackers on the same Redis, both links up.
async fn two_trackers(config: Config) -> (TestServer, TestServer) {
    let one = TestServer::with_config(config.clone()).await;
    let two = TestServer::with_config(config).await;
    redis_ready(&one).await;
    redis_ready(&two).await;
    (one, two)
}

#[tokio::test]
async fn viewers_on_two_instances_are_paired_and_signal_in_both_formats() {
    let redis = RedisServer::start();
    let (one, two) = two_trackers(redis_config(Some(redis.url()), vec![])).await;

    for (swarm, fa, fb) in [
        ("v-json", Format::Json, Format::Json),
        ("v-mixed", Format::MsgPack, Format::Json),
    ] {
        let mut a = Client::connect(&one, fa).await;
        let mut b = Client::connect(&two, fb).await;
        assert_ne!(a.instance, b.instance);
        assert!(a.join(swarm, 8).await.is_empty());
        join_until_paired(&mut b, swarm, a.peer).await;
        exchange_across(&mut a, &mut b, swarm).await;
    }
    assert!(
        one.metric(r#"tracker_messages_relayed_total{kind="offer",path="remote"}"#)
            .await
            >= 2.0
    );
    assert!(two.metric("tracker_batches_published_total").await >= 2.0);
}

#[tokio::test]
async fn local_peers_come_first_then_remote_ones() {
    let redis = RedisServer::start();
    let (one, two) = two_trackers(redis_config(Some(redis.url()), vec![])).await;
    let mut remote = Client::connect(&two, Format::Json).await;
    remote.join("v", 8).await;
    let mut local = Client::connect(&one, Format::Json).await;
    local.join("v", 8).await;
    let mut joiner = Client::connect(&one, Format::Json).await;
    let deadline = Deadline::new("both peers");
    let peers = loop {
        let p = joiner.join("v", 8).await;
        if p.len() == 2 {
            break p;
        }
        deadline.tick().await;
    };
    assert_eq!(peers[0], local.peer, "the local peer first");
    assert_eq!(peers[1], remote.peer);
    // With want 1, the local peer alone: no remote peer needed.
    assert_eq!(joiner.join("v", 1).await, vec![local.peer]);
}

/// The sid of an `error`, if it is one with `code`.
fn error_sid(m: &ServerMsg<'_>, code: &str) -> Option<String> {
    match m {
        ServerMsg::Error { code: c, sid, .. } if c.as_str() == code => {
            sid.as_ref().map(|s| s.to_string())
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_signal_to_a_viewer_that_left_another_instance_comes_back_as_an_error_with_its_sid() {
    let redis = RedisServer::start();
    let (one, two) = two_trackers(redis_config(Some(redis.url()), vec![])).await;
    let mut a = Client::connect(&one, Format::Json).await;
    let mut b = Client::connect(&two, Format::MsgPack).await;
    a.join("v", 8).await;
    join_until_paired(&mut b, "v", a.peer).await;

    // A left the swarm: refused on A's instance as `target_not_in_swarm`, and B, on the other
    // instance, gets the `unknown_peer` it would get if both were on one.
    a.send(&ClientMsg::Leave { swarm: "v".into() }).await;
    assert!(a.sync().await.is_empty());
    b.send(&offer("v", a.peer, "late", "sdp")).await;
    let back = b.recv().await;
    assert_eq!(
        error_sid(&back, "unknown_peer").as_deref(),
        Some("late"),
        "{back:?}"
    );
    one.wait_metric(
        r#"tracker_messages_dropped_total{reason="target_not_in_swarm"}"#,
        1.0,
    )
    .await;
    assert!(a.sync().await.is_empty(), "nothing delivered to A");

    // A disconnected: the same, as `unknown_peer` on A's instance.
    let mut c = Client::connect(&one, Format::Json).await;
    c.join("w", 8).await;
    join_until_paired(&mut b, "w", c.peer).await;
    let gone = c.peer;
    c.close().await;
    one.wait_metric("tracker_connections", 1.0).await;
    b.send(&ClientMsg::Cands(tracker::protocol::Cands {
        swarm: "w".into(),
        to: gone,
        sid: "gone".into(),
        c: vec!["candidate:1 1 udp 2113937151 192.0.2.1 5000 typ host".into()],
        end: None,
    }))
    .await;
    let back = b.recv().await;
    assert_eq!(
        error_sid(&back, "unknown_peer").as_deref(),
        Some("gone"),
        "{back:?}"
    );
    // Its swarm has no member left on A's instance: refused before the target is looked up.
    one.wait_metric(
        r#"tracker_messages_dropped_total{reason="target_not_in_swarm"}"#,
        2.0,
    )
    .await;
    assert_eq!(
        two.metric(r#"tracker_errors_sent_total{code="unknown_peer"}"#)
            .await,
        2.0
    );
    for t in [&one, &two] {
        assert_eq!(
            t.metric(r#"tracker_remote_dropped_total{reason="refusal_undelivered"}"#)
                .await,
            0.0
        );
    }
}

#[tokio::test]
async fn signals_stuck_behind_a_slow_publish_go_stale_and_their_sender_is_told() {
    let redis = RedisServer::start();
    let mut config = redis_config(Some(redis.url()), vec![]);
    config.redis.max_signal_age_ms = 200;
    // A paused Redis answers nothing on the command link: neither the publish nor the health
    // check may give up before the pause ends.
    config.redis.command_timeout_ms = 20_000;
    config.redis.health_check_ms = 60_000;
    let (one, two) = two_trackers(config).await;
    let mut a = Client::connect(&one, Format::Json).await;
    let mut b = Client::connect(&two, Format::Json).await;
    a.join("s", 8).await;
    join_until_paired(&mut b, "s", a.peer).await;

    // PUBLISH waits while writes are paused: the first signal's publish holds the lane, the
    // others wait behind it and are over 200 ms old when it is answered.
    redis.command(&["CLIENT", "PAUSE", "3000", "WRITE"]);
    b.send(&offer("s", a.peer, "first", "sdp")).await;
    assert!(b.sync().await.is_empty());
    // Its batch encoded: its publish is on its way, alone.
    two.wait_metric("tracker_batch_messages_count", 1.0).await;
    for sid in ["s2", "s3", "s4"] {
        b.send(&offer("s", a.peer, sid, "sdp")).await;
    }
    let mut refused = Vec::new();
    while refused.len() < 3 {
        let m = b.recv().await;
        refused.push(error_sid(&m, "overloaded").unwrap_or_else(|| panic!("{m:?}")));
    }
    assert_eq!(refused, ["s2", "s3", "s4"]);
    match a.recv().await {
        ServerMsg::Offer(s) => assert_eq!(s.sid, "first"),
        m => panic!("expected the first offer, got {m:?}"),
    }
    assert!(a.sync().await.is_empty(), "nothing but the first");
    assert_eq!(
        two.metric(r#"tracker_remote_dropped_total{reason="stale"}"#)
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_signals_across_instances_arrive_in_order() {
    const N: usize = 10_000;
    const PER_FRAME: usize = 50;
    let redis = RedisServer::start();
    let mut config = redis_config(Some(redis.url()), vec![]);
    // Room for all of them at once: this checks order, not the bounds.
    config.limits.messages_per_sec = 1_000_000;
    config.limits.burst = 1_000_000;
    config.websocket.outbox_capacity = 2 * N;
    config.websocket.outbox_bytes = 64 << 20;
    // No batching window: the most publishes to one instance, where concurrent publish tasks
    // could overtake each other (on 15c545d, 9,982 of the 10,000 arrived out of place).
    config.redis.batch_window_us = 0;
    // A loaded test machine must not make them stale: this checks order.
    config.redis.max_signal_age_ms = 60_000;
    let (one, two) = two_trackers(config).await;
    let mut a = Client::connect(&one, Format::MsgPack).await;
    let mut b = Client::connect(&two, Format::MsgPack).await;
    a.join("o", 8).await;
    join_until_paired(&mut b, "o", a.peer).await;

    let (from, to) = (b.peer, a.peer);
    let receiver = tokio::spawn(async move {
        let mut sids = Vec::with_capacity(N);
        while sids.len() < N {
            match a.recv().await {
                ServerMsg::Cands(c) => {
                    assert_eq!(c.from, from);
                    sids.push(c.sid.parse::<usize>().expect("a number"));
                }
                m => panic!("expected candidates, got {m:?}"),
            }
        }
        sids
    });
    for start in (0..N).step_by(PER_FRAME) {
        let msgs: Vec<ClientMsg<'_>> = (start..start + PER_FRAME)
            .map(|i| {
                ClientMsg::Cands(tracker::protocol::Cands {
                    swarm: "o".into(),
                    to,
                    sid: i.to_string().into(),
                    c: vec![
                        format!("candidate:{i} 1 udp 2113937151 192.0.2.1 5000 typ host").into(),
                    ],
                    end: None,
                })
            })
            .collect();
        b.send(&ClientMsg::Batch { msgs }).await;
    }
    let sids = testkit::wait::within_for("10,000 signals", testkit::wait::LONG_DEADLINE, receiver)
        .await
        .expect("the receiver");
    let misplaced = sids.iter().enumerate().filter(|(i, s)| i != *s).count();
    assert_eq!(misplaced, 0, "{misplaced} signals out of order");
    assert!(b.sync().await.is_empty(), "no error for any of them");
    assert!(two.metric("tracker_batches_published_total").await >= 1.0);
    for t in [&one, &two] {
        let text = t.metrics().await;
        for line in text.lines().filter(|l| {
            l.starts_with("tracker_remote_dropped_total")
                || l.starts_with("tracker_remote_unconfirmed_total")
        }) {
            assert!(line.ends_with(" 0"), "{line}");
        }
    }
}

#[tokio::test]
async fn members_of_a_killed_instance_expire() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut doomed = TrackerProcess::spawn(
        &["--redis-url", &url],
        &[
            ("TRACKER__REDIS__MEMBERSHIP_TTL_SECS", "2"),
            ("TRACKER__REDIS__REFRESH_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    let survivor = TestServer::with_config(redis_config(Some(url), vec![])).await;
    redis_ready(&survivor).await;
    let mut gone = Client::connect_url(&doomed.ws_url(), Format::Json).await;
    gone.join("v", 8).await;
    let mut b = Client::connect(&survivor, Format::Json).await;
    join_until_paired(&mut b, "v", gone.peer).await;
    doomed.kill();
    // After the TTL, the dead instance's viewer is never handed out again.
    let deadline = Deadline::new("expiry of the dead instance's member");
    while !b.join("v", 8).await.is_empty() {
        deadline.tick().await;
    }
    for _ in 0..5 {
        assert!(b.join("v", 8).await.is_empty());
    }
}

#[tokio::test]
async fn redis_restart_local_relay_never_stops_and_cross_instance_recovers() {
    let mut redis = RedisServer::start();
    let (one, two) = two_trackers(redis_config(Some(redis.url()), vec![])).await;
    let mut a = Client::connect(&one, Format::Json).await;
    let mut a2 = Client::connect(&one, Format::Json).await;
    let mut b = Client::connect(&two, Format::Json).await;
    a.join("v", 8).await;
    a2.join("v", 8).await;
    join_until_paired(&mut b, "v", a.peer).await;

    redis.kill();
    one.wait_metric("tracker_redis_up", 0.0).await;
    // Local pairing and relay go on.
    a2.send(&offer("v", a.peer, "local", "sdp")).await;
    assert!(matches!(a.recv().await, ServerMsg::Offer(s) if s.from == a2.peer));
    let mut c = Client::connect(&one, Format::Json).await;
    let peers = c.join("v", 8).await;
    assert!(peers.contains(&a.peer) && peers.contains(&a2.peer));
    // Remote sends are refused as overloaded and counted.
    b.send(&offer("v", a.peer, "lost", "sdp")).await;
    b.expect_error("overloaded").await;
    assert!(
        two.metric(r#"tracker_remote_dropped_total{reason="redis_down"}"#)
            .await
            >= 1.0
    );
    assert_eq!(
        http(one.addr, "GET", "/readyz", &[]).await.0,
        200,
        "ready while degraded"
    );

    redis.restart();
    redis_ready(&one).await;
    redis_ready(&two).await;
    // Membership is re-registered and the relay channel resubscribed.
    join_until_paired(&mut b, "v", a.peer).await;
    relay_until_delivered(&mut b, &mut a, "v", "cross-instance relay back").await;
    assert!(one.metric("tracker_redis_reconnects_total").await >= 1.0);
    assert!(one.metric("tracker_redis_resubscribes_total").await >= 1.0);
}

#[tokio::test]
async fn batching_turns_many_signals_into_fewer_publishes() {
    let redis = RedisServer::start();
    let mut config = redis_config(Some(redis.url()), vec![]);
    config.redis.batch_window_us = 20_000;
    // Fifty real offers in one client frame: ~45 KB.
    config.limits.max_message_bytes = 256 * 1024;
    config.limits.max_frame_bytes = 512 * 1024;
    let (one, two) = two_trackers(config).await;
    let mut a = Client::connect(&one, Format::Json).await;
    let mut b = Client::connect(&two, Format::Json).await;
    a.join("v", 8).await;
    join_until_paired(&mut b, "v", a.peer).await;
    let before = two.metric("tracker_batches_published_total").await;
    let sids: Vec<String> = (0..50).map(|i| format!("s{i}")).collect();
    let msgs = sids
        .iter()
        .map(|s| offer("v", a.peer, s, OFFER_SDP))
        .collect();
    b.send(&ClientMsg::Batch { msgs }).await;
    let mut got = Vec::new();
    while got.len() < 50 {
        match a.recv().await {
            ServerMsg::Offer(s) => got.push(s.sid.into_owned()),
            m => panic!("expected offers, got {m:?}"),
        }
    }
    assert_eq!(got, sids, "all delivered, in order");
    let publishes = two.metric("tracker_batches_published_total").await - before;
    assert!(
        (1.0..=5.0).contains(&publishes),
        "50 signals took {publishes} publishes"
    );
    assert!(two.metric("tracker_batches_compressed_total").await >= 1.0);
}

#[tokio::test]
async fn the_same_exchange_on_a_redis_cluster_with_sharded_pubsub() {
    let cluster = RedisCluster::start(3);
    let (one, two) = two_trackers(redis_config(None, cluster.urls())).await;
    let mut a = Client::connect(&one, Format::MsgPack).await;
    let mut b = Client::connect(&two, Format::Json).await;
    a.join("cluster-video", 8).await;
    join_until_paired(&mut b, "cluster-video", a.peer).await;
    exchange_across(&mut a, &mut b, "cluster-video").await;

    // Move A's relay channel to another node: the subscriber is told (sunsubscribe) and
    // resubscribes, and relay to A works again.
    let channel = tracker::relay_channel_name("st", a.instance);
    let slot = cluster.slot_of(&channel);
    let owner = cluster.owner_of(slot);
    cluster.migrate_slot(slot, (owner + 1) % cluster.node_count());
    one.wait_metric("tracker_redis_resubscribes_total", 1.0)
        .await;
    relay_until_delivered(
        &mut b,
        &mut a,
        "cluster-video",
        "relay after the slot moved",
    )
    .await;
}

#[tokio::test]
async fn redis_unreachable_at_start_then_up_later() {
    let mut redis = RedisServer::start();
    redis.kill();
    let one = TestServer::with_config(redis_config(Some(redis.url()), vec![])).await;
    let two = TestServer::with_config(redis_config(Some(redis.url()), vec![])).await;
    // Serving on the embedded path meanwhile: ready, local pairing and relay work.
    assert_eq!(http(one.addr, "GET", "/readyz", &[]).await.0, 200);
    assert_eq!(one.metric("tracker_redis_up").await, 0.0);
    let mut a = Client::connect(&one, Format::Json).await;
    let mut a2 = Client::connect(&one, Format::Json).await;
    a.join("v", 8).await;
    assert_eq!(a2.join("v", 8).await, vec![a.peer]);
    a2.send(&offer("v", a.peer, "s", "sdp")).await;
    assert!(matches!(a.recv().await, ServerMsg::Offer(_)));

    redis.restart();
    redis_ready(&one).await;
    redis_ready(&two).await;
    // The members registered before Redis came up are registered by the first refresh.
    let mut b = Client::connect(&two, Format::Json).await;
    let deadline = Deadline::new("pairing with members from before Redis was up");
    loop {
        let peers = b.join("v", 8).await;
        if peers.contains(&a.peer) && peers.contains(&a2.peer) {
            break;
        }
        deadline.tick().await;
    }
    exchange_across(&mut a, &mut b, "v").await;
}

#[tokio::test]
async fn each_instance_claims_its_id_in_redis() {
    let redis = RedisServer::start();
    let (one, two) = two_trackers(redis_config(Some(redis.url()), vec![])).await;
    let a = Client::connect(&one, Format::Json).await;
    let b = Client::connect(&two, Format::Json).await;
    assert_ne!(a.instance, b.instance);
    let holders: Vec<String> = [a.instance, b.instance]
        .iter()
        .map(|i| redis.command(&["GET", &format!("st:instance:{i}")]))
        .collect();
    assert!(
        holders.iter().all(|h| h.len() == 16),
        "claimed with a token: {holders:?}"
    );
    assert_ne!(holders[0], holders[1], "each by its own tracker");
    let ttl: i64 = redis
        .command(&["PTTL", &format!("st:instance:{}", a.instance)])
        .trim()
        .parse()
        .expect("ttl");
    assert!(ttl > 0, "the claim expires if the tracker dies");
    assert_eq!(one.metric("tracker_instance_id_conflicts_total").await, 0.0);
}
