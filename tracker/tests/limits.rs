//! Bad input and limits: every error code and close code of the contract, against a real
//! tracker. Nothing a client sends may crash the server or affect other viewers.

use proptest::prelude::*;
use testkit::eventually;
use testkit::http::{metric_value, request as http};
use testkit::native::{Client, Refused, connect_ws, offer};
use testkit::tracker::{TestServer, test_config};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tracker::protocol::{Cands, ClientMsg, Format, InstanceId, PeerId, ServerMsg};

async fn text(c: &mut Client, s: impl Into<String>) {
    c.send_frame(Message::Text(s.into().into())).await;
}

#[tokio::test]
async fn malformed_messages_get_bad_message_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, Format::Json).await;
    let long_swarm = "x".repeat(10 * 1024);
    let cases: Vec<(String, Option<&str>)> = vec![
        ("not json".into(), None),
        ("[1,2,3]".into(), None),
        (r#"{"no_t":1}"#.into(), None),
        (r#"{"t":"teleport"}"#.into(), None),
        (r#"{"t":"join"}"#.into(), Some("join")),
        (
            r#"{"t":"join","swarm":"v","want":1000000000}"#.into(),
            Some("join"),
        ),
        (r#"{"t":"join","swarm":"v","want":0}"#.into(), Some("join")),
        (r#"{"t":"join","swarm":"","want":1}"#.into(), Some("join")),
        (
            format!(r#"{{"t":"join","swarm":"{long_swarm}","want":1}}"#),
            Some("join"),
        ),
        (
            r#"{"t":"offer","swarm":"v","to":"nope","sid":"s","m":"x"}"#.into(),
            Some("offer"),
        ),
        (
            r#"{"t":"cands","swarm":"v","to":"AAAAAAAAAAAAAAAAAAAAAA","sid":"s","c":"notalist"}"#
                .into(),
            Some("cands"),
        ),
        (r#"{"t":"batch"}"#.into(), Some("batch")),
    ];
    for (frame, reference) in &cases {
        text(&mut a, frame.clone()).await;
        assert_eq!(
            a.expect_error("bad_message").await.as_deref(),
            *reference,
            "{frame}"
        );
    }
    // MessagePack garbage and a MessagePack array.
    a.send_frame(Message::Binary(vec![0xc1, 0xff, 0x00].into()))
        .await;
    a.format = Format::MsgPack;
    a.expect_error("bad_message").await;
    a.send_frame(Message::Binary(
        rmp_serde::to_vec(&[1, 2]).expect("encode").into(),
    ))
    .await;
    a.expect_error("bad_message").await;
    a.format = Format::Json;
    assert!(a.sync().await.is_empty(), "still open and answering");
    let n = cases.len() as f64 + 2.0;
    assert_eq!(
        server
            .metric(r#"tracker_errors_sent_total{code="bad_message"}"#)
            .await,
        n
    );
    assert_eq!(
        server
            .metric(r#"tracker_messages_received_total{kind="invalid",format="json"}"#)
            .await,
        cases.len() as f64
    );
}

#[tokio::test]
async fn batch_messages_are_answered_one_by_one() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, Format::Json).await;
    text(&mut a, r#"{"t":"batch","msgs":[{"t":"ping"},{"t":"bogus"},{"t":"join","swarm":"v","want":2},{"t":"batch","msgs":[]}]}"#).await;
    // The replies come back as one batch frame, in order.
    let ServerMsg::Batch { msgs } = a.recv_frame().await else {
        panic!("expected a batch")
    };
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[0], ServerMsg::Pong);
    assert!(matches!(&msgs[1], ServerMsg::Error { code, .. } if code.as_str() == "bad_message"));
    assert!(matches!(&msgs[2], ServerMsg::Peers { .. }));
    assert!(matches!(&msgs[3], ServerMsg::Error { reference: Some(r), .. } if r == "batch"));
}

#[tokio::test]
async fn a_batch_of_ten_thousand_messages_is_refused() {
    // With room for it in a frame: the batch limit answers too_large.
    let mut config = test_config();
    config.limits.max_message_bytes = 1 << 20;
    config.limits.max_frame_bytes = 2 << 20;
    let server = TestServer::with_config(config).await;
    let mut a = Client::connect(&server, Format::Json).await;
    let batch = ClientMsg::Batch {
        msgs: vec![ClientMsg::Ping; 10_000],
    };
    a.send(&batch).await;
    assert_eq!(a.expect_error("too_large").await.as_deref(), Some("batch"));
    assert!(a.sync().await.is_empty());

    // With the default frame limit the frame itself is too big to read: close 1009.
    let server = TestServer::start().await;
    let mut b = Client::connect(&server, Format::MsgPack).await;
    b.send(&batch).await;
    let frame = b.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1009);
    server
        .wait_metric(r#"tracker_connections_closed_total{reason="too_big"}"#, 1.0)
        .await;
}

#[tokio::test]
async fn oversized_messages_get_too_large_and_oversized_frames_close_1009() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, Format::Json).await;
    // Over max_message_bytes (16 KiB) but under max_frame_bytes (64 KiB): refused, still open.
    let big = format!(r#"{{"t":"ping","pad":"{}"}}"#, "x".repeat(20 * 1024));
    text(&mut a, big).await;
    a.expect_error("too_large").await;
    assert!(a.sync().await.is_empty());
    // Over max_frame_bytes: never read into memory, the connection closes with 1009.
    text(&mut a, "y".repeat(100 * 1024)).await;
    let frame = a.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1009);
    // Other viewers are unaffected.
    let mut b = Client::connect(&server, Format::Json).await;
    assert!(b.sync().await.is_empty());
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_1007() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, Format::Json).await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    a.send_frame(Message::Frame(frame)).await;
    let close = a.expect_close().await.expect("close frame");
    assert_eq!(u16::from(close.code), 1007);
    server
        .wait_metric(
            r#"tracker_connections_closed_total{reason="protocol"}"#,
            1.0,
        )
        .await;
}

#[tokio::test]
async fn the_rate_limit_refuses_and_is_counted() {
    let mut config = test_config();
    config.limits.messages_per_sec = 1;
    config.limits.burst = 3;
    let server = TestServer::with_config(config).await;
    let mut a = Client::connect(&server, Format::Json).await;
    for _ in 0..6 {
        a.send(&ClientMsg::Ping).await;
    }
    for _ in 0..3 {
        assert_eq!(a.recv().await, ServerMsg::Pong);
    }
    // One error for the flood (errors are throttled to one a second), every refusal counted.
    a.expect_error("rate_limited").await;
    server
        .wait_metric(
            r#"tracker_messages_dropped_total{reason="rate_limited"}"#,
            3.0,
        )
        .await;
    assert_eq!(
        server
            .metric(r#"tracker_errors_sent_total{code="rate_limited"}"#)
            .await,
        1.0
    );
    // A batch counts each of its messages.
    let mut b = Client::connect(&server, Format::Json).await;
    b.send(&ClientMsg::Batch {
        msgs: vec![ClientMsg::Ping; 5],
    })
    .await;
    let ServerMsg::Batch { msgs } = b.recv_frame().await else {
        panic!("expected a batch")
    };
    assert_eq!(msgs.iter().filter(|m| **m == ServerMsg::Pong).count(), 3);
    assert_eq!(
        msgs.len(),
        4,
        "three pongs and one rate_limited error: {msgs:?}"
    );
}

#[tokio::test]
async fn signaling_errors() {
    let mut config = test_config();
    config.limits.max_swarms_per_connection = 2;
    let server = TestServer::with_config(config).await;
    let mut a = Client::connect(&server, Format::Json).await;
    let mut b = Client::connect(&server, Format::Json).await;
    a.join("v", 2).await;
    b.join("v", 2).await;
    // not_in_swarm: a swarm the sender never joined.
    a.send(&offer("w", b.peer, "s", "v=0")).await;
    assert_eq!(
        a.expect_error("not_in_swarm").await.as_deref(),
        Some("offer")
    );
    // unknown_peer: a well-formed id nobody holds, here and on another instance.
    let nobody = PeerId::new(a.instance, 4_000_000, 1);
    a.send(&offer("v", nobody, "s", "v=0")).await;
    assert_eq!(
        a.expect_error("unknown_peer").await.as_deref(),
        Some("offer")
    );
    let elsewhere = PeerId::new(InstanceId(a.instance.0 ^ 1), b.peer.slot(), b.peer.nonce());
    a.send(&offer("v", elsewhere, "s", "v=0")).await;
    a.expect_error("unknown_peer").await;
    // unknown_peer: the target exists but is not in that swarm.
    a.join("only-a", 2).await;
    a.send(&offer("only-a", b.peer, "s", "v=0")).await;
    a.expect_error("unknown_peer").await;
    // swarm_limit: a third swarm; re-joining one it is in is fine.
    a.send(&ClientMsg::Join {
        swarm: "third".into(),
        want: 1,
    })
    .await;
    assert_eq!(a.expect_error("swarm_limit").await.as_deref(), Some("join"));
    assert_eq!(a.join("v", 2).await, vec![b.peer]);
    assert!(
        b.sync().await.is_empty(),
        "B received none of the refused signals"
    );
    let text = server.metrics().await;
    for (code, n) in [
        ("not_in_swarm", 1.0),
        ("unknown_peer", 3.0),
        ("swarm_limit", 1.0),
    ] {
        let series = format!(r#"tracker_errors_sent_total{{code="{code}"}}"#);
        assert_eq!(metric_value(&text, &series), n, "{series}");
    }
}

#[tokio::test]
async fn a_full_outbox_drops_and_tells_the_sender_overloaded() {
    let mut config = test_config();
    config.websocket.outbox_capacity = 2;
    // One worker thread: all five are handed over before B's session runs.
    config.server.workers = 1;
    let server = TestServer::with_config(config).await;
    let mut a = Client::connect(&server, Format::Json).await;
    let mut b = Client::connect(&server, Format::Json).await;
    a.join("v", 2).await;
    b.join("v", 2).await;
    let sids: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    let msgs = sids.iter().map(|s| offer("v", b.peer, s, "v=0")).collect();
    a.send(&ClientMsg::Batch { msgs }).await;
    for _ in 0..3 {
        assert_eq!(a.expect_error("overloaded").await.as_deref(), Some("offer"));
    }
    let delivered = b.sync().await;
    assert_eq!(delivered.len(), 2);
    assert_eq!(
        server
            .metric(r#"tracker_messages_dropped_total{reason="queue_full"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn control_characters_are_refused_real_sdp_with_crlf_is_relayed() {
    let server = TestServer::start().await;
    let sdp = testkit::fixtures::CHROME_OFFER_COMPLETE;
    assert!(sdp.contains("\r\n"));
    let cands = |c: Vec<String>| {
        ClientMsg::Cands(Cands {
            swarm: "v".into(),
            to: PeerId::new(InstanceId(0), 0, 0),
            sid: "s".into(),
            c: c.into_iter().map(Into::into).collect(),
            end: None,
        })
    };
    let mut refused = 0.0;
    for format in [Format::Json, Format::MsgPack] {
        let mut a = Client::connect(&server, format).await;
        let mut b = Client::connect(&server, Format::Json).await;
        a.join("v", 2).await;
        b.join("v", 2).await;
        a.send(&offer("v", b.peer, "real", sdp)).await;
        match b.recv().await {
            ServerMsg::Offer(o) => assert_eq!(o.m, sdp),
            other => panic!("expected the offer, got {other:?}"),
        }
        for c in ["\u{1}", "\u{1b}", "\t", "\u{7f}", "\u{85}"] {
            let bad = sdp.replacen("a=", &format!("a={c}"), 1);
            a.send(&offer("v", b.peer, "bad", &bad)).await;
            assert_eq!(
                a.expect_error("bad_message").await.as_deref(),
                Some("offer")
            );
            refused += 1.0;
        }
        let real: Vec<String> = testkit::fixtures::CHROME_CANDIDATES
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("candidate")?.as_str().map(str::to_string))
            .collect();
        assert!(!real.is_empty());
        let mut ok = cands(real.clone());
        if let ClientMsg::Cands(c) = &mut ok {
            c.to = b.peer;
        }
        a.send(&ok).await;
        assert!(matches!(b.recv().await, ServerMsg::Cands(c) if c.c.len() == real.len()));
        for bad in [
            vec![format!("{}\r\n", real[0])],
            // The issue's 8,000 empty strings, as many as fit a JSON frame of max_message_bytes.
            vec![String::new(); 5000],
            vec![String::new(); 33],
            vec!["c".repeat(1025)],
        ] {
            let mut msg = cands(bad);
            if let ClientMsg::Cands(c) = &mut msg {
                c.to = b.peer;
            }
            a.send(&msg).await;
            assert_eq!(
                a.expect_error("bad_message").await.as_deref(),
                Some("cands")
            );
            refused += 1.0;
        }
        assert!(b.sync().await.is_empty(), "nothing refused reached b");
    }
    assert_eq!(
        server
            .metric(r#"tracker_errors_sent_total{code="bad_message"}"#)
            .await,
        refused
    );
}

#[tokio::test]
async fn a_fragmented_message_kept_alive_by_pings_is_closed_after_the_write_timeout() {
    let mut config = test_config();
    config.websocket.write_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let mut a = Client::connect(&server, Format::Json).await;
    let first = Frame::message(b"{\"t\":".to_vec(), OpCode::Data(Data::Text), false);
    a.send_frame(Message::Frame(first)).await;
    // Pings are answered, but don't make the message any more complete.
    for _ in 0..3 {
        a.send_frame(Message::Ping(Vec::new().into())).await;
    }
    let close = a.expect_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert_eq!(close.reason.as_str(), "message too slow");
    server
        .wait_metric(
            r#"tracker_connections_closed_total{reason="protocol"}"#,
            1.0,
        )
        .await;
}

#[tokio::test]
async fn stalled_receivers_flooded_drop_past_their_outbox_counted_in_signals_and_bytes() {
    let mut config = test_config();
    config.limits.messages_per_sec = 1_000_000;
    config.limits.burst = 1_000_000;
    // No receiver is closed as slow while the flood lasts, however loaded the machine.
    config.websocket.write_timeout_secs = 120;
    let server = TestServer::with_config(config).await;
    let flood = testkit::flood::Flood {
        receivers: 4,
        senders: 2,
        per_receiver: 40,
        max_message_bytes: 16 * 1024,
        worst: testkit::flood::Worst::Sdp,
    };
    let report = testkit::flood::stalled_receivers(
        &server.ws_url(),
        server.admin_addr(),
        std::process::id(),
        flood,
    )
    .await;
    assert_eq!(report.sent, 160);
    assert_eq!(report.relayed + report.dropped, report.sent);
    assert_eq!(report.closed_slow, 0);
    // 40 offers of 16 KiB are more than a 256 KiB outbox and what the sockets take.
    assert!(report.dropped > 0, "{report:?}");
    assert!(
        report.dropped_bytes >= report.dropped * 16_000,
        "each dropped offer counted with its SDP: {report:?}"
    );
}

#[tokio::test]
async fn origins_outside_the_allowed_list_are_refused() {
    let mut config = test_config();
    config.limits.allowed_origins = vec!["https://player.example".into()];
    let server = TestServer::with_config(config).await;
    let url = server.ws_url();
    for headers in [&[("Origin", "https://evil.example")][..], &[][..]] {
        match connect_ws(&url, headers).await {
            Err(Refused::Status(403)) => {}
            other => panic!("expected 403, got {:?}", other.map(|_| ())),
        }
    }
    let ok = connect_ws(&url, &[("Origin", "https://player.example")]).await;
    assert!(ok.is_ok());
    assert_eq!(
        server
            .metric(r#"tracker_connections_refused_total{reason="origin"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn max_connections_refuses_with_503_until_a_slot_frees() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    let server = TestServer::with_config(config).await;
    let a = Client::connect(&server, Format::Json).await;
    let _b = Client::connect(&server, Format::Json).await;
    match connect_ws(&server.ws_url(), &[]).await {
        Err(Refused::Status(503)) => {}
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    assert_eq!(http(server.addr, "GET", "/readyz", &[]).await.0, 503);
    assert_eq!(http(server.addr, "GET", "/healthz", &[]).await.0, 200);
    a.close().await;
    eventually("readyz 200", || async {
        (http(server.addr, "GET", "/readyz", &[]).await.0 == 200).then_some(())
    })
    .await;
    // The health check's own connection held a slot until the server saw it close (HTTP
    // connections count toward max_connections): the upgrade may need a second try.
    let url = server.ws_url();
    let _c = eventually("a slot for a new viewer", || async {
        connect_ws(&url, &[]).await.ok()
    })
    .await;
    assert!(
        server
            .metric(r#"tracker_connections_refused_total{reason="full"}"#)
            .await
            >= 1.0
    );
}

/// One frame a hostile or buggy client might send.
#[derive(Debug, Clone)]
enum Hostile {
    Bytes(Vec<u8>),
    Text(String),
    Json(serde_json::Value),
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let t = prop_oneof![
        Just("join"),
        Just("leave"),
        Just("offer"),
        Just("answer"),
        Just("cands"),
        Just("batch"),
        Just("ping"),
        Just("zzz")
    ];
    let json = (
        t,
        proptest::option::of(".{0,40}"),
        proptest::option::of(any::<i64>()),
        proptest::option::of(".{0,30}"),
        proptest::option::of(".{0,40}"),
        proptest::option::of(proptest::collection::vec(".{0,20}", 0..3)),
    )
        .prop_map(|(t, swarm, want, to, sid, c)| {
            let inner = serde_json::json!({"t": t, "swarm": swarm, "want": want});
            Hostile::Json(
                serde_json::json!({"t": t, "swarm": swarm, "want": want, "to": to,
                "sid": sid, "m": "x", "c": c, "end": true, "msgs": [inner.clone(), inner]}),
            )
        });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Hostile::Bytes),
        ".{0,200}".prop_map(Hostile::Text),
        json,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Arbitrary frames never close the connection, never crash the server and never disturb
    /// another viewer's exchange.
    #[test]
    fn arbitrary_frames_leave_the_session_and_its_neighbours_working(
        frames in proptest::collection::vec(hostile(), 1..40)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let server = TestServer::start().await;
            let mut evil = Client::connect(&server, Format::Json).await;
            let mut a = Client::connect(&server, Format::Json).await;
            let mut b = Client::connect(&server, Format::Json).await;
            a.join("v", 2).await;
            b.join("v", 2).await;
            for f in &frames {
                let frame = match f {
                    Hostile::Bytes(b) => Message::Binary(b.clone().into()),
                    Hostile::Text(t) => Message::Text(t.clone().into()),
                    Hostile::Json(v) => Message::Text(v.to_string().into()),
                };
                evil.send_frame(frame).await;
            }
            evil.strict_format = false;
            // Whatever it sent, it is still connected and answered in order.
            evil.send_frame(Message::Text(r#"{"t":"ping"}"#.into())).await;
            loop {
                match evil.recv().await {
                    ServerMsg::Pong => break,
                    ServerMsg::Error { .. } | ServerMsg::Peers { .. } => {}
                    m => panic!("unexpected {m:?}"),
                }
            }
            a.send(&offer("v", b.peer, "ok", "v=0")).await;
            match b.recv().await {
                ServerMsg::Offer(s) => assert_eq!(s.from, a.peer),
                m => panic!("expected the offer, got {m:?}"),
            }
        });
    }
}
