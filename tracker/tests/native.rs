//! The native protocol v1 end to end: a real tracker, real WebSocket clients, real SDP.

use testkit::eventually;
use testkit::fixtures::{CHROME_CANDIDATES, CHROME_OFFER_COMPLETE, FIREFOX_ANSWER_COMPLETE};
use testkit::http::{metric_value, request as http};
use testkit::native::{Client, Refused, connect_ws, offer};
use testkit::tracker::{ADMIN_TOKEN, TestServer, test_config};
use tokio_tungstenite::tungstenite::Message;
use tracker::config::Config;
use tracker::protocol::{Cands, ClientMsg, Format, PeerId, ServerMsg, Signal};

const OFFER_SDP: &str = CHROME_OFFER_COMPLETE;
const ANSWER_SDP: &str = FIREFOX_ANSWER_COMPLETE;

/// The trickled candidate strings of the Chrome capture.
fn candidates() -> Vec<String> {
    testkit::fixtures::candidates(CHROME_CANDIDATES)
}

fn answer<'a>(swarm: &'a str, to: PeerId, sid: &'a str, m: &'a str) -> ClientMsg<'a> {
    ClientMsg::Answer(Signal {
        swarm: swarm.into(),
        to,
        sid: sid.into(),
        m: m.into(),
    })
}

#[tokio::test]
async fn welcome_then_pairing_never_returns_the_viewer_itself() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, Format::Json).await;
    let ServerMsg::Welcome { peer, limits, .. } = &a.welcome else {
        unreachable!()
    };
    assert_eq!(peer.to_string().len(), 22);
    assert_eq!(limits.want, 16);

    assert!(a.join("video-1", 5).await.is_empty());
    let mut b = Client::connect(&server, Format::Json).await;
    assert_eq!(b.join("video-1", 5).await, vec![a.peer]);
    let mut c = Client::connect(&server, Format::MsgPack).await;
    let peers = c.join("video-1", 5).await;
    assert_eq!(peers.len(), 2);
    assert!(peers.contains(&a.peer) && peers.contains(&b.peer));
    assert_eq!(
        c.join("video-1", 1).await.len(),
        1,
        "want bounds the sample"
    );
    // Another swarm is separate.
    let mut d = Client::connect(&server, Format::Json).await;
    assert!(d.join("video-2", 5).await.is_empty());
    // Re-joining samples again without the viewer itself.
    let again = a.join("video-1", 16).await;
    assert_eq!(again.len(), 2);
    assert!(!again.contains(&a.peer));
    assert_ne!(a.peer, b.peer);
    assert_eq!(a.instance, b.instance);
}

async fn exchange(fa: Format, fb: Format) {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, fa).await;
    let mut b = Client::connect(&server, fb).await;
    a.join("v", 5).await;
    assert_eq!(b.join("v", 5).await, vec![a.peer]);

    // B offers to A with real Chrome SDP.
    b.send(&offer("v", a.peer, "n1", OFFER_SDP)).await;
    match a.recv().await {
        ServerMsg::Offer(s) => {
            assert_eq!(s.from, b.peer);
            assert_eq!(s.swarm, "v");
            assert_eq!(s.sid, "n1");
            assert_eq!(s.m, OFFER_SDP);
        }
        m => panic!("expected offer, got {m:?}"),
    }
    // A answers with real Firefox SDP.
    a.send(&answer("v", b.peer, "n1", ANSWER_SDP)).await;
    match b.recv().await {
        ServerMsg::Answer(s) => {
            assert_eq!((s.from, &*s.sid, &*s.m), (a.peer, "n1", ANSWER_SDP));
        }
        m => panic!("expected answer, got {m:?}"),
    }
    // Trickled candidates in one message, with end-of-candidates.
    let cands = candidates();
    assert!(cands.len() >= 2);
    b.send(&ClientMsg::Cands(Cands {
        swarm: "v".into(),
        to: a.peer,
        sid: "n1".into(),
        c: cands.iter().map(|c| c.as_str().into()).collect(),
        end: Some(true),
    }))
    .await;
    match a.recv().await {
        ServerMsg::Cands(c) => {
            assert_eq!(c.from, b.peer);
            assert_eq!(c.c.as_ref(), cands.as_slice());
            assert_eq!(c.end, Some(true));
        }
        m => panic!("expected cands, got {m:?}"),
    }
    // The counters are the worker's that wrote the signal; /metrics may be answered on the
    // other worker a moment before it counts.
    for kind in ["offer", "cands"] {
        server
            .wait_metric(
                &format!(r#"tracker_messages_relayed_total{{kind="{kind}",path="local"}}"#),
                1.0,
            )
            .await;
    }
}

#[tokio::test]
async fn offer_answer_cands_relay_in_json() {
    exchange(Format::Json, Format::Json).await;
}

#[tokio::test]
async fn offer_answer_cands_relay_in_msgpack() {
    exchange(Format::MsgPack, Format::MsgPack).await;
}

#[tokio::test]
async fn relay_between_json_and_msgpack_viewers() {
    exchange(Format::Json, Format::MsgPack).await;
}

#[tokio::test]
async fn the_server_answers_in_the_format_last_used() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, Format::Json).await;
    a.send_frame(Message::Binary(
        rmp_serde::to_vec_named(&ClientMsg::Ping)
            .expect("encode")
            .into(),
    ))
    .await;
    a.format = Format::MsgPack; // the harness now expects binary replies
    assert_eq!(a.recv().await, ServerMsg::Pong);
    a.format = Format::Json;
    a.send(&ClientMsg::Ping).await;
    assert_eq!(a.recv().await, ServerMsg::Pong);
}

#[tokio::test]
async fn from_is_set_by_the_server_and_cannot_be_forged() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, Format::Json).await;
    let mut b = Client::connect(&server, Format::Json).await;
    let c = Client::connect(&server, Format::Json).await;
    a.join("v", 5).await;
    b.join("v", 5).await;
    let forged = format!(
        r#"{{"t":"offer","swarm":"v","to":"{}","from":"{}","sid":"x","m":"sdp"}}"#,
        b.peer, c.peer
    );
    a.send_frame(Message::Text(forged.into())).await;
    match b.recv().await {
        ServerMsg::Offer(s) => assert_eq!(s.from, a.peer),
        m => panic!("expected offer, got {m:?}"),
    }
}

#[tokio::test]
async fn batches_both_ways() {
    let mut config = test_config();
    // One worker thread: all twenty are queued before B's session runs.
    config.server.workers = 1;
    let server = TestServer::with_config(config).await;
    let mut a = Client::connect(&server, Format::Json).await;
    let mut b = Client::connect(&server, Format::Json).await;
    b.join("v", 5).await;
    // One client frame: a join and twenty offers.
    let sids: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    let mut msgs = vec![ClientMsg::Join {
        swarm: "v".into(),
        want: 5,
    }];
    msgs.extend(sids.iter().map(|sid| offer("v", b.peer, sid, "sdp")));
    a.send(&ClientMsg::Batch { msgs }).await;
    assert_eq!(
        a.recv().await,
        ServerMsg::Peers {
            swarm: "v".into(),
            peers: vec![b.peer]
        }
    );
    // They arrive coalesced into a single batch frame, in order.
    match b.recv_frame().await {
        ServerMsg::Batch { msgs } => {
            let got: Vec<String> = msgs
                .into_iter()
                .map(|m| match m {
                    ServerMsg::Offer(s) => s.sid.into_owned(),
                    m => panic!("expected offers, got {m:?}"),
                })
                .collect();
            assert_eq!(got, sids);
        }
        m => panic!("expected one batch frame, got {m:?}"),
    }
    // The metrics are on the admin listener, another thread: the worker counts the frame
    // just after writing it, so the test may read a moment before.
    eventually("twenty messages in one frame counted", || async {
        let text = server.metrics().await;
        let frames = metric_value(&text, "tracker_frames_sent_total");
        let messages = metric_value(&text, "tracker_messages_sent_total");
        (messages >= frames + 19.0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn leave_removes_the_viewer_from_pairing_and_signaling() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, Format::Json).await;
    let mut b = Client::connect(&server, Format::Json).await;
    a.join("v", 5).await;
    a.send(&ClientMsg::Leave { swarm: "v".into() }).await;
    assert!(a.sync().await.is_empty());
    assert!(b.join("v", 5).await.is_empty());
    // A signal to a viewer that left the swarm is refused.
    b.send(&offer("v", a.peer, "s", "sdp")).await;
    assert_eq!(
        b.expect_error("unknown_peer").await.as_deref(),
        Some("offer")
    );
    // And A, no longer in the swarm, can't signal in it.
    a.send(&offer("v", b.peer, "s", "sdp")).await;
    assert_eq!(
        a.expect_error("not_in_swarm").await.as_deref(),
        Some("offer")
    );
    assert!(b.sync().await.is_empty(), "nothing was delivered to B");
    assert_eq!(
        server
            .metric(r#"tracker_messages_dropped_total{reason="target_not_in_swarm"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn disconnect_removes_the_viewer() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, Format::Json).await;
    let mut b = Client::connect(&server, Format::Json).await;
    a.join("v", 5).await;
    let gone = a.peer;
    // A clean closing handshake: the server echoes the close frame (browsers see 1005, not 1006).
    assert!(
        a.close_handshake().await,
        "the server echoes the close frame"
    );
    server.wait_metric("tracker_connections", 1.0).await;
    assert!(b.join("v", 5).await.is_empty());
    b.send(&offer("v", gone, "s", "sdp")).await;
    b.expect_error("unknown_peer").await;
    assert_eq!(server.metric("tracker_memberships").await, 1.0);
    assert_eq!(
        server
            .metric(r#"tracker_connections_closed_total{reason="client"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn viewers_count_at_their_first_join_by_origin() {
    let server = TestServer::start().await;
    // Connected but not joined: a connection, not a viewer.
    let idle = Client::connect(&server, Format::Json).await;
    let mut a = Client::connect(&server, Format::Json).await;
    a.join("v", 5).await;
    a.join("w", 5).await;
    let moved = format!("{}?reconnect=1", server.ws_url());
    let mut b = Client::connect_url(&moved, Format::Json).await;
    b.join("v", 5).await;
    let joined = |origin: &str| format!(r#"tracker_viewers_joined_total{{origin="{origin}"}}"#);
    assert_eq!(server.metric(&joined("new")).await, 1.0);
    assert_eq!(server.metric(&joined("reconnect")).await, 1.0);
    assert_eq!(server.metric("tracker_viewers").await, 2.0);
    assert_eq!(server.metric("tracker_connections").await, 3.0);
    b.close().await;
    server.wait_metric("tracker_viewers", 1.0).await;
    idle.close().await;
    server.wait_metric("tracker_connections", 1.0).await;
    assert_eq!(server.metric("tracker_viewers").await, 1.0);
    let bad = format!("{}?reconnect=yes", server.ws_url());
    assert!(matches!(
        connect_ws(&bad, &[]).await,
        Err(Refused::Status(400))
    ));
}

#[tokio::test]
async fn health_endpoints() {
    let server = TestServer::start().await;
    assert_eq!(http(server.addr, "GET", "/healthz", &[]).await.0, 200);
    assert_eq!(http(server.addr, "GET", "/readyz", &[]).await.0, 200);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("tracker_connections_opened_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn admin_endpoints_need_the_token_and_are_on_their_own_listener_by_default() {
    // The default config: an admin listener (loopback), nothing of it on the public one.
    assert!(
        Config::default()
            .server
            .admin_listen
            .is_some_and(|a| a.ip().is_loopback())
    );
    let mut config = test_config();
    config.server.admin_listen = Config::default().server.admin_listen;
    let server = TestServer::with_config(config).await;
    let admin = server.admin.expect("admin listener");
    // Not on the public listener.
    assert_eq!(http(server.addr, "GET", "/metrics", &[]).await.0, 404);
    assert_eq!(http(server.addr, "POST", "/admin/drain", &[]).await.0, 404);
    assert_eq!(http(admin, "GET", "/metrics", &[]).await.0, 200);
    assert_eq!(http(admin, "POST", "/admin/drain", &[]).await.0, 401);
    let wrong = [("Authorization", "Bearer nope")];
    assert_eq!(http(admin, "POST", "/admin/drain", &wrong).await.0, 401);
    assert_eq!(http(server.addr, "GET", "/readyz", &[]).await.0, 200);

    let mut no_token = test_config();
    no_token.admin_token = None;
    let server2 = TestServer::with_config(no_token).await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(
        http(
            server2.admin_addr(),
            "POST",
            "/admin/drain",
            &[("Authorization", &auth)]
        )
        .await
        .0,
        403
    );
}

fn drain_config(window_ms: u64, grace_ms: u64, deadline_secs: u64) -> tracker::config::Config {
    let mut c = test_config();
    c.drain.reconnect_window_ms = window_ms;
    c.drain.close_grace_ms = grace_ms;
    c.drain.deadline_secs = deadline_secs;
    c
}

#[tokio::test]
async fn drain_tells_viewers_to_reconnect_and_exits_when_they_left() {
    let mut server = TestServer::with_config(drain_config(500, 60_000, 60)).await;
    let mut viewers = Vec::new();
    for format in [Format::Json, Format::MsgPack, Format::Json] {
        let mut v = Client::connect(&server, format).await;
        v.join("v", 5).await;
        viewers.push(v);
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _) = http(
        server.admin_addr(),
        "POST",
        "/admin/drain",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(http(server.addr, "GET", "/readyz", &[]).await.0, 503);
    assert_eq!(server.metric("tracker_draining").await, 1.0);
    for v in &mut viewers {
        match v.recv().await {
            ServerMsg::Reconnect { after_ms } => assert!(after_ms <= 500),
            m => panic!("expected reconnect, got {m:?}"),
        }
    }
    // New viewers go elsewhere.
    match connect_ws(&server.ws_url(), &[]).await {
        Err(Refused::Status(503)) => {}
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // Signaling still works for in-flight negotiations while draining.
    let target = viewers[1].peer;
    viewers[0].send(&offer("v", target, "late", "sdp")).await;
    assert!(matches!(viewers[1].recv().await, ServerMsg::Offer(_)));
    for v in viewers {
        v.close().await;
    }
    server.exited().await.expect("clean exit");
}

#[tokio::test]
async fn drain_over_the_admin_api_may_choose_its_window_within_the_deadline() {
    // Configured window 0: every viewer would be told to go at once.
    let server = TestServer::with_config(drain_config(0, 1_000, 10)).await;
    let mut viewers = Vec::new();
    for _ in 0..20 {
        let mut v = Client::connect(&server, Format::Json).await;
        v.join("v", 1).await;
        viewers.push(v);
    }
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let bad = "/admin/drain?reconnect_window_ms=soon";
    assert_eq!(
        http(
            server.admin_addr(),
            "POST",
            bad,
            &[("Authorization", &auth)]
        )
        .await
        .0,
        400
    );
    // Asked for 60 s: cut to the deadline less the close grace (9 s).
    let path = "/admin/drain?reconnect_window_ms=60000";
    let (status, _) = http(
        server.admin_addr(),
        "POST",
        path,
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(status, 202);
    let mut delays = Vec::new();
    for v in &mut viewers {
        match v.recv().await {
            ServerMsg::Reconnect { after_ms } => delays.push(after_ms),
            m => panic!("expected reconnect, got {m:?}"),
        }
    }
    assert!(delays.iter().all(|&d| d <= 9_000), "{delays:?}");
    // 20 uniform draws over 0..=9000 all at 0 would mean the window wasn't applied.
    assert!(delays.iter().any(|&d| d > 0), "{delays:?}");
}

#[tokio::test]
async fn drain_closes_viewers_that_stay_with_1012() {
    let mut server = TestServer::with_config(drain_config(100, 100, 60)).await;
    let mut v = Client::connect(&server, Format::Json).await;
    server.request_shutdown(); // what SIGTERM does
    assert!(matches!(v.recv().await, ServerMsg::Reconnect { .. }));
    let frame = v.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1012);
    server.exited().await.expect("clean exit");
}

#[tokio::test]
async fn drain_deadline_closes_everyone_and_exits() {
    let mut server = TestServer::with_config(drain_config(60_000, 60_000, 1)).await;
    let mut v = Client::connect(&server, Format::Json).await;
    server.request_shutdown();
    assert!(matches!(v.recv().await, ServerMsg::Reconnect { .. }));
    let frame = v.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1012);
    server.exited().await.expect("clean exit");
    assert!(
        http_refused(server.addr).await,
        "listener closed after exit"
    );
}

async fn http_refused(addr: std::net::SocketAddr) -> bool {
    eventually("listener closed", || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(true)
    })
    .await
}

#[tokio::test]
async fn server_pings_and_closes_idle_viewers() {
    let mut config = test_config();
    config.websocket.ping_interval_secs = 1;
    config.websocket.idle_timeout_secs = 2;
    let server = TestServer::with_config(config).await;
    // A socket that is never read never answers the server's pings: it goes idle.
    let _silent = connect_ws(&server.ws_url(), &[]).await.expect("connect");
    // A client that reads answers pings (tungstenite replies while reading) and stays.
    let mut live = Client::connect(&server, Format::Json).await;
    let reader = tokio::spawn(async move {
        let msg = live.recv_frame().await;
        (live, msg)
    });
    server
        .wait_metric(r#"tracker_connections_closed_total{reason="idle"}"#, 1.0)
        .await;
    assert_eq!(server.metric("tracker_connections").await, 1.0);
    reader.abort();
}
