//! A fleet behind HAProxy: a real `haproxy` rendered from haproxy/haproxy.cfg.tmpl, a real
//! `redis-server` and three tracker processes behave as one tracker to viewers. Also checks the
//! template itself: the committed example is the template rendered, and haproxy accepts it.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::haproxy::{self, Haproxy, Options, Routing};
use testkit::http::{metric_value, request as http};
use testkit::native::{Client, exchange_across, join_until_paired, offer};
use testkit::redis::RedisServer;
use testkit::tracker::{ADMIN_TOKEN, TrackerProcess};
use testkit::{Deadline, eventually};
use tracker::protocol::{ClientMsg, Format, InstanceId, PeerId, ServerMsg, Signal};

/// Three trackers on one Redis behind one haproxy.
struct Fleet {
    proxy: Haproxy,
    trackers: Vec<TrackerProcess>,
    /// `instances[i]` is the instance id of `trackers[i]`, HAProxy server `t{i+1}`.
    instances: Vec<InstanceId>,
    _redis: RedisServer,
}

impl Fleet {
    /// Starts Redis, three trackers with short timers and haproxy, and waits until every
    /// tracker is on Redis and every server is UP in haproxy.
    async fn start(options: Options) -> Self {
        let redis = RedisServer::start();
        let url = redis.url();
        let mut trackers = Vec::new();
        for _ in 0..3 {
            trackers.push(
                TrackerProcess::spawn(
                    &["--redis-url", &url],
                    &[
                        ("TRACKER_ADMIN_TOKEN", ADMIN_TOKEN),
                        ("TRACKER__REDIS__MEMBERSHIP_TTL_SECS", "3"),
                        ("TRACKER__REDIS__REFRESH_INTERVAL_SECS", "1"),
                        ("TRACKER__REDIS__HEALTH_CHECK_MS", "200"),
                        ("TRACKER__DRAIN__RECONNECT_WINDOW_MS", "200"),
                        ("TRACKER__DRAIN__CLOSE_GRACE_MS", "5000"),
                        ("TRACKER__DRAIN__DEADLINE_SECS", "20"),
                    ],
                )
                .await,
            );
        }
        let mut instances = Vec::new();
        for t in &trackers {
            redis_ready(t.admin).await;
            let probe = Client::connect_url(&t.ws_url(), Format::Json).await;
            instances.push(probe.instance);
            probe.close().await;
        }
        let addrs: Vec<SocketAddr> = trackers.iter().map(|t| t.addr).collect();
        let proxy = Haproxy::start(&addrs, &options);
        proxy.wait_all_up();
        Self {
            proxy,
            trackers,
            instances,
            _redis: redis,
        }
    }

    /// A viewer through HAProxy.
    async fn connect(&self) -> Client {
        Client::connect_url(&self.proxy.ws_url(), Format::Json).await
    }

    /// A viewer through HAProxy with the swarm as routing key.
    async fn connect_swarm(&self, swarm: &str) -> Client {
        Client::connect_url(&self.proxy.swarm_url(swarm), Format::Json).await
    }

    /// Index of the tracker holding this instance.
    fn index_of(&self, instance: InstanceId) -> usize {
        self.instances
            .iter()
            .position(|i| *i == instance)
            .expect("a viewer on an unknown instance")
    }

    /// The Prometheus text of tracker `i`.
    async fn metrics(&self, i: usize) -> String {
        let (status, body) = http(self.trackers[i].admin, "GET", "/metrics", &[]).await;
        assert_eq!(status, 200, "metrics: {body}");
        body
    }
}

/// Waits until a tracker process has both Redis links up.
async fn redis_ready(addr: SocketAddr) {
    eventually("tracker on Redis", || async move {
        let (_, body) = http(addr, "GET", "/metrics", &[]).await;
        (metric_value(&body, "tracker_redis_up") == 1.0
            && metric_value(&body, "tracker_redis_subscribed") == 1.0)
            .then_some(())
    })
    .await;
}

/// The sum of every sample of a metric family (all label sets).
fn family_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Signals a tracker handed to its viewers by `path` (`local` or `remote`), all kinds.
fn relayed(text: &str, path: &str) -> f64 {
    let label = format!(r#"path="{path}""#);
    text.lines()
        .filter(|l| l.starts_with("tracker_messages_relayed_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// HAProxy server name of tracker `i`.
fn server(i: usize) -> String {
    format!("t{}", i + 1)
}

/// Sends `n` offers with sids `{tag}-0..n` from `from` to `to` and checks that all arrive, in
/// order, with nothing else in between.
async fn relay_all(from: &mut Client, to: &mut Client, swarm: &str, tag: &str, n: usize) {
    for k in 0..n {
        from.send(&offer(swarm, to.peer, &format!("{tag}-{k}"), "v=0"))
            .await;
    }
    for k in 0..n {
        match to.recv().await {
            ServerMsg::Offer(s) => {
                assert_eq!((s.from, &*s.sid), (from.peer, &*format!("{tag}-{k}")));
            }
            m => panic!("expected offer {tag}-{k}, got {m:?}"),
        }
    }
    assert!(from.sync().await.is_empty(), "no error for the sender");
}

#[test]
fn the_example_config_is_the_template_rendered_and_haproxy_accepts_it() {
    let servers = ["10.0.0.11:8000", "10.0.0.12:8000", "10.0.0.13:8000"]
        .map(|s| format!("    server t{} {s}", &s[8..9]));
    let values = HashMap::from([
        // From the descriptor budget of deploy/systemd's haproxy drop-in (checked below).
        ("GLOBAL_MAXCONN", "100000".to_string()),
        ("RUNTIME_SOCKET", "/run/haproxy/admin.sock".to_string()),
        ("SOCKET_OWNER", "user haproxy group haproxy ".to_string()),
        ("FRONT_BIND", ":80".to_string()),
        ("RUN_AS", String::new()),
        ("TLS", String::new()),
        ("TLS_BIND", ":443".to_string()),
        ("TLS_CERT", "/etc/haproxy/certs/swarmtrack.pem".to_string()),
        ("LEASTCONN", String::new()),
        ("SWARM", "# ".to_string()),
        ("HASH_BALANCE_FACTOR", "150".to_string()),
        ("CHECK_INTER", "2s".to_string()),
        ("CHECK_FASTINTER", "500ms".to_string()),
        ("CHECK_FALL", "2".to_string()),
        ("CHECK_RISE", "3".to_string()),
        ("SLOWSTART", "60s".to_string()),
        ("SERVER_MAXCONN", "17500".to_string()),
        ("SERVERS", servers.join("\n")),
        ("STATS_BIND", "10.0.0.10:8404".to_string()),
        ("SRC_TABLE_SIZE", "200k".to_string()),
        ("SRC_EXPIRE", "60s".to_string()),
        ("SRC_RATE_PERIOD", "10s".to_string()),
        ("SRC_MAX_CONN", "100".to_string()),
        ("SRC_CONN_RATE", "60".to_string()),
        ("SRC_UPGRADE_RATE", "30".to_string()),
    ]);
    let rendered = haproxy::render(&values);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../haproxy/haproxy.cfg");
    if std::env::var_os("SWARMTRACK_BLESS").is_some() {
        std::fs::write(&example, &rendered).expect("write haproxy/haproxy.cfg");
    }
    let committed = std::fs::read_to_string(&example).expect("haproxy/haproxy.cfg");
    assert!(
        committed == rendered,
        "haproxy/haproxy.cfg is not the template rendered: run this test with SWARMTRACK_BLESS=1"
    );

    // haproxy -c on the example and on both routings with TLS, with a real certificate.
    let tmp = testkit::process::temp_dir("haproxy-check");
    let dir = tmp.path();
    let (key, crt, pem) = (dir.join("k"), dir.join("c"), dir.join("tls.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl (scripts/test installs it)");
    assert!(status.status.success(), "openssl: {status:?}");
    let both = [std::fs::read(&crt).unwrap(), std::fs::read(&key).unwrap()].concat();
    std::fs::write(&pem, both).unwrap();
    let mut configs =
        vec![rendered.replace("/etc/haproxy/certs/swarmtrack.pem", pem.to_str().unwrap())];
    for routing in [Routing::LeastConn, Routing::Swarm] {
        let front: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut v = haproxy::values(
            &Options::new(routing),
            &[front, front],
            front,
            front,
            &dir.join("s"),
        );
        v.insert("TLS", String::new());
        v.insert("TLS_BIND", "127.0.0.1:2".to_string());
        v.insert("TLS_CERT", pem.display().to_string());
        configs.push(haproxy::render(&v));
    }
    for (i, config) in configs.iter().enumerate() {
        let path = dir.join(format!("{i}.cfg"));
        std::fs::write(&path, config).unwrap();
        let out = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("haproxy (scripts/test installs it)");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "haproxy -c rejected config {i}: {text}\n{config}"
        );
        assert!(
            !text.contains("WARNING"),
            "haproxy -c warns on config {i}: {text}"
        );
    }
}

#[tokio::test]
async fn viewers_through_haproxy_land_on_every_instance_and_signal_across() {
    let fleet = Fleet::start(Options::new(Routing::LeastConn)).await;
    let mut viewers = Vec::new();
    for _ in 0..3 {
        viewers.push(fleet.connect().await);
    }
    let on: HashSet<InstanceId> = viewers.iter().map(|v| v.instance).collect();
    assert_eq!(
        on,
        fleet.instances.iter().copied().collect(),
        "one per instance"
    );
    for s in fleet.proxy.servers() {
        assert_eq!(s.sessions, 1, "leastconn: one session on {}", s.name);
    }

    viewers[0].join("v", 8).await;
    let first = viewers[0].peer;
    join_until_paired(&mut viewers[1], "v", first).await;
    join_until_paired(&mut viewers[2], "v", first).await;
    // Each signals only peers it was handed (a signal to an instance not yet known live, e.g.
    // one that started after this one last read the heartbeats, is refused as unknown_peer).
    let third = viewers[2].peer;
    join_until_paired(&mut viewers[0], "v", third).await;
    for (a, b) in [(0, 1), (1, 2), (2, 0)] {
        let [x, y] = viewers.get_disjoint_mut([a, b]).expect("two viewers");
        exchange_across(x, y, "v").await;
    }
    let mut remote = 0.0;
    for i in 0..3 {
        remote += relayed(&fleet.metrics(i).await, "remote");
    }
    assert!(remote >= 9.0, "every signal crossed instances: {remote}");
}

#[tokio::test]
async fn webtorrent_peers_through_haproxy_reach_each_other_on_every_instance() {
    use testkit::webtorrent::{WtClient, announce, answer, id};
    let fleet = Fleet::start(Options::new(Routing::LeastConn)).await;
    let ih = id('f', 1);
    // Six peers, two per instance (leastconn), on both WebTorrent paths.
    let mut peers = Vec::new();
    for n in 0..6u32 {
        let path = if n % 2 == 0 { "announce" } else { "" };
        let mut c = WtClient::connect(&format!("ws://{}/{path}", fleet.proxy.front)).await;
        c.send(&announce(&ih, &id('p', n), &[])).await;
        assert_eq!(c.recv().await["action"], "announce");
        peers.push(c);
    }
    for s in fleet.proxy.servers() {
        assert_eq!(s.sessions, 2, "leastconn: two sessions on {}", s.name);
    }
    // Peer 0 offers to all five others; the ones on other instances come from Redis once the
    // membership writes landed, and their offers may arrive a little later, so keep offering
    // (new ids each round) until each of the five has received one, from any round.
    let deadline = Deadline::new("offers to every other peer");
    let mut latest: HashMap<usize, String> = HashMap::new();
    let mut per_round: HashMap<(usize, u32), u32> = HashMap::new();
    let mut round = 0u32;
    while latest.len() < 5 {
        round += 1;
        let offers: Vec<String> = (0..5).map(|k| id('o', round * 10 + k)).collect();
        peers[0].send(&announce(&ih, &id('p', 0), &offers)).await;
        peers[0].recv().await;
        for (n, c) in peers.iter_mut().enumerate().skip(1) {
            while let Some(o) = c.recv_within(Duration::from_millis(100)).await {
                let offer_id = o["offer_id"].as_str().expect("offer_id").to_string();
                let from_round = offer_id.trim_start_matches('o').parse::<u32>().expect("n") / 10;
                *per_round.entry((n, from_round)).or_default() += 1;
                latest.insert(n, offer_id);
            }
        }
        deadline.tick().await;
    }
    assert!(
        per_round.values().all(|&k| k == 1),
        "a peer got two offers of one announce: {per_round:?}"
    );
    let reached: Vec<(usize, String)> = latest.into_iter().collect();
    // Every answer comes back to peer 0, whichever instance it started on.
    for (n, offer_id) in &reached {
        peers[*n]
            .send(&answer(&ih, &id('p', *n as u32), &id('p', 0), offer_id))
            .await;
    }
    let mut answered = HashSet::new();
    let deadline = Deadline::new("every answer back to peer 0");
    while answered.len() < 5 {
        if deadline.passed() {
            // Say where the missing answers went before failing.
            let mut why = String::new();
            for (n, c) in peers.iter_mut().enumerate().skip(1) {
                while let Some(m) = c.recv_within(Duration::from_millis(50)).await {
                    why += &format!("peer {n} got {m}\n");
                }
            }
            for i in 0..3 {
                for line in fleet.metrics(i).await.lines() {
                    if (line.contains("dropped")
                        || line.contains("refused")
                        || line.contains("failures"))
                        && !line.starts_with('#')
                        && !line.ends_with(" 0")
                    {
                        why += &format!("tracker {i}: {line}\n");
                    }
                }
            }
            panic!("answered {answered:?} of {reached:?}:\n{why}");
        }
        if let Some(v) = peers[0].recv_within(Duration::from_millis(200)).await {
            assert!(v.get("answer").is_some(), "{v}");
            answered.insert(v["peer_id"].as_str().expect("peer_id").to_string());
        }
    }
    let mut remote = 0.0;
    for i in 0..3 {
        remote += relayed(&fleet.metrics(i).await, "remote");
    }
    assert!(
        remote >= 8.0,
        "offers and answers crossed instances: {remote}"
    );
}

#[tokio::test]
async fn a_killed_tracker_is_marked_down_and_its_viewers_are_paired_again_elsewhere() {
    let mut fleet = Fleet::start(Options::new(Routing::LeastConn)).await;
    let mut viewers = Vec::new();
    for _ in 0..6 {
        let mut v = fleet.connect().await;
        v.join("v", 8).await;
        viewers.push(v);
    }
    let victim = fleet.index_of(viewers[0].instance);
    let (mut orphans, survivors): (Vec<Client>, Vec<Client>) = viewers
        .into_iter()
        .partition(|v| fleet.index_of(v.instance) == victim);
    assert_eq!(
        (orphans.len(), survivors.len()),
        (2, 4),
        "leastconn: 2 per instance"
    );
    let mut anchor = survivors.into_iter().next().expect("a survivor");

    fleet.trackers[victim].kill();
    let took = fleet.proxy.wait_status(&server(victim), "DOWN");
    assert!(took < Duration::from_secs(3), "marked DOWN after {took:?}");

    for orphan in &mut orphans {
        orphan.expect_close().await;
    }
    for _ in orphans {
        let mut back = fleet.connect().await;
        assert_ne!(
            fleet.index_of(back.instance),
            victim,
            "not on the dead instance"
        );
        join_until_paired(&mut back, "v", anchor.peer).await;
        exchange_across(&mut back, &mut anchor, "v").await;
        exchange_across(&mut anchor, &mut back, "v").await;
    }
    // New viewers only land on the live instances.
    for _ in 0..4 {
        let v = fleet.connect().await;
        assert_ne!(fleet.index_of(v.instance), victim);
    }
    assert_eq!(fleet.proxy.server(&server(victim)).status, "DOWN");
}

#[tokio::test]
async fn a_drained_tracker_gets_no_new_viewers_and_its_viewers_move_without_loss() {
    let mut fleet = Fleet::start(Options::new(Routing::LeastConn)).await;
    let mut viewers = Vec::new();
    for _ in 0..6 {
        let mut v = fleet.connect().await;
        v.join("v", 8).await;
        viewers.push(v);
    }
    let drained = fleet.index_of(viewers[0].instance);
    let (movers, stayers): (Vec<Client>, Vec<Client>) = viewers
        .into_iter()
        .partition(|v| fleet.index_of(v.instance) == drained);
    assert_eq!(
        (movers.len(), stayers.len()),
        (2, 4),
        "leastconn: 2 per instance"
    );
    let mut stayers = stayers;

    // Keep HAProxy's check from noticing the drain for now: only the retry of a refused
    // upgrade can keep new viewers off the tracker.
    let name = server(drained);
    let reply = fleet
        .proxy
        .runtime(&format!("disable health trackers/{name}"));
    assert!(reply.trim().is_empty(), "{reply}");
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _) = http(
        fleet.trackers[drained].admin,
        "POST",
        "/admin/drain",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(status, 202);

    // Every viewer of the drained instance is told to reconnect; signaling still works until
    // it does.
    let mut movers = movers;
    for m in &mut movers {
        match m.recv().await {
            ServerMsg::Reconnect { after_ms } => assert!(after_ms <= 200),
            other => panic!("expected reconnect, got {other:?}"),
        }
        relay_all(&mut stayers[0], m, "v", "while-draining", 5).await;
    }

    // New viewers never land on it, even while HAProxy still routes to it: leastconn picks it
    // (it has the fewest viewers), the tracker refuses the upgrade with 503 and HAProxy retries
    // on another server.
    for _ in 0..6 {
        let v = fleet.connect().await;
        assert_ne!(
            fleet.index_of(v.instance),
            drained,
            "a new viewer on the drained one"
        );
        stayers.push(v);
    }
    let s = fleet.proxy.server(&name);
    assert!(
        s.redispatched >= 1,
        "the drained tracker was tried and left: {s:?}"
    );
    // With its check back, HAProxy marks it down.
    let reply = fleet
        .proxy
        .runtime(&format!("enable health trackers/{name}"));
    assert!(reply.trim().is_empty(), "{reply}");
    fleet.proxy.wait_status(&name, "DOWN");

    // The movers reconnect through HAProxy, land elsewhere and every signal gets through.
    for m in movers {
        m.close().await;
        let mut back = fleet.connect().await;
        assert_ne!(fleet.index_of(back.instance), drained, "moved elsewhere");
        join_until_paired(&mut back, "v", stayers[0].peer).await;
        let [anchor, other] = stayers.get_disjoint_mut([0, 1]).expect("two stayers");
        relay_all(anchor, &mut back, "v", "to-moved", 20).await;
        relay_all(&mut back, anchor, "v", "from-moved", 20).await;
        relay_all(&mut back, other, "v", "to-other", 20).await;
    }

    // With its viewers gone the drained tracker exits cleanly.
    assert_eq!(fleet.trackers[drained].exited().await, Some(0));
    for i in (0..3).filter(|i| *i != drained) {
        let text = fleet.metrics(i).await;
        for family in [
            "tracker_messages_dropped_total",
            "tracker_remote_dropped_total",
            "tracker_remote_inbound_dropped_total",
        ] {
            assert_eq!(family_sum(&text, family), 0.0, "{family} on tracker {i}");
        }
    }
}

#[tokio::test]
async fn swarm_affine_routing_keeps_most_of_a_swarm_on_one_instance() {
    const SWARMS: usize = 12;
    const PER_SWARM: usize = 5;
    let fleet = Fleet::start(Options::new(Routing::Swarm)).await;
    let names: Vec<String> = (0..SWARMS).map(|s| format!("video-{s}")).collect();
    let mut viewers: Vec<(usize, Client, Vec<PeerId>)> = Vec::new();
    // Interleaved, as viewers of many videos arrive.
    for _ in 0..PER_SWARM {
        for (s, name) in names.iter().enumerate() {
            let mut v = fleet.connect_swarm(name).await;
            let peers = v.join(name, 4).await;
            viewers.push((s, v, peers));
        }
    }
    let mut on_main = 0;
    let mut used = HashSet::new();
    for s in 0..SWARMS {
        let mut count: HashMap<InstanceId, usize> = HashMap::new();
        for (_, v, _) in viewers.iter().filter(|(vs, _, _)| *vs == s) {
            *count.entry(v.instance).or_default() += 1;
            used.insert(v.instance);
        }
        on_main += count.values().max().copied().unwrap_or(0);
    }
    let share = on_main as f64 / (SWARMS * PER_SWARM) as f64;
    assert!(
        share >= 0.8,
        "share of viewers on their swarm's main instance: {share}"
    );
    assert_eq!(used.len(), 3, "swarms spread over every instance");

    // Each viewer offers to the peers its join returned: local ones come first, so most
    // signals stay on their instance.
    let mut sent = 0.0;
    for (s, v, peers) in &mut viewers {
        for p in peers.iter().copied() {
            v.send(&ClientMsg::Offer(Signal {
                swarm: names[*s].as_str().into(),
                to: p,
                sid: "affine".into(),
                m: "v=0".into(),
            }))
            .await;
            sent += 1.0;
        }
    }
    let (local, remote) = eventually("every offer relayed", || async {
        let (mut local, mut remote) = (0.0, 0.0);
        for i in 0..3 {
            let text = fleet.metrics(i).await;
            local += relayed(&text, "local");
            remote += relayed(&text, "remote");
        }
        (local + remote >= sent).then_some((local, remote))
    })
    .await;
    let crossing = remote / (local + remote);
    eprintln!("swarm-affine: {share:.2} on the main instance, {crossing:.2} of offers crossed");
    assert!(
        crossing <= 0.25,
        "share of offers crossing instances: {crossing}"
    );
}

#[tokio::test]
async fn the_runtime_api_adds_drains_and_removes_a_tracker_in_both_routings() {
    for routing in [Routing::LeastConn, Routing::Swarm] {
        let redis = RedisServer::start();
        let url = redis.url();
        let one = TrackerProcess::spawn(&["--redis-url", &url], &[]).await;
        let two = TrackerProcess::spawn(&["--redis-url", &url], &[]).await;
        let options = Options::new(routing);
        let proxy = Haproxy::start(&[one.addr], &options);
        proxy.wait_all_up();

        // What an autoscaler does: every parameter again (dynamic servers don't inherit
        // default-server), then enable the server and its health check.
        let add = format!(
            "add server trackers/t2 {} check inter {} fastinter {} fall {} rise {} slowstart {} maxconn {}",
            two.addr,
            options.check_inter,
            options.check_fastinter,
            options.check_fall,
            options.check_rise,
            options.slowstart,
            options.server_maxconn
        );
        assert_eq!(
            proxy.runtime(&add).trim(),
            "New server registered.",
            "{routing:?}"
        );
        assert!(proxy.runtime("enable server trackers/t2").trim().is_empty());
        assert!(proxy.runtime("enable health trackers/t2").trim().is_empty());
        proxy.wait_status("t2", "UP");

        // Leastconn: a viewer kept on t1 sends the next to t2. Swarm: keys hash over both, and
        // the bounded load pushes new keys to t2 as t1 fills.
        let deadline = Deadline::new("a viewer on the added server");
        let mut keep = Vec::new();
        let mut on_two = loop {
            let key = format!("s{}", keep.len());
            let v = Client::connect_url(&proxy.swarm_url(&key), Format::Json).await;
            if proxy.server("t2").sessions == 1 {
                break v;
            }
            keep.push(v);
            deadline.tick().await;
        };

        // Drain in HAProxy: no new viewers; removal waits until the last session is gone.
        assert!(
            proxy
                .runtime("set server trackers/t2 state drain")
                .trim()
                .is_empty()
        );
        for k in 0..4 {
            let _v = Client::connect_url(&proxy.swarm_url(&format!("d{k}")), Format::Json).await;
            assert_eq!(
                proxy.server("t2").sessions,
                1,
                "no new viewer while draining"
            );
        }
        assert!(
            proxy
                .runtime("set server trackers/t2 state maint")
                .trim()
                .is_empty()
        );
        assert!(
            proxy
                .runtime("del server trackers/t2")
                .contains("still has connections"),
            "a server with viewers can't be deleted"
        );
        on_two.send(&ClientMsg::Ping).await;
        assert!(
            matches!(on_two.recv().await, ServerMsg::Pong),
            "its viewer stays"
        );
        on_two.close().await;
        let deadline = Deadline::new("server removed");
        while proxy.runtime("del server trackers/t2").trim() != "Server deleted." {
            deadline.tick().await;
        }
        assert_eq!(proxy.servers().len(), 1);
        drop(keep);
    }
}
