//! Who may hold a connection, and for how long (issue 14, item 1 and 6): a socket in no swarm is
//! closed after `limits.join_timeout_secs`; pings take a token of the message rate; an HTTP
//! connection not upgraded yet holds one of `limits.max_connections`, and is closed past its
//! header or idle timeout; out of descriptors, the listener keeps moving and counts it.
//! Against a real tracker: in this process, or the binary under a descriptor limit.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use testkit::http::metric_value;
use testkit::native::{Client, Refused, connect_ws};
use testkit::tracker::{TestServer, TrackerProcess, test_config};
use testkit::{eventually, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracker::protocol::{ClientMsg, Format};

/// Waits until the server closes `s`: its read ends (EOF or reset).
async fn closed_by_server(s: &mut TcpStream) {
    within("the server closes the connection", async {
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
}

/// `GET path` on a new connection, retried while the connection is cut at accept (the
/// reserve still held by the previous request's connection, which the server sees close a
/// moment later); status and trimmed body.
async fn answer(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    eventually(&format!("an answer to {path}"), || async {
        let (status, body) =
            testkit::http::try_request(addr, "GET", path, &[], Duration::from_secs(2))
                .await
                .ok()?;
        Some((status, body.trim().to_string()))
    })
    .await
}

#[tokio::test]
async fn a_socket_in_no_swarm_is_closed_after_the_join_timeout_and_counted() {
    let mut config = test_config();
    config.limits.join_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    // Joined before the idle one connects: it has had longer, and stays.
    let mut joined = Client::connect(&server, Format::Json).await;
    joined.join("v", 4).await;
    let mut idle = Client::connect(&server, Format::Json).await;
    let frame = idle.expect_close().await.expect("a close frame");
    assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
    assert!(frame.reason.contains("no join"), "{frame:?}");
    // A WebTorrent socket that never announces goes the same way.
    let (mut wt, _) = tokio_tungstenite::connect_async(server.announce_url())
        .await
        .expect("webtorrent upgrade");
    let close = within("webtorrent close", async {
        loop {
            match wt.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("a close frame");
    assert_eq!(close.code, CloseCode::Policy);
    server
        .wait_metric(r#"tracker_connections_closed_total{reason="no_join"}"#, 2.0)
        .await;
    // The joined viewer is still served; leaving every swarm starts its clock again.
    assert!(joined.sync().await.is_empty());
    joined.send(&ClientMsg::Leave { swarm: "v".into() }).await;
    let frame = joined.expect_close().await.expect("a close frame");
    assert!(frame.reason.contains("no join"), "{frame:?}");
    server
        .wait_metric(r#"tracker_connections_closed_total{reason="no_join"}"#, 3.0)
        .await;
}

#[tokio::test]
async fn pings_take_a_token_of_the_message_rate_and_are_counted() {
    let mut config = test_config();
    config.limits.messages_per_sec = 1;
    config.limits.burst = 2;
    let server = TestServer::with_config(config).await;
    let mut c = Client::connect(&server, Format::Json).await;
    let start = Instant::now();
    const PINGS: u64 = 10;
    for _ in 0..PINGS {
        c.send_frame(Message::Ping(Vec::new().into())).await;
    }
    server
        .wait_metric("tracker_pings_received_total", PINGS as f64)
        .await;
    // The bucket held 2 and refilled 1 a second while the pings went out.
    let refilled = start.elapsed().as_secs() + 1;
    let limited = server.metric("tracker_pings_rate_limited_total").await;
    assert!(
        limited >= (PINGS - 2).saturating_sub(refilled) as f64 && limited <= (PINGS - 2) as f64,
        "{limited} pings over the rate, {refilled} s of refill"
    );
    assert!(limited >= 1.0, "a flood of pings is limited");
}

#[tokio::test]
async fn http_connections_before_the_upgrade_hold_a_slot() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    config.server.reserve_connections = 1;
    // Timeouts out of the way; the next test has them. /metrics on its own listener, so
    // reading it takes no slot.
    config.server.http_idle_timeout_secs = 600;
    config.server.http_header_timeout_secs = 600;
    config.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = TestServer::with_config(config).await;
    // Two silent connections take both slots.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    server.wait_metric("tracker_http_connections", 2.0).await;
    // Full: an upgrade is refused (on the reserve) and so is the health check.
    match connect_ws(&server.ws_url(), &[]).await {
        Err(Refused::Status(503)) => {}
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    // One request at a time fits the reserve: each waits until the last one's slot is back.
    assert_eq!(
        answer(server.addr, "/readyz").await,
        (503, "at max connections".to_string())
    );
    assert_eq!(answer(server.addr, "/healthz").await.0, 200);
    // The silent ones go: a viewer gets a slot.
    drop(silent);
    let url = server.ws_url();
    let viewer = eventually("a slot for a viewer", || async {
        Client::connect_from("127.0.0.1".parse().unwrap(), &url)
            .await
            .ok()
    })
    .await;
    assert_eq!(server.metric("tracker_connections").await, 1.0);
    viewer.close().await;
}

#[tokio::test]
async fn http_connections_are_closed_at_their_idle_and_header_timeouts() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    config.server.http_idle_timeout_secs = 1;
    config.server.http_header_timeout_secs = 2;
    config.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = TestServer::with_config(config).await;
    // Idle past http_idle_timeout_secs: closed, the slot freed.
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    closed_by_server(&mut silent).await;
    // A keep-alive connection idle after its answer: closed too.
    let mut kept = TcpStream::connect(server.addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    closed_by_server(&mut kept).await;
    // A request head trickling in (never idle) is closed at the header timeout.
    let mut slow = TcpStream::connect(server.addr).await.expect("connect");
    slow.write_all(b"GET /readyz HTTP/1.1\r\n").await.unwrap();
    let trickle = async {
        loop {
            if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut probe = [0u8; 64];
            // The server answers nothing to a head it never finished reading: a read that
            // returns is its close.
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
            {
                return;
            }
        }
    };
    within("the header timeout closes a trickling request", trickle).await;
    server.wait_metric("tracker_http_connections", 0.0).await;
}

#[tokio::test]
async fn out_of_descriptors_the_listener_closes_what_it_cannot_serve_and_goes_on() {
    // 64 descriptors: a few tens of connections fill them; max_connections is far above.
    let mut tracker = TrackerProcess::spawn_with_limit(
        Some(64),
        &[],
        &[
            ("TRACKER__SERVER__WORKERS", "1"),
            ("TRACKER__LIMITS__MAX_CONNECTIONS", "1000"),
            ("TRACKER__SERVER__HTTP_IDLE_TIMEOUT_SECS", "300"),
            ("TRACKER__SERVER__HTTP_HEADER_TIMEOUT_SECS", "300"),
        ],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(TcpStream::connect(tracker.addr).await.expect("connect"));
    }
    // The last ones found no descriptor: each was accepted with the reserve and closed at
    // once, rather than left waiting in the listener's queue.
    closed_by_server(held.last_mut().unwrap()).await;
    drop(held);
    assert!(tracker.is_running(), "the tracker survived");
    eventually("the accept errors counted", || async {
        let (status, body) = testkit::http::try_request(
            tracker.admin,
            "GET",
            "/metrics",
            &[],
            Duration::from_secs(2),
        )
        .await
        .ok()?;
        (status == 200
            && metric_value(&body, r#"tracker_accept_errors_total{kind="descriptors"}"#) >= 1.0)
            .then_some(())
    })
    .await;
    // Descriptors back (once the tracker has seen the test's sockets close): a viewer
    // connects and joins.
    let url = tracker.ws_url();
    let mut viewer = eventually("a viewer connects", || async {
        Client::connect_from("127.0.0.1".parse().unwrap(), &url)
            .await
            .ok()
    })
    .await;
    viewer.join("after", 2).await;
}
