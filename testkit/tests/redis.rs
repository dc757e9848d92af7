//! The Redis harness itself: real servers and a real cluster start, stop, restart and move
//! slots the way the tracker's Redis tests expect.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::fs;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use testkit::redis::{RedisCluster, RedisServer, Reply, RespConnection, SLOTS};

#[test]
fn server_answers_dies_and_restarts_on_the_same_port() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis.command(&["PING"]), "PONG");
    assert_eq!(redis.command(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.command(&["GET", "k"]), "v");
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "v");
    assert_eq!(redis.command(&["CONFIG", "GET", "save"]), "save\n");

    redis.kill();
    assert!(!redis.is_running());
    let err = redis
        .try_command(&["PING"])
        .expect_err("killed server answered");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.command(&["PING"]), "PONG");
    // Nothing is persisted, so a restart is a clean slate.
    assert_eq!(redis.try_command(&["GET", "k"]).unwrap(), Reply::Nil);
}

#[test]
fn restart_waits_for_its_port_to_be_released() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    redis.kill();
    let squatter = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let log = redis.dir().join("redis.log");
    thread::scope(|s| {
        // Give the port back once redis has failed to bind it at least once.
        s.spawn(move || {
            let deadline = Instant::now() + testkit::DEADLINE;
            while !fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Address already in use")
            {
                assert!(Instant::now() < deadline, "restart never tried the port");
                thread::sleep(Duration::from_millis(10));
            }
            drop(squatter);
        });
        redis.restart();
    });
    assert_eq!(redis.port(), port);
    assert_eq!(redis.command(&["PING"]), "PONG");
}

#[test]
fn drop_stops_the_server_and_removes_its_directory() {
    let redis = RedisServer::start();
    let (port, dir) = (redis.port(), redis.dir().to_path_buf());
    assert!(dir.join("redis.log").exists());
    assert!(redis.log().contains("Ready to accept connections"));
    drop(redis);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let err = RespConnection::connect(port).err();
    assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::ConnectionRefused));
}

#[test]
fn servers_started_at_once_get_their_own_ports() {
    let servers: Vec<RedisServer> = thread::scope(|s| {
        let handles: Vec<_> = (0..6).map(|_| s.spawn(RedisServer::start)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), servers.len());
    for (i, redis) in servers.iter().enumerate() {
        redis.command(&["SET", "who", &i.to_string()]);
    }
    for (i, redis) in servers.iter().enumerate() {
        assert_eq!(redis.command(&["GET", "who"]), i.to_string());
    }
}

#[test]
fn resp_connection_reads_every_reply_type() {
    let redis = RedisServer::start();
    let mut conn = redis.connect().unwrap();
    assert_eq!(
        conn.call(&["SET", "a", "x y\r\nz"]).unwrap(),
        Reply::Status("OK".into())
    );
    assert_eq!(
        conn.call(&["GET", "a"]).unwrap(),
        Reply::Bulk("x y\r\nz".into())
    );
    assert_eq!(conn.call(&["GET", "missing"]).unwrap(), Reply::Nil);
    assert_eq!(conn.call(&["INCR", "n"]).unwrap(), Reply::Integer(1));
    assert_eq!(
        conn.call(&["SET", "empty", ""]).unwrap(),
        Reply::Status("OK".into())
    );
    assert_eq!(
        conn.call(&["GET", "empty"]).unwrap(),
        Reply::Bulk(String::new())
    );
    let Reply::Error(e) = conn.call(&["INCR", "a"]).unwrap() else {
        panic!("INCR of text succeeded");
    };
    assert!(e.starts_with("ERR"), "{e}");
    let keys = conn.call(&["KEYS", "*"]).unwrap();
    let mut names: Vec<String> = keys.items().iter().map(Reply::to_raw).collect();
    names.sort();
    assert_eq!(names, ["a", "empty", "n"]);
}

#[test]
fn cluster_starts_with_every_slot_assigned() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3);
    eprintln!("3-node cluster ready in {:?}", started.elapsed());

    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    for (i, url) in urls.iter().enumerate() {
        let node = cluster.node(i);
        assert_eq!(*url, node.url());
        let info = node.command(&["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(
            info.contains(&format!("cluster_slots_assigned:{SLOTS}")),
            "{info}"
        );
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
        // Sharded pub/sub, which the tracker relies on, needs Redis 7.
        let version = node.command(&["INFO", "server"]);
        let major = version
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
        assert!(major >= Some(7), "{version}");
    }
    // Every node owns a share of the slots.
    let owners: Vec<usize> = (0..SLOTS as u16)
        .step_by(97)
        .map(|s| cluster.owner_of(s))
        .collect();
    for i in 0..cluster.node_count() {
        assert!(owners.contains(&i), "node {i} owns nothing");
    }
}

#[test]
fn migrate_slot_moves_the_slot_and_its_keys() {
    let cluster = RedisCluster::start(3);
    let key = "swarm:{harness}";
    let slot = cluster.slot_of(key);
    let from = cluster.owner_of(slot);
    let to = (from + 1) % cluster.node_count();
    cluster.cli(&["SET", key, "still-here"]);
    cluster.cli(&["SET", "other:{harness}", "too"]);

    cluster.migrate_slot(slot, to);

    // Every node's own view (CLUSTER NODES) names the new owner.
    for i in 0..cluster.node_count() {
        let nodes = cluster.node(i).command(&["CLUSTER", "NODES"]);
        let line = nodes
            .lines()
            .find(|l| l.starts_with(cluster.node_id(to)))
            .unwrap_or_else(|| panic!("node {to} missing from {nodes}"));
        assert!(
            owns(line, slot),
            "node {i} does not see {slot} on node {to}: {line}"
        );
        assert_eq!(cluster.owner_seen_by(slot, i), Some(to));
    }
    assert_eq!(cluster.cli(&["GET", key]).trim(), "still-here");
    assert_eq!(cluster.cli(&["GET", "other:{harness}"]).trim(), "too");
    assert_eq!(cluster.node(to).command(&["GET", key]), "still-here");
    let moved = cluster.node(from).try_command(&["GET", key]).unwrap();
    assert_eq!(
        moved,
        Reply::Error(format!(
            "MOVED {slot} 127.0.0.1:{}",
            cluster.node(to).port()
        ))
    );
    // Moving it to where it is changes nothing.
    cluster.migrate_slot(slot, to);
    assert_eq!(cluster.owner_of(slot), to);
}

#[test]
fn cluster_node_restarts_with_its_slots() {
    let mut cluster = RedisCluster::start(3);
    let key = "restart:{harness}";
    let slot = cluster.slot_of(key);
    let owner = cluster.owner_of(slot);
    let id = cluster.node_id(owner).to_string();
    cluster.cli(&["SET", key, "v"]);

    cluster.node_mut(owner).kill();
    cluster.node_mut(owner).restart();
    cluster.wait_healthy();

    assert_eq!(cluster.node(owner).command(&["CLUSTER", "MYID"]), id);
    assert_eq!(cluster.owner_of(slot), owner);
    // Nothing is persisted: the node is back, its keys are not.
    assert_eq!(cluster.cli(&["GET", key]).trim(), "");
}

/// What the tracker's resubscription logic reacts to: a sharded subscriber is told to go when its
/// channel's slot leaves the node it subscribed on.
#[test]
fn sharded_subscriber_is_unsubscribed_when_its_slot_moves() {
    let cluster = RedisCluster::start(3);
    let channel = "relay:{swarm-1}";
    let slot = cluster.slot_of(channel);
    let from = cluster.owner_of(slot);
    let to = (from + 2) % cluster.node_count();
    let mut sub = cluster.node(from).connect().unwrap();
    let confirm = sub.call(&["SSUBSCRIBE", channel]).unwrap();
    assert_eq!(confirm.to_raw(), format!("ssubscribe\n{channel}\n1"));
    let counted = cluster
        .node(from)
        .command(&["PUBSUB", "SHARDNUMSUB", channel]);
    assert_eq!(counted, format!("{channel}\n1"));

    cluster.migrate_slot(slot, to);

    let gone = sub.read().unwrap();
    assert_eq!(gone.to_raw(), format!("sunsubscribe\n{channel}\n0"));
    let counted = cluster
        .node(from)
        .command(&["PUBSUB", "SHARDNUMSUB", channel]);
    assert_eq!(counted, format!("{channel}\n0"));
}

/// Whether a `CLUSTER NODES` line lists `slot` among its slots ("0-5460", "42", ...).
fn owns(line: &str, slot: u16) -> bool {
    line.split(' ').skip(8).any(|range| {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        match (lo.parse::<u16>(), hi.parse::<u16>()) {
            (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
            _ => false,
        }
    })
}
