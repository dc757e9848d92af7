//! The fleet's directory in Redis: no ghosts, no dead peers, no cost for a re-join. Real
//! redis-server, real tracker processes (one killed with SIGKILL) and in-process trackers.

use std::net::SocketAddr;
use std::time::Duration;

use testkit::Deadline;
use testkit::http::{metric_value, request as http};
use testkit::native::{Client, join_until_paired, offer};
use testkit::redis::RedisServer;
use testkit::tracker::{TestServer, TrackerProcess, test_config};
use tracker::config::Config;
use tracker::protocol::{Format, InstanceId, PeerId, ServerMsg};

/// A tracker config on `url` with the default liveness timers and a refresh that never comes
/// during a test, so every Redis command a test sees is one it caused.
fn redis_config(url: &str) -> Config {
    let mut c = test_config();
    c.redis.url = Some(url.to_string());
    c.redis.membership_ttl_secs = 7_200;
    c.redis.refresh_interval_secs = 3_600;
    c
}

async fn ready(server: &TestServer) {
    server.wait_metric("tracker_redis_up", 1.0).await;
    server.wait_metric("tracker_redis_subscribed", 1.0).await;
}

/// Two trackers on the same Redis (or cluster), both linked to it.
async fn two_trackers(config: Config) -> (TestServer, TestServer) {
    let one = TestServer::with_config(config.clone()).await;
    let two = TestServer::with_config(config).await;
    ready(&one).await;
    ready(&two).await;
    (one, two)
}

/// `a` on `one` and `b` on `two`, both in swarm `v`, `b` once it is handed `a`.
async fn paired(one: &TestServer, two: &TestServer) -> (Client, Client) {
    let mut a = Client::connect(one, Format::Json).await;
    a.join("v", 8).await;
    let mut b = Client::connect(two, Format::Json).await;
    join_until_paired(&mut b, "v", a.peer).await;
    (a, b)
}

/// Calls of one Redis command so far (`INFO commandstats`).
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let info = redis.command(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn process_metric(addr: SocketAddr, series: &str) -> f64 {
    let (status, body) = http(addr, "GET", "/metrics", &[]).await;
    assert_eq!(status, 200, "metrics: {body}");
    metric_value(&body, series)
}

#[tokio::test]
async fn two_seconds_after_a_sigkill_none_of_the_dead_trackers_peers_is_handed_out() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut trackers = Vec::new();
    for _ in 0..3 {
        trackers.push(TrackerProcess::spawn(&["--redis-url", &url], &[]).await);
    }
    // Six viewers in one swarm, two per tracker.
    let mut viewers = Vec::new();
    for t in &trackers {
        for _ in 0..2 {
            let mut v = Client::connect_url(&t.ws_url(), Format::Json).await;
            v.join("v", 8).await;
            viewers.push(v);
        }
    }
    let doomed = viewers[0].instance;
    let doomed_peer = viewers[0].peer;
    // Before the kill, the survivors hand out the doomed tracker's viewers.
    for i in [2, 4] {
        join_until_paired(&mut viewers[i], "v", doomed_peer).await;
    }
    trackers[0].kill();
    let killed = tokio::time::Instant::now();
    // Its viewers are gone with it (they would reconnect elsewhere).
    viewers.drain(..2);
    // The bound under test: 2 s after the kill. Until then its peers may still be handed out.
    tokio::time::sleep_until(killed + Duration::from_secs(2)).await;
    let mut handed = Vec::new();
    for round in 0..10 {
        // Re-joins (from the survivors' samples) and first joins (a Redis round trip).
        for v in viewers.iter_mut() {
            handed.extend(v.join("v", 8).await);
        }
        for t in &trackers[1..] {
            let mut fresh = Client::connect_url(&t.ws_url(), Format::Json).await;
            handed.extend(fresh.join(&format!("v{round}"), 8).await);
            handed.extend(fresh.join("v", 8).await);
        }
    }
    let dead: Vec<&PeerId> = handed.iter().filter(|p| p.instance() == doomed).collect();
    assert!(
        dead.is_empty(),
        "peers of the killed tracker handed out: {dead:?}"
    );
    // The survivors still pair with each other.
    assert!(handed.iter().any(|p| p.instance() == viewers[0].instance));
    assert!(handed.iter().any(|p| p.instance() == viewers[2].instance));
    // A signal to the dead tracker's viewer is refused at once, as for a viewer that left.
    viewers[0].send(&offer("v", doomed_peer, "s", "sdp")).await;
    viewers[0].expect_error("unknown_peer").await;
    let mut skipped = 0.0;
    for t in &trackers[1..] {
        skipped += process_metric(
            t.admin,
            r#"tracker_directory_skipped_total{reason="dead_instance"}"#,
        )
        .await;
    }
    assert!(skipped >= 1.0, "the dead tracker's members were skipped");
}

#[tokio::test]
async fn a_signal_to_an_invented_instance_is_refused_at_once_and_never_published() {
    let redis = RedisServer::start();
    let one = TestServer::with_config(redis_config(&redis.url())).await;
    ready(&one).await;
    let mut a = Client::connect(&one, Format::Json).await;
    a.join("v", 8).await;
    let publishes = calls(&redis, "publish");
    let invented = PeerId::new(InstanceId(a.instance.0 ^ 0x5a5a_5a5a), 1, 1);
    a.send(&offer("v", invented, "s", "sdp")).await;
    a.expect_error("unknown_peer").await;
    // A heartbeat for it forged without the key changes nothing.
    redis.command(&[
        "ZADD",
        "st:live",
        "99999999999999",
        &format!(
            "{}.99999999999999.AAAAAAAAAAAAAAAAAAAAAA",
            invented.instance()
        ),
    ]);
    one.wait_metric("tracker_liveness_refused_total", 1.0).await;
    a.send(&offer("v", invented, "s2", "sdp")).await;
    a.expect_error("unknown_peer").await;
    assert_eq!(
        one.metric(r#"tracker_messages_dropped_total{reason="unknown_peer"}"#)
            .await,
        2.0
    );
    assert_eq!(one.metric("tracker_batches_published_total").await, 0.0);
    assert_eq!(calls(&redis, "publish"), publishes, "nothing published");
}

#[tokio::test]
async fn re_joins_wait_for_no_redis_command_and_still_find_remote_peers() {
    let redis = RedisServer::start();
    let mut config = redis_config(&redis.url());
    // Re-joins as fast as a client can send them (the rate limit is another test's).
    config.limits.messages_per_sec = 100_000;
    config.limits.burst = 100_000;
    let (one, two) = two_trackers(config).await;
    // The first join registers and samples in one command; then re-joins until `a`'s instance
    // is known live on `two` (its heartbeat read).
    let (a, mut b) = paired(&one, &two).await;
    let commands = |r: &RedisServer| {
        ["eval", "evalsha", "zadd", "zrandmember", "zrem", "pexpire"]
            .iter()
            .map(|c| (*c, calls(r, c)))
            .collect::<Vec<_>>()
    };
    let evals = calls(&redis, "eval");
    let before = commands(&redis);
    let started = std::time::Instant::now();
    for _ in 0..200 {
        assert_eq!(
            b.join("v", 8).await,
            vec![a.peer],
            "a re-join finds the remote peer"
        );
    }
    // No re-join waits for Redis; the sample they draw from is renewed in the background once
    // it is over a second old: at most one script call per second of re-joins, however many.
    // Heartbeats (ZADD/ZREM on the live set) run meanwhile.
    let renewals = calls(&redis, "eval") - evals;
    let allowed = 1 + started.elapsed().as_secs();
    assert!(
        renewals <= allowed,
        "200 re-joins in {:?} cost {renewals} script calls (at most {allowed})",
        started.elapsed()
    );
    let after = commands(&redis);
    for ((c, n0), (_, n1)) in before.iter().zip(&after) {
        // Commands a script runs count in commandstats too: each renewal's ZRANDMEMBER and
        // PEXPIRE.
        if !["zadd", "zrem", "eval"].contains(c) {
            assert!(
                n1 - n0 <= renewals,
                "{c} calls during re-joins: {}",
                n1 - n0
            );
        }
    }
    // A new member costs exactly one command: register and sample together.
    let mut c = Client::connect(&two, Format::Json).await;
    let peers = c.join("v", 8).await;
    assert!(peers.contains(&a.peer) && peers.contains(&b.peer));
    assert_eq!(calls(&redis, "eval"), evals + 1);
}

#[tokio::test]
async fn ghost_members_written_without_the_key_are_never_handed_out() {
    let redis = RedisServer::start();
    let one = TestServer::with_config(redis_config(&redis.url())).await;
    ready(&one).await;
    let mut a = Client::connect(&one, Format::Json).await;
    a.join("v", 8).await;
    // Ghosts of another instance that looks alive: an unsigned peer id, and one with a tag
    // copied from a genuine member (signed for another peer).
    let genuine = redis.command(&["ZRANGE", "st:swarm:{v}", "0", "-1"]);
    let tag = genuine.trim().split_once('.').expect("a signed member").1;
    let ghost = PeerId::new(InstanceId(a.instance.0 ^ 1), 1, 1);
    let copied = PeerId::new(InstanceId(a.instance.0 ^ 1), 2, 2);
    let far = "99999999999999";
    redis.command(&["ZADD", "st:swarm:{v}", far, &ghost.to_string()]);
    redis.command(&["ZADD", "st:swarm:{v}", far, &format!("{copied}.{tag}")]);
    // A second tracker: its first join samples the set.
    let two = TestServer::with_config(redis_config(&redis.url())).await;
    ready(&two).await;
    let mut b = Client::connect(&two, Format::Json).await;
    join_until_paired(&mut b, "v", a.peer).await;
    for _ in 0..5 {
        let peers = b.join("v", 8).await;
        assert_eq!(peers, vec![a.peer], "only the genuine member");
    }
    assert!(
        two.metric(r#"tracker_directory_skipped_total{reason="unsigned"}"#)
            .await
            >= 1.0
    );
    assert!(
        two.metric(r#"tracker_directory_skipped_total{reason="bad_signature"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_draining_tracker_withdraws_its_members_and_is_gone_for_the_others_once_it_exits() {
    let redis = RedisServer::start();
    let mut config = redis_config(&redis.url());
    config.drain.reconnect_window_ms = 500;
    config.drain.close_grace_ms = 500;
    let (mut one, two) = two_trackers(config).await;
    let (a, mut b) = paired(&one, &two).await;
    let members_of = |instance: InstanceId| {
        redis
            .command(&["ZRANGE", "st:swarm:{v}", "0", "-1"])
            .lines()
            .filter(|m| {
                PeerId::parse(&m[..22.min(m.len())]).is_some_and(|p| p.instance() == instance)
            })
            .count()
    };
    assert_eq!(members_of(a.instance), 1);
    let (status, body) = one.admin_request("POST", "/admin/drain").await;
    assert!((200..300).contains(&status), "drain: {status} {body}");
    // Withdrawn as the drain starts, while its viewer is still connected.
    let deadline = Deadline::new("members withdrawn");
    while members_of(a.instance) > 0 {
        deadline.tick().await;
    }
    one.exited_within(testkit::LONG_DEADLINE)
        .await
        .expect("the drained tracker's run");
    // Its heartbeat went with it: a signal to its viewer is refused at once.
    // (Within one read of the heartbeats, not its TTL.)
    let deadline = Deadline::new("the exited instance refused");
    loop {
        b.send(&offer("v", a.peer, "late", "sdp")).await;
        let replies = b.sync().await;
        if replies
            .iter()
            .any(|m| matches!(m, ServerMsg::Error { code, .. } if code.as_str() == "unknown_peer"))
        {
            break;
        }
        deadline.tick().await;
    }
    // The refusal may come back from Redis (nobody subscribed, section 6) before this
    // tracker's next read of the heartbeats; from that read on, joins don't hand it out.
    let deadline = Deadline::new("the exited instance's viewer no longer handed out");
    while b.join("v", 8).await.contains(&a.peer) {
        deadline.tick().await;
    }
}

#[tokio::test]
async fn a_tracker_that_cannot_receive_stops_advertising_its_viewers_until_it_can() {
    let redis = RedisServer::start();
    let config = redis_config(&redis.url());
    let (one, two) = two_trackers(config).await;
    let (a, mut b) = paired(&one, &two).await;
    // Take away `one`'s right to its relay channel: Redis drops its subscription and refuses
    // the next, while its command link (and so its members in Redis) stays.
    let two_channel = tracker::relay_channel_name("st", b.instance);
    redis.command(&[
        "ACL",
        "SETUSER",
        "default",
        "resetchannels",
        &format!("&{two_channel}"),
    ]);
    one.wait_metric("tracker_redis_subscribed", 0.0).await;
    assert_eq!(one.metric("tracker_redis_up").await, 1.0);
    // `two` stops handing out `a` and refuses signals to it: they would be lost.
    let deadline = Deadline::new("one's viewers no longer advertised");
    loop {
        b.send(&offer("v", a.peer, "lost", "sdp")).await;
        let refused =
            b.sync().await.iter().any(
                |m| matches!(m, ServerMsg::Error { code, .. } if code.as_str() == "unknown_peer"),
            );
        if refused {
            break;
        }
        deadline.tick().await;
    }
    let mut c = Client::connect(&two, Format::Json).await;
    assert!(c.join("v", 8).await.iter().all(|p| *p != a.peer));
    assert!(b.join("v", 8).await.iter().all(|p| *p != a.peer));
    // Its subscription back, it is advertised again.
    redis.command(&["ACL", "SETUSER", "default", "allchannels"]);
    ready(&one).await;
    join_until_paired(&mut b, "v", a.peer).await;
}

#[tokio::test]
async fn on_a_redis_cluster_queued_writes_refreshes_and_the_withdrawal_reach_every_slot() {
    let cluster = testkit::redis::RedisCluster::start(3);
    let mut config = test_config();
    config.redis.cluster = cluster.urls();
    // Refreshed every second: the refresh's per-key calls run during the test.
    config.redis.membership_ttl_secs = 30;
    config.redis.refresh_interval_secs = 1;
    config.drain.reconnect_window_ms = 500;
    config.drain.close_grace_ms = 500;
    let (mut one, two) = two_trackers(config).await;
    // Swarms in different slots; in each, a second viewer whose peer is local: its
    // registration goes through the writer's queue, several swarms in one batch.
    let swarms: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
    let mut firsts = Vec::new();
    for s in &swarms {
        let mut a = Client::connect(&one, Format::Json).await;
        a.join(s, 8).await;
        firsts.push(a);
    }
    let mut seconds = Vec::new();
    for (s, a) in swarms.iter().zip(&firsts) {
        let mut a2 = Client::connect(&one, Format::Json).await;
        assert_eq!(a2.join(s, 1).await, vec![a.peer]);
        seconds.push(a2);
    }
    let mut b = Client::connect(&two, Format::Json).await;
    for (i, s) in swarms.iter().enumerate() {
        let deadline = Deadline::new("both members of one found from two");
        loop {
            let peers = b.join(s, 8).await;
            if peers.contains(&firsts[i].peer) && peers.contains(&seconds[i].peer) {
                break;
            }
            deadline.tick().await;
        }
    }
    assert_eq!(
        one.metric("tracker_membership_writes_dropped_total{reason=\"failed\"}")
            .await,
        0.0
    );
    let (status, body) = one.admin_request("POST", "/admin/drain").await;
    assert!((200..300).contains(&status), "drain: {status} {body}");
    let one_instance = firsts[0].instance;
    let deadline = Deadline::new("members withdrawn from every slot");
    loop {
        let left: usize = swarms
            .iter()
            .map(|s| {
                cluster
                    .cli(&["ZRANGE", &format!("st:swarm:{{{s}}}"), "0", "-1"])
                    .lines()
                    .filter_map(|m| PeerId::parse(m.split('.').next().unwrap_or("")))
                    .filter(|p| p.instance() == one_instance)
                    .count()
            })
            .sum();
        if left == 0 {
            break;
        }
        deadline.tick().await;
    }
    one.exited_within(testkit::LONG_DEADLINE)
        .await
        .expect("the drained tracker's run");
}
