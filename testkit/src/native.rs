//! A viewer of the native protocol v1 for tests: a real WebSocket client ([`Client`]) that
//! keeps batches apart or unpacks them, checks the reply format, and waits for every message
//! with a deadline; plus the exchanges the tracker's tests repeat (pairing across instances, an
//! offer/answer/candidates round with real SDP).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use futures_util::{SinkExt, StreamExt};
use swarmtrack_protocol::{
    Cands, ClientMsg, Format, InstanceId, PeerId, ServerMsg, Signal, encode_client,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::HeaderName;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::fixtures::{CHROME_OFFER_COMPLETE, FIREFOX_ANSWER_COMPLETE};
use crate::tracker::TestServer;
use crate::wait::{Deadline, within};

/// An `offer` message.
pub fn offer<'a>(swarm: &'a str, to: PeerId, sid: &'a str, m: &'a str) -> ClientMsg<'a> {
    ClientMsg::Offer(Signal {
        swarm: swarm.into(),
        to,
        sid: sid.into(),
        m: m.into(),
    })
}

/// An open client WebSocket.
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
    /// The connection was closed or reset before an answer (e.g. HAProxy's
    /// `tcp-request connection reject`); what the client saw.
    Closed(String),
}

/// Opens a WebSocket to a `ws://IP:PORT/...` URL from local address `source`, so a test can
/// tell sources apart behind HAProxy (127.0.0.2, 127.0.0.3, ... are all loopback on Linux).
///
/// # Errors
/// The HTTP status of a refused upgrade, or how the connection was cut before an answer.
///
/// # Panics
/// When the URL has no `IP:PORT` or takes longer than [`crate::DEADLINE`].
pub async fn connect_ws_from(source: IpAddr, url: &str) -> Result<Ws, Refused> {
    let req = url.into_client_request().expect("request");
    let addr: SocketAddr = req
        .uri()
        .authority()
        .expect("a URL with IP:PORT")
        .as_str()
        .parse()
        .expect("a URL with IP:PORT");
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    let stream = within("tcp connect", socket.connect(addr))
        .await
        .map_err(|e| Refused::Closed(e.to_string()))?;
    match within(
        "websocket connect",
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)),
    )
    .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            Err(Refused::Status(resp.status().as_u16()))
        }
        Err(e) => Err(Refused::Closed(e.to_string())),
    }
}

/// Opens a WebSocket to `url` with extra request headers.
///
/// # Errors
/// The HTTP status of a refused upgrade.
///
/// # Panics
/// When the connection fails otherwise, or takes longer than [`crate::DEADLINE`].
pub async fn connect_ws(url: &str, headers: &[(&str, &str)]) -> Result<Ws, Refused> {
    let mut req = url.into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
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

    /// Connects to a `/v1/ws` URL from local address `source` (see [`connect_ws_from`]) and
    /// reads `welcome`.
    ///
    /// # Errors
    /// How the connection was refused.
    pub async fn connect_from(source: IpAddr, ws_url: &str) -> Result<Self, Refused> {
        let ws = connect_ws_from(source, ws_url).await?;
        Ok(Self::from_ws(ws, Format::Json).await)
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

    /// The socket, to drive by hand (the welcome was read; anything received since is lost).
    pub fn into_ws(self) -> Ws {
        self.ws
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
    b.send(&offer(swarm, a.peer, "x1", CHROME_OFFER_COMPLETE))
        .await;
    match a.recv().await {
        ServerMsg::Offer(s) => assert_eq!((s.from, &*s.m), (b.peer, CHROME_OFFER_COMPLETE)),
        m => panic!("expected the offer, got {m:?}"),
    }
    a.send(&ClientMsg::Answer(Signal {
        swarm: swarm.into(),
        to: b.peer,
        sid: "x1".into(),
        m: FIREFOX_ANSWER_COMPLETE.into(),
    }))
    .await;
    match b.recv().await {
        ServerMsg::Answer(s) => assert_eq!((s.from, &*s.m), (a.peer, FIREFOX_ANSWER_COMPLETE)),
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
