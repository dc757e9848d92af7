//! Redis you can expose to a network: relay batches are signed with the fleet key and anything
//! else published into Redis is refused and counted; Redis over TLS with an ACL user limited to
//! what a tracker needs.

#![allow(clippy::expect_used)] // a failed expectation fails the test

use std::time::Duration;

use futures_util::StreamExt;
use testkit::Deadline;
use testkit::native::{Client, join_until_paired, offer};
use testkit::redis::{RedisCluster, RedisServer, TRACKER_ACL_RULES};
use testkit::tracker::{TestServer, test_config};
use tracker::config::{Config, Secret};
use tracker::protocol::{Format, InstanceId, ServerMsg};

/// The replay window of these tests, ms: short, so "published again after the window" is quick.
const WINDOW_MS: u64 = 1_000;

/// A tracker config on `url` with short timers.
fn redis_config(url: &str) -> Config {
    let mut c = test_config();
    c.redis.url = Some(url.to_string());
    c.redis.membership_ttl_secs = 3;
    c.redis.refresh_interval_secs = 1;
    c.redis.replay_window_ms = WINDOW_MS;
    c
}

async fn redis_ready(server: &TestServer) {
    server.wait_metric("tracker_redis_up", 1.0).await;
    server.wait_metric("tracker_redis_subscribed", 1.0).await;
}

fn refused(reason: &str) -> String {
    format!(r#"tracker_remote_batches_refused_total{{reason="{reason}"}}"#)
}

/// The relay channel of `instance` with the default prefix.
fn channel(instance: InstanceId) -> String {
    tracker::relay_channel_name("st", instance)
}

async fn publish(redis: &redis::Client, channel: &str, bytes: &[u8]) {
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let n: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(bytes)
        .query_async(&mut conn)
        .await
        .expect("publish");
    assert!(n >= 1, "the tracker is subscribed to {channel}");
}

/// Whatever `a` receives from now until a sync: the offers among it, by sender and sid.
async fn offers_received(a: &mut Client) -> Vec<(String, String)> {
    a.sync()
        .await
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Offer(s) => Some((s.from.to_string(), s.sid.to_string())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn unsigned_forged_changed_and_replayed_batches_are_refused_and_counted() {
    let redis = RedisServer::start();
    let one = TestServer::with_config(redis_config(&redis.url())).await;
    let two = TestServer::with_config(redis_config(&redis.url())).await;
    // Trackers that can reach Redis without the fleet's key: one with a key of its own, one
    // with none at all (redis.allow_unsigned).
    let mut wrong = redis_config(&redis.url());
    wrong.fleet_key = Some(Secret::new("another-fleet-key-0123456789abcdef0123456789"));
    let rogue = TestServer::with_config(wrong).await;
    let mut keyless = redis_config(&redis.url());
    keyless.fleet_key = None;
    keyless.redis.allow_unsigned = true;
    let unsigned = TestServer::with_config(keyless).await;
    for t in [&one, &two, &rogue, &unsigned] {
        redis_ready(t).await;
    }

    let mut a = Client::connect(&one, Format::Json).await;
    let mut b = Client::connect(&two, Format::Json).await;
    a.join("v", 8).await;
    join_until_paired(&mut b, "v", a.peer).await;

    // Watch A's instance channel as anyone on the network could, and catch a genuine batch.
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut watch = client.get_async_pubsub().await.expect("pubsub");
    watch
        .subscribe(channel(a.instance))
        .await
        .expect("subscribe");
    let mut messages = watch.on_message();
    b.send(&offer("v", a.peer, "genuine", "sdp")).await;
    match a.recv().await {
        ServerMsg::Offer(s) => assert_eq!((s.from, &*s.sid), (b.peer, "genuine")),
        m => panic!("expected the genuine offer, got {m:?}"),
    }
    let genuine = testkit::within("the batch on the channel", messages.next())
        .await
        .expect("a message")
        .get_payload_bytes()
        .to_vec();
    let sent = std::time::Instant::now();
    let ch = channel(a.instance);

    // Published again at once: its sequence was seen.
    publish(&client, &ch, &genuine).await;
    one.wait_metric(&refused("replay"), 1.0).await;
    // One byte of the signed batch changed.
    let mut changed = genuine.clone();
    let last = changed.len() - 1;
    changed[last] ^= 0x01;
    publish(&client, &ch, &changed).await;
    one.wait_metric(&refused("bad_tag"), 1.0).await;
    // The batch bytes alone, without their envelope: as published without the key.
    publish(&client, &ch, &genuine[42..]).await;
    one.wait_metric(&refused("unsigned"), 1.0).await;

    // Trackers without the key, relaying for real: viewers on them signal A.
    // A tracker with another key doesn't even see the fleet's instances as live (their
    // heartbeats don't verify under its key): it refuses the signal before publishing it.
    let mut c = Client::connect(&rogue, Format::Json).await;
    c.join("v", 8).await;
    c.send(&offer("v", a.peer, "forged", "sdp")).await;
    c.expect_error("unknown_peer").await;
    let mut d = Client::connect(&unsigned, Format::Json).await;
    d.join("v", 8).await;
    d.send(&offer("v", a.peer, "unsigned", "sdp")).await;
    one.wait_metric(&refused("unsigned"), 2.0).await;

    // Published again once the window is over: its time is stale. Waiting for the clock is the
    // point here, not a synchronisation.
    let after = Duration::from_millis(WINDOW_MS + 200).saturating_sub(sent.elapsed());
    tokio::time::sleep(after).await;
    publish(&client, &ch, &genuine).await;
    one.wait_metric(&refused("stale"), 1.0).await;

    // Nothing refused reached A, and genuine traffic still flows.
    assert!(offers_received(&mut a).await.is_empty());
    b.send(&offer("v", a.peer, "still", "sdp")).await;
    let deadline = Deadline::new("genuine traffic after the refusals");
    loop {
        let got = offers_received(&mut a).await;
        if !got.is_empty() {
            assert_eq!(got, vec![(b.peer.to_string(), "still".to_string())]);
            break;
        }
        deadline.tick().await;
    }
    assert_eq!(
        one.metric(r#"tracker_messages_relayed_total{kind="offer",path="remote"}"#)
            .await,
        2.0,
        "only B's two offers were relayed to A"
    );
    for reason in ["unsigned", "bad_tag", "replay", "stale"] {
        assert_eq!(
            two.metric(&refused(reason)).await,
            0.0,
            "{reason} on B's tracker"
        );
    }
}

#[tokio::test]
async fn a_keyless_tracker_on_redis_refuses_to_start() {
    let redis = RedisServer::start();
    let mut c = redis_config(&redis.url());
    c.fleet_key = None;
    let mut server = TestServer::with_config(c).await;
    let err = server.exited().await.expect_err("refused to start");
    assert!(format!("{err:#}").contains("TRACKER_FLEET_KEY"), "{err:#}");
}

/// Rotation: trackers that already know the next key (as `previous`, then as current) keep
/// relaying to each other at every step.
#[tokio::test]
async fn a_key_rotation_never_refuses_a_genuine_peer() {
    const OLD: &str = "old-fleet-key-0123456789abcdef0123456789abcdef";
    const NEW: &str = "new-fleet-key-0123456789abcdef0123456789abcdef";
    let redis = RedisServer::start();
    let keyed = |current: &str, previous: Option<&str>| {
        let mut c = redis_config(&redis.url());
        c.fleet_key = Some(Secret::new(current));
        c.fleet_key_previous = previous.map(Secret::new);
        c
    };
    // Mid-rotation: one tracker signs with the new key and still accepts the old, the other
    // signs with the old key and already accepts the new.
    let one = TestServer::with_config(keyed(NEW, Some(OLD))).await;
    let two = TestServer::with_config(keyed(OLD, Some(NEW))).await;
    redis_ready(&one).await;
    redis_ready(&two).await;
    let mut a = Client::connect(&one, Format::Json).await;
    let mut b = Client::connect(&two, Format::Json).await;
    a.join("v", 8).await;
    join_until_paired(&mut b, "v", a.peer).await;
    b.send(&offer("v", a.peer, "old-to-new", "sdp")).await;
    assert!(matches!(a.recv().await, ServerMsg::Offer(s) if s.sid == "old-to-new"));
    a.send(&offer("v", b.peer, "new-to-old", "sdp")).await;
    assert!(matches!(b.recv().await, ServerMsg::Offer(s) if s.sid == "new-to-old"));
    for t in [&one, &two] {
        assert_eq!(t.metric(&refused("bad_tag")).await, 0.0);
    }
}

#[tokio::test]
async fn trackers_reach_redis_over_tls_as_an_acl_user_that_may_do_only_what_they_need() {
    let redis = RedisServer::start_tls();
    // The user of docs/OPERATIONS.md, and nothing for the default user over TLS.
    let mut rules = vec!["ACL", "SETUSER", "swarmtrack", "on", ">tracker-secret"];
    rules.extend(TRACKER_ACL_RULES.split_whitespace());
    assert_eq!(redis.command(&rules), "OK");
    let mut c = redis_config(&redis.tls_url());
    c.redis.tls_ca_file = Some(redis.ca_file());
    c.redis_username = Some("swarmtrack".into());
    c.redis_password = Some(Secret::new("tracker-secret"));
    let one = TestServer::with_config(c.clone()).await;
    let two = TestServer::with_config(c.clone()).await;
    redis_ready(&one).await;
    redis_ready(&two).await;

    let mut a = Client::connect(&one, Format::Json).await;
    let mut b = Client::connect(&two, Format::Json).await;
    a.join("v", 8).await;
    join_until_paired(&mut b, "v", a.peer).await;
    testkit::native::exchange_across(&mut a, &mut b, "v").await;

    // Every tracker connection is the ACL user's, on the TLS port; none was ever denied.
    let tls = format!("laddr=127.0.0.1:{}", redis.tls_port().expect("tls port"));
    // Per tracker: the command link, the subscriber, and the health checker's own connection
    // (made at the first check).
    let clients = testkit::eventually("three connections per tracker", || async {
        let clients = redis.command(&["CLIENT", "LIST"]);
        let n = clients
            .lines()
            .filter(|l| l.contains(" user=swarmtrack "))
            .count();
        (n >= 6).then_some(clients)
    })
    .await;
    let trackers: Vec<&str> = clients
        .lines()
        .filter(|l| l.contains(" user=swarmtrack "))
        .collect();
    assert!(trackers.iter().all(|l| l.contains(&tls)), "{clients}");
    assert_eq!(redis.command(&["ACL", "LOG"]), "", "denials");

    // A wrong password is refused by Redis (and the tracker keeps trying).
    c.redis_password = Some(Secret::new("wrong"));
    let refused = TestServer::with_config(c).await;
    testkit::eventually("the failed login in ACL LOG", || async {
        redis
            .command(&["ACL", "LOG"])
            .contains("swarmtrack")
            .then_some(())
    })
    .await;
    assert_eq!(refused.metric("tracker_redis_up").await, 0.0);
}

#[test]
fn the_acl_line_in_the_operations_guide_is_the_tested_one() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/OPERATIONS.md"
    ))
    .expect("docs/OPERATIONS.md");
    let line = format!("ACL SETUSER swarmtrack on >PASSWORD {TRACKER_ACL_RULES}");
    assert!(
        guide.contains(&line),
        "docs/OPERATIONS.md should quote:\n{line}"
    );
}

/// PINGs Redis has answered so far (`INFO commandstats`).
fn pings(redis: &RedisServer) -> u64 {
    let stats = redis.command(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A stall shorter than `health_failures` checks doesn't take the link down; with one failure
/// allowed, the same stall does (so the test can tell).
#[tokio::test]
async fn a_short_stall_needs_consecutive_failed_checks_to_take_the_link_down() {
    let redis = RedisServer::start();
    let config = |failures: u32| {
        let mut c = redis_config(&redis.url());
        c.redis.health_check_ms = 100;
        c.redis.command_timeout_ms = 250;
        c.redis.connect_timeout_ms = 500;
        c.redis.health_failures = failures;
        c
    };
    let patient = TestServer::with_config(config(20)).await;
    let hasty = TestServer::with_config(config(1)).await;
    redis_ready(&patient).await;
    redis_ready(&hasty).await;
    let before = pings(&redis);
    // Every client's commands wait 800 ms: several checks of each tracker time out.
    assert_eq!(redis.command(&["CLIENT", "PAUSE", "800", "ALL"]), "OK");
    hasty
        .wait_metric("tracker_redis_reconnects_total", 1.0)
        .await;
    // Wait until both trackers' checkers have been answered a few times after the pause.
    testkit::eventually("health checks after the stall", || async {
        (pings(&redis) >= before + 20).then_some(())
    })
    .await;
    assert_eq!(patient.metric("tracker_redis_reconnects_total").await, 0.0);
    assert_eq!(
        patient.metric("tracker_redis_resubscribes_total").await,
        0.0
    );
    assert_eq!(patient.metric("tracker_redis_up").await, 1.0);
}

#[tokio::test]
async fn trackers_reach_a_redis_cluster_over_tls() {
    let cluster = RedisCluster::start_tls(3);
    let mut c = test_config();
    c.redis.cluster = cluster.tls_urls();
    c.redis.tls_ca_file = Some(cluster.node(0).ca_file());
    c.redis.membership_ttl_secs = 3;
    c.redis.refresh_interval_secs = 1;
    let one = TestServer::with_config(c.clone()).await;
    let two = TestServer::with_config(c).await;
    redis_ready(&one).await;
    redis_ready(&two).await;
    let mut a = Client::connect(&one, Format::Json).await;
    let mut b = Client::connect(&two, Format::Json).await;
    a.join("v", 8).await;
    join_until_paired(&mut b, "v", a.peer).await;
    testkit::native::exchange_across(&mut a, &mut b, "v").await;
    // The trackers' connections are all on TLS ports: the plain ones serve only this check.
    let mut on_tls = 0;
    for i in 0..cluster.node_count() {
        let node = cluster.node(i);
        let clients = node.command(&["CLIENT", "LIST"]);
        let plain = format!("laddr=127.0.0.1:{} ", node.port());
        let tls = format!("laddr=127.0.0.1:{} ", node.tls_port().expect("tls port"));
        for line in clients.lines() {
            assert!(
                !line.contains(&plain) || line.contains("cmd=client|list"),
                "a connection on the plain port: {line}"
            );
            on_tls += usize::from(line.contains(&tls));
        }
    }
    assert!(on_tls >= 2, "the trackers' connections over TLS");
}
