//! Test harness: a real tracker on `127.0.0.1:0`, real WebSocket clients, plain HTTP requests.
//! Everything waits with a deadline; nothing sleeps to synchronise.

#![allow(dead_code)] // each test binary uses a different part of the harness
#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

pub mod haproxy;
pub mod process;
pub mod redis;
pub mod resp;
pub mod webtorrent;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracker::config::{Config, Secret};
use tracker::protocol::{
    Cands, ClientMsg, Format, InstanceId, PeerId, ServerMsg, Signal, encode_client,
};

/// How long any single expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A complete Chrome offer (real SDP).
pub const OFFER_SDP: &str = include_str!("../../../fixtures/chrome-datachannel-offer-complete.sdp");

/// A complete Firefox answer (real SDP).
pub const ANSWER_SDP: &str = include_str!("../../../fixtures/firefox-datachannel-answer-complete.sdp");

/// The admin token test servers use.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// An `offer` message.
pub fn offer<'a>(swarm: &'a str, to: PeerId, sid: &'a str, m: &'a str) -> ClientMsg<'a> {
    ClientMsg::Offer(tracker::protocol::Signal {
        swarm: swarm.into(),
        to,
        sid: sid.into(),
        m: m.into(),
    })
}

/// A config for tests: loopback, an admin token, defaults otherwise.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.admin_token = Some(Secret::new(ADMIN_TOKEN));
    c
}

/// Awaits `fut` or fails the test after [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `check` until it returns `Some`, or fails after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A deadline for polling loops that need `&mut` access (which `eventually` can't lend):
/// `let d = Deadline::new("x"); loop { if done { break } d.tick().await }`.
pub struct Deadline {
    what: String,
    until: tokio::time::Instant,
}

impl Deadline {
    /// Starts the clock ([`DEADLINE`]).
    pub fn new(what: &str) -> Self {
        Self {
            what: what.to_string(),
            until: tokio::time::Instant::now() + DEADLINE,
        }
    }

    /// Fails the test past the deadline, else waits a little before the next poll.
    pub async fn tick(&self) {
        if tokio::time::Instant::now() > self.until {
            panic!("timed out waiting for {}", self.what);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A tracker running in this process.
pub struct TestServer {
    /// The main listener.
    pub addr: SocketAddr,
    /// The admin listener, if configured.
    pub admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a tracker with the test defaults.
    pub async fn start() -> Self {
        Self::with_config(test_config()).await
    }

    /// Starts a tracker; `config.server.admin_listen` set to anything makes a separate admin
    /// listener on a free port.
    pub async fn with_config(config: Config) -> Self {
        let main = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = match config.server.admin_listen {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind admin")),
            None => None,
        };
        let addr = main.local_addr().expect("addr");
        let admin_addr = admin.as_ref().map(|a| a.local_addr().expect("admin addr"));
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(tracker::run(
            config,
            tracker::Listeners { main, admin },
            shutdown.clone(),
        ));
        Self {
            addr,
            admin: admin_addr,
            shutdown,
            handle: Some(handle),
        }
    }

    /// The native protocol URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Where `/metrics` and `/admin` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.unwrap_or(self.addr)
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> String {
        let (status, body) = http(self.admin_addr(), "GET", "/metrics", &[]).await;
        assert_eq!(status, 200, "metrics: {body}");
        body
    }

    /// One sample's value (0 when absent), e.g. `tracker_errors_sent_total{code="too_large"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Waits until a metric sample reaches `want`.
    pub async fn wait_metric(&self, series: &str, want: f64) {
        eventually(&format!("{series} == {want}"), || async {
            (self.metric(series).await == want).then_some(())
        })
        .await;
    }

    /// Asks the tracker to stop (as SIGTERM does) without waiting.
    pub fn request_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for `run` to return and gives its result.
    pub async fn exited(&mut self) -> anyhow::Result<()> {
        let handle = self.handle.take().expect("already awaited");
        within("tracker exit", handle)
            .await
            .expect("run task panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// Parses one sample out of Prometheus text; labels must be given in the exporter's order.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// A minimal HTTP/1.1 request; returns status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    within("http response", async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    })
    .await
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A viewer: a real WebSocket client speaking protocol v1.
pub struct Client {
    ws: Ws,
    /// The frame format this client sends.
    pub format: Format,
    /// Its id, from `welcome`.
    pub peer: PeerId,
    /// Its instance, from `welcome`.
    pub instance: InstanceId,
    /// The `welcome` message.
    pub welcome: ServerMsg<'static>,
    /// Fail on a reply in the other format than `format` (off for clients that mix formats).
    pub strict_format: bool,
    pending: VecDeque<ServerMsg<'static>>,
}

/// How a connection attempt ended.
#[derive(Debug)]
pub enum Refused {
    /// HTTP status of a refused upgrade.
    Status(u16),
}

/// Opens a WebSocket to `url` with extra request headers.
pub async fn connect_ws(url: &str, headers: &[(&str, &str)]) -> Result<Ws, Refused> {
    let mut req = url.into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    match within("websocket connect", tokio_tungstenite::connect_async(req)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            Err(Refused::Status(resp.status().as_u16()))
        }
        Err(e) => panic!("connect failed: {e}"),
    }
}

impl Client {
    /// Connects and reads `welcome`.
    pub async fn connect(server: &TestServer, format: Format) -> Self {
        Self::connect_url(&server.ws_url(), format).await
    }

    /// Connects to a `/v1/ws` URL and reads `welcome`.
    pub async fn connect_url(ws_url: &str, format: Format) -> Self {
        let url = match format {
            Format::Json => ws_url.to_string(),
            Format::MsgPack => format!("{ws_url}?format=msgpack"),
        };
        let ws = connect_ws(&url, &[]).await.expect("upgrade refused");
        Self::from_ws(ws, format).await
    }

    /// Wraps an open socket and reads `welcome`.
    pub async fn from_ws(ws: Ws, format: Format) -> Self {
        let mut c = Self {
            ws,
            format,
            peer: PeerId::new(InstanceId(0), 0, 0),
            instance: InstanceId(0),
            welcome: ServerMsg::Pong,
            strict_format: true,
            pending: VecDeque::new(),
        };
        let welcome = c.recv().await;
        let ServerMsg::Welcome { peer, instance, .. } = welcome else {
            panic!("expected welcome, got {welcome:?}");
        };
        c.peer = peer;
        c.instance = instance;
        c.welcome = welcome;
        c
    }

    /// Sends a message in this client's format.
    pub async fn send(&mut self, msg: &ClientMsg<'_>) {
        let bytes = encode_client(msg, self.format).expect("encode");
        let frame = match self.format {
            Format::Json => Message::Text(String::from_utf8(bytes).expect("utf8").into()),
            Format::MsgPack => Message::Binary(bytes.into()),
        };
        self.send_frame(frame).await;
    }

    /// Sends a raw frame.
    pub async fn send_frame(&mut self, frame: Message) {
        within("send", self.ws.send(frame))
            .await
            .expect("send failed");
    }

    /// The next frame as a message, batches kept whole.
    pub async fn recv_frame(&mut self) -> ServerMsg<'static> {
        loop {
            let frame = within("a message", self.ws.next())
                .await
                .expect("connection closed")
                .expect("read failed");
            let msg = match &frame {
                Message::Text(t) => serde_json::from_str::<ServerMsg<'_>>(t)
                    .map(ServerMsg::into_owned)
                    .expect("json"),
                Message::Binary(b) => rmp_serde::from_slice::<ServerMsg<'_>>(b)
                    .map(ServerMsg::into_owned)
                    .expect("msgpack"),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            };
            if let (true, Format::Json, Message::Binary(_))
            | (true, Format::MsgPack, Message::Text(_)) =
                (self.strict_format, self.format, &frame)
            {
                panic!("reply in the wrong format: {frame:?}");
            }
            return msg;
        }
    }

    /// The next message, batches unpacked.
    pub async fn recv(&mut self) -> ServerMsg<'static> {
        if let Some(m) = self.pending.pop_front() {
            return m;
        }
        match self.recv_frame().await {
            ServerMsg::Batch { msgs } => {
                self.pending.extend(msgs);
                self.pending.pop_front().expect("empty batch")
            }
            m => m,
        }
    }

    /// Round trip through the server: every message queued for this client before the call is
    /// returned, in order (the session flushes its outbox before reading the next frame).
    pub async fn sync(&mut self) -> Vec<ServerMsg<'static>> {
        self.send(&ClientMsg::Ping).await;
        let mut before = Vec::new();
        loop {
            match self.recv().await {
                ServerMsg::Pong => return before,
                m => before.push(m),
            }
        }
    }

    /// Joins a swarm and returns the peers.
    pub async fn join(&mut self, swarm: &str, want: u32) -> Vec<PeerId> {
        self.send(&ClientMsg::Join {
            swarm: swarm.into(),
            want,
        })
        .await;
        match self.recv().await {
            ServerMsg::Peers { peers, swarm: s } => {
                assert_eq!(s, swarm);
                peers
            }
            m => panic!("expected peers, got {m:?}"),
        }
    }

    /// Expects the next message to be an error with `code` and returns its `ref`.
    pub async fn expect_error(&mut self, code: &str) -> Option<String> {
        match self.recv().await {
            ServerMsg::Error {
                code: c,
                reference,
                msg,
                ..
            } => {
                assert_eq!(c.as_str(), code, "error message: {msg}");
                reference.map(|r| r.into_owned())
            }
            m => panic!("expected error {code}, got {m:?}"),
        }
    }

    /// Reads until the connection ends: `Some(frame)` when it ended with a close frame (whose
    /// payload may be empty), `None` when the socket just went away.
    async fn next_close(&mut self) -> Option<Option<CloseFrame>> {
        within("close", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(frame))) => return Some(frame),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
    }

    /// Waits for the server to close the connection and returns the close frame.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        self.next_close().await.flatten()
    }

    /// Closes from the client side; true when the server echoed the close frame.
    pub async fn close_handshake(mut self) -> bool {
        within("client close", self.ws.send(Message::Close(None)))
            .await
            .expect("send close");
        self.next_close().await.is_some()
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = within("client close", self.ws.close(None)).await;
    }
}

/// Joins `b` until it is handed `a` (the subscriber and the first refresh may still be on
/// their way when the test starts).
pub async fn join_until_paired(b: &mut Client, swarm: &str, a: PeerId) {
    let deadline = Deadline::new("remote pairing");
    while !b.join(swarm, 8).await.contains(&a) {
        deadline.tick().await;
    }
}

/// Offer, answer and candidates between viewers on two instances.
pub async fn exchange_across(a: &mut Client, b: &mut Client, swarm: &str) {
    b.send(&offer(swarm, a.peer, "x1", OFFER_SDP)).await;
    match a.recv().await {
        ServerMsg::Offer(s) => assert_eq!((s.from, &*s.m), (b.peer, OFFER_SDP)),
        m => panic!("expected the offer, got {m:?}"),
    }
    a.send(&ClientMsg::Answer(Signal {
        swarm: swarm.into(),
        to: b.peer,
        sid: "x1".into(),
        m: ANSWER_SDP.into(),
    }))
    .await;
    match b.recv().await {
        ServerMsg::Answer(s) => assert_eq!((s.from, &*s.m), (a.peer, ANSWER_SDP)),
        m => panic!("expected the answer, got {m:?}"),
    }
    b.send(&ClientMsg::Cands(Cands {
        swarm: swarm.into(),
        to: a.peer,
        sid: "x1".into(),
        c: vec!["candidate:1 1 udp 2113937151 192.0.2.1 5000 typ host".into()],
        end: Some(true),
    }))
    .await;
    match a.recv().await {
        ServerMsg::Cands(c) => assert_eq!((c.from, c.end), (b.peer, Some(true))),
        m => panic!("expected candidates, got {m:?}"),
    }
}
