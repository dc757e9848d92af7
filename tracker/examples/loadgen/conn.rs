//! Opening viewer connections and speaking protocol v1 on them.
//!
//! Every connection binds its TCP socket to one of several loopback source addresses before
//! connecting: each source address has its own ~28k ephemeral ports, so ten thousand
//! connections (and the TIME_WAIT sockets of earlier runs) never exhaust them. Only loopback
//! targets are accepted: this tool generates load against a tracker on this machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracker::protocol::{ClientMsg, Format, PeerId, ServerMsg, encode_client};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Where the tracker listens, checked once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given, plus the format query when asked for.
    url: String,
    /// The resolved loopback address.
    addr: SocketAddr,
}

impl Target {
    /// Parses a `ws://HOST:PORT/PATH` URL whose host is an IPv4 loopback address or
    /// `localhost`. With `format`, asks for `welcome` in that format too (`?format=`), so every
    /// frame of the connection is in one format.
    ///
    /// # Errors
    /// A malformed URL, another scheme than `ws`, or a host outside 127.0.0.0/8.
    pub fn parse(url: &str, format: Option<Format>) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        if uri.scheme_str() != Some("ws") {
            bail!("URL {url:?}: only ws:// is supported (TLS ends at the load balancer)");
        }
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("URL {url:?} has no host"))?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse::<IpAddr>()
                .with_context(|| format!("URL {url:?}: the host must be an IP address"))?
        };
        // Source addresses are picked in 127.0.0.0/8, which only reaches an IPv4 loopback
        // target; and a load generator has no business sending load anywhere else.
        if !matches!(ip, IpAddr::V4(v4) if v4.is_loopback()) {
            bail!("URL {url:?}: the target must be in 127.0.0.0/8");
        }
        let port = uri.port_u16().unwrap_or(80);
        let mut url = url.to_string();
        if let Some(Format::MsgPack) = format
            && uri.query().is_none()
        {
            url.push_str("?format=msgpack");
        }
        Ok(Self {
            url,
            addr: SocketAddr::new(ip, port),
        })
    }

    /// The tracker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The loopback source address for connection `i`: 127.0.0.1 ..= 127.0.0.`count`, round
/// robin.
pub fn source_addr(i: usize, count: u8) -> IpAddr {
    let count = usize::from(count.max(1));
    // i % count < count <= 255, so the last octet is 1..=255.
    let octet = u8::try_from(1 + i % count).unwrap_or(1);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet))
}

/// Opens a WebSocket from `source` and completes the upgrade.
///
/// # Errors
/// When the TCP connection or the upgrade fails (the message says which).
pub async fn connect(
    target: &Target,
    source: IpAddr,
    config: WebSocketConfig,
) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4().context("creating a socket")?;
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding source address {source}"))?;
    let stream = socket.connect(target.addr).await.context("TCP connect")?;
    // Signals are small and latency is what is measured: don't let Nagle hold them back.
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let request = target
        .url
        .as_str()
        .into_client_request()
        .context("building the upgrade request")?;
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .context("WebSocket upgrade")?;
    Ok(ws)
}

/// Encodes a client message as a text (JSON) or binary (MessagePack) frame.
///
/// # Errors
/// Only if serialization fails, which the message types make impossible in practice.
pub fn frame(msg: &ClientMsg<'_>, format: Format) -> anyhow::Result<Message> {
    let bytes = encode_client(msg, format).context("encoding a client message")?;
    Ok(match format {
        Format::Json => Message::Text(
            String::from_utf8(bytes)
                .context("JSON encoder produced invalid UTF-8")?
                .into(),
        ),
        Format::MsgPack => Message::Binary(bytes.into()),
    })
}

/// Decodes a data frame into a server message, borrowing from the frame; `None` for control
/// frames.
///
/// # Errors
/// When a data frame holds no valid server message.
pub fn decode(frame: &Message) -> anyhow::Result<Option<ServerMsg<'_>>> {
    match frame {
        Message::Text(text) => serde_json::from_str(text.as_str())
            .map(Some)
            .context("undecodable JSON frame"),
        Message::Binary(bytes) => rmp_serde::from_slice(bytes)
            .map(Some)
            .context("undecodable MessagePack frame"),
        _ => Ok(None),
    }
}

/// Reads until a server message for which `pick` returns `Some`, skipping control frames.
/// An `error` from the server, a close or `timeout` ends the wait with an error naming `what`.
///
/// # Errors
/// The server refused, closed, sent garbage, or was too slow.
pub async fn expect<T>(
    ws: &mut Ws,
    what: &str,
    timeout: Duration,
    mut pick: impl FnMut(ServerMsg<'_>) -> Option<T>,
) -> anyhow::Result<T> {
    let read = async {
        loop {
            let frame = match ws.next().await {
                None => bail!("connection closed while waiting for {what}"),
                Some(Err(e)) => return Err(anyhow!(e).context(format!("waiting for {what}"))),
                Some(Ok(Message::Close(close))) => {
                    let why = close.map_or_else(
                        || "no reason".to_string(),
                        |c| format!("{} {}", u16::from(c.code), c.reason),
                    );
                    bail!("closed by the server ({why}) while waiting for {what}");
                }
                Some(Ok(frame)) => frame,
            };
            let Some(msg) = decode(&frame)? else { continue };
            if let ServerMsg::Error { code, msg, .. } = &msg {
                bail!(
                    "server error {} while waiting for {what}: {msg}",
                    code.as_str()
                );
            }
            if let Some(v) = pick(msg) {
                return Ok(v);
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| anyhow!("no {what} within {} s", timeout.as_secs_f64()))?
}

/// Waits for `welcome` and returns the viewer's peer id.
///
/// # Errors
/// See [`expect`].
pub async fn welcome(ws: &mut Ws, timeout: Duration) -> anyhow::Result<PeerId> {
    expect(ws, "welcome", timeout, |m| match m {
        ServerMsg::Welcome { peer, .. } => Some(peer),
        _ => None,
    })
    .await
}

/// Joins `swarm` asking for `want` peers and returns the peers of the reply.
///
/// # Errors
/// See [`expect`]; also when the join can't be sent.
pub async fn join(
    ws: &mut Ws,
    swarm: &str,
    want: u32,
    format: Format,
    timeout: Duration,
) -> anyhow::Result<Vec<PeerId>> {
    let msg = ClientMsg::Join {
        swarm: swarm.into(),
        want,
    };
    ws.send(frame(&msg, format)?)
        .await
        .context("sending join")?;
    expect(ws, "peers", timeout, |m| match m {
        ServerMsg::Peers { swarm: s, peers } if s == swarm => Some(peers),
        _ => None,
    })
    .await
}
