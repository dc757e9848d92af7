//! The front end's per-source limits (issue 14, item 1) on a real haproxy rendered from
//! haproxy/haproxy.cfg.tmpl: one source (127.0.0.2, ...: all loopback on Linux) over its cap of
//! connections, its connection rate or its upgrade rate is refused while a viewer from another
//! source still connects and joins. And the descriptor budgets of deploy/systemd, the tracker's
//! example config and haproxy/haproxy.cfg agree.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::net::IpAddr;
use std::path::Path;

use testkit::haproxy::{Haproxy, Options, Routing};
use testkit::native::{Client, Refused};
use testkit::tracker::TestServer;
use tracker::config::Config;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A tracker behind a haproxy with these per-source limits.
async fn front(options: Options) -> (TestServer, Haproxy) {
    let server = TestServer::start().await;
    let proxy = Haproxy::start(&[server.addr], &options);
    proxy.wait_all_up();
    (server, proxy)
}

/// HAProxy's entry for `source` in the viewers' table (`show table viewers`).
fn table_entry(proxy: &Haproxy, source: &str) -> String {
    let dump = proxy.runtime("show table viewers");
    dump.lines()
        .find(|l| l.contains(&format!("key=::ffff:{source} ")))
        .unwrap_or_else(|| panic!("no entry for {source}:\n{dump}"))
        .to_string()
}

// Multi-threaded: starting and polling haproxy blocks the test's thread a moment, and the
// in-process tracker's future must run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_over_its_connection_cap_is_refused_while_another_connects_and_joins() {
    let options = Options {
        src_max_conn: 4,
        ..Options::new(Routing::LeastConn)
    };
    let (_server, proxy) = front(options).await;
    let url = proxy.ws_url();
    let attacker = ip("127.0.0.2");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            Client::connect_from(attacker, &url)
                .await
                .expect("under the cap"),
        );
    }
    for _ in 0..3 {
        match Client::connect_from(attacker, &url).await {
            Err(Refused::Closed(_)) => {}
            Err(other) => panic!("expected the connection cut, got {other:?}"),
            Ok(_) => panic!("a fifth connection from one source got through"),
        }
    }
    assert!(table_entry(&proxy, "127.0.0.2").contains("conn_cur=4"));
    // Another source: connects and joins, and is paired with the attacker's viewers.
    let mut viewer = Client::connect_from(ip("127.0.0.3"), &url)
        .await
        .expect("another source");
    held[0].join("v", 4).await;
    let peers = viewer.join("v", 4).await;
    assert_eq!(peers, vec![held[0].peer]);
    // The attacker's held sockets still work; one gone, one more may come.
    held.pop().unwrap().close().await;
    testkit::eventually("the attacker's slot freed", || async {
        Client::connect_from(attacker, &url).await.ok()
    })
    .await;
}

/// `attacker` connects `rate` times (closing each) within the period, then once more: how that
/// last one is refused. Then a viewer from `other` connects and joins.
async fn over_the_rate(proxy: &Haproxy, rate: u32, attacker: &str, other: &str) -> Refused {
    let url = proxy.ws_url();
    for _ in 0..rate {
        Client::connect_from(ip(attacker), &url)
            .await
            .expect("under the rate")
            .close()
            .await;
    }
    let refused = match Client::connect_from(ip(attacker), &url).await {
        Err(refused) => refused,
        Ok(_) => panic!("one more than the rate within the period got through"),
    };
    let mut viewer = Client::connect_from(ip(other), &url)
        .await
        .expect("another source");
    viewer.join("v", 4).await;
    refused
}

// Multi-threaded: starting and polling haproxy blocks the test's thread a moment, and the
// in-process tracker's future must run meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_over_its_connection_rate_is_refused_while_another_connects() {
    let options = Options {
        src_conn_rate: 3,
        // Long enough that a loaded machine can't spread three connections over it.
        src_rate_period: "60s",
        ..Options::new(Routing::LeastConn)
    };
    let (_server, proxy) = front(options).await;
    match over_the_rate(&proxy, 3, "127.0.0.4", "127.0.0.5").await {
        Refused::Closed(_) => {}
        other => panic!("expected the connection cut, got {other:?}"),
    }
}

// Multi-threaded: as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_over_its_upgrade_rate_gets_429_while_another_connects() {
    let options = Options {
        src_upgrade_rate: 3,
        src_rate_period: "60s",
        ..Options::new(Routing::LeastConn)
    };
    let (_server, proxy) = front(options).await;
    match over_the_rate(&proxy, 3, "127.0.0.6", "127.0.0.7").await {
        Refused::Status(429) => {}
        other => panic!("expected 429, got {other:?}"),
    }
    assert!(
        proxy
            .runtime("show table per_source_upgrades")
            .contains("key=::ffff:127.0.0.6 "),
        "upgrades counted per source"
    );
}

/// The value of `key=` on the one line of `text` that starts with `key=` (a systemd unit).
fn unit_value(text: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .collect();
    assert_eq!(lines.len(), 1, "{key} set once");
    lines[0].trim().parse().expect("a number")
}

/// Every `maxconn N` of haproxy/haproxy.cfg, in order.
fn maxconns(cfg: &str) -> Vec<u64> {
    cfg.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            while let Some(w) = words.next() {
                if w == "maxconn" {
                    return words.next()?.parse().ok();
                }
            }
            None
        })
        .collect()
}

/// The descriptor budgets agree: the tracker's unit gives it room for `max_connections` (and
/// its reserve) and not much more, HAProxy sends a tracker a few hundred fewer than that, and
/// HAProxy's own maxconn is what its unit's descriptor limit allows.
#[test]
fn limit_nofile_max_connections_and_haproxy_maxconn_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    let config = Config::from_toml(&read("config/tracker.example.toml")).expect("example config");
    let max = config.limits.max_connections as u64;
    let reserve = config.server.reserve_connections as u64;
    let unit = read("deploy/systemd/swarmtrack-tracker.service");
    let nofile = unit_value(&unit, "LimitNOFILE");
    // Room for every connection, the reserve, and ~200 of the process's own (listeners per
    // worker, Redis links, the accept loop's reserve descriptor, logs).
    assert!(
        nofile >= max + reserve + 200,
        "LimitNOFILE={nofile} leaves no room for max_connections={max} + reserve {reserve} + 200"
    );
    assert!(
        nofile <= max + reserve + 4000,
        "LimitNOFILE={nofile} is far above max_connections={max}: raise max_connections"
    );
    for key in ["MemoryMax", "TasksMax"] {
        assert!(
            unit.lines().any(|l| l.starts_with(&format!("{key}="))),
            "{key}"
        );
    }
    assert!(
        unit.contains("SystemCallFilter=@system-service"),
        "SystemCallFilter"
    );

    let cfg = read("haproxy/haproxy.cfg");
    let m = maxconns(&cfg);
    // global, front end, default-server
    assert_eq!(m.len(), 3, "{m:?}");
    let (global, frontend, server) = (m[0], m[1], m[2]);
    assert_eq!(global, frontend);
    assert!(
        server < max && max - server <= 1000,
        "HAProxy's per-server maxconn {server} must be a few hundred below max_connections {max}"
    );
    let drop_in = read("deploy/systemd/haproxy.service.d/swarmtrack.conf");
    let haproxy_nofile = unit_value(&drop_in, "LimitNOFILE");
    assert_eq!(
        global,
        (haproxy_nofile - 200) / 2,
        "global maxconn = (HAProxy's LimitNOFILE - 200) / 2"
    );
    // The runtime socket: owner and mode set, and the autoscaler's unit can reach it.
    assert!(
        cfg.contains("stats socket /run/haproxy/admin.sock user haproxy group haproxy mode 660"),
        "runtime socket owner and mode"
    );
    let autoscaler = read("deploy/systemd/swarmtrack-autoscaler.service");
    assert!(autoscaler.contains("SupplementaryGroups=haproxy"));
}
