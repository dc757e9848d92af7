//! Where viewers connect, from which source address, and the WebSocket they get.
//!
//! Every connection binds its socket to one of several loopback source addresses: each has
//! its own ~28k ephemeral ports, so tens of thousands of connections (and the TIME_WAIT sockets
//! of earlier runs) never run out. Only 127.0.0.0/8 targets are accepted: the simulator sends
//! load to this machine and nowhere else. TLS ends at the load balancer, so only `ws://`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Bytes tungstenite reads at a time (and zeroes first) on each connection.
const READ_BUFFER_BYTES: usize = 4096;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Why a URL can't be a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a URL.
    #[error("{0:?} is not a URL")]
    Malformed(String),
    /// Another scheme than `ws`.
    #[error("{0:?}: only ws:// is supported (TLS ends at the load balancer)")]
    Scheme(String),
    /// The host is not an IPv4 loopback address.
    #[error("{0:?}: the host must be an address in 127.0.0.0/8 (or localhost)")]
    NotLoopback(String),
}

/// A tracker (or front end) URL, checked once.
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    addr: SocketAddr,
}

impl Target {
    /// Parses `ws://HOST:PORT/PATH`; with `msgpack`, asks for `welcome` in MessagePack too.
    ///
    /// # Errors
    /// See [`TargetError`].
    pub fn parse(url: &str, msgpack: bool) -> Result<Self, TargetError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| TargetError::Malformed(url.to_string()))?;
        if uri.scheme_str() != Some("ws") {
            return Err(TargetError::Scheme(url.to_string()));
        }
        let host = uri
            .host()
            .ok_or_else(|| TargetError::Malformed(url.to_string()))?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse::<Ipv4Addr>()
                .map_err(|_| TargetError::NotLoopback(url.to_string()))?
        };
        if !ip.is_loopback() {
            return Err(TargetError::NotLoopback(url.to_string()));
        }
        let mut url = url.to_string();
        if msgpack {
            url.push(if uri.query().is_some() { '&' } else { '?' });
            url.push_str("format=msgpack");
        }
        Ok(Self {
            url,
            addr: SocketAddr::new(IpAddr::V4(ip), uri.port_u16().unwrap_or(80)),
        })
    }

    /// The URL for a viewer of `swarm`: the swarm goes in the query too, so a swarm-affine
    /// front end (HAProxy `balance url_param swarm`) can route on it.
    pub fn url_for(&self, swarm: &str) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}swarm={swarm}", self.url)
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Source address `i` of worker `worker`: 127.0.`worker`.1 ..= 127.0.`worker`.`count`.
pub fn source_addr(worker: u8, i: u64, count: u8) -> IpAddr {
    let count = u64::from(count.max(1));
    let octet = u8::try_from(1 + i % count).unwrap_or(1);
    IpAddr::V4(Ipv4Addr::new(127, 0, worker, octet))
}

/// Why a connection attempt failed, as counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The process ran out of file descriptors.
    #[error("out of file descriptors")]
    FdLimit,
    /// TCP connect refused (nothing listening).
    #[error("connection refused")]
    Refused,
    /// The upgrade got an HTTP status instead of 101.
    #[error("HTTP {0}")]
    Status(u16),
    /// Too slow.
    #[error("timed out")]
    Timeout,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl ConnectError {
    /// The label in the report.
    pub fn label(&self) -> String {
        match self {
            ConnectError::FdLimit => "fd_limit".into(),
            ConnectError::Refused => "refused".into(),
            ConnectError::Status(s) => format!("http_{s}"),
            ConnectError::Timeout => "timeout".into(),
            ConnectError::Other(_) => "other".into(),
        }
    }

    pub(crate) fn io(e: &io::Error) -> Self {
        // EMFILE / ENFILE: the descriptor limit, which the report must name.
        match (e.kind(), e.raw_os_error()) {
            (_, Some(23 | 24)) => ConnectError::FdLimit,
            (io::ErrorKind::ConnectionRefused, _) => ConnectError::Refused,
            _ => ConnectError::Other(e.to_string()),
        }
    }
}

/// Opens a WebSocket to `url` (at `target`'s address) from `source`.
///
/// # Errors
/// See [`ConnectError`].
pub async fn connect(
    target: &Target,
    url: &str,
    source: IpAddr,
    timeout: Duration,
) -> Result<Ws, ConnectError> {
    let attempt = async {
        let socket = TcpSocket::new_v4().map_err(|e| ConnectError::io(&e))?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| ConnectError::io(&e))?;
        let stream = socket
            .connect(target.addr)
            .await
            .map_err(|e| ConnectError::io(&e))?;
        // Signals are small and latency is measured: Nagle must not hold them back.
        stream.set_nodelay(true).map_err(|e| ConnectError::io(&e))?;
        let request = url
            .into_client_request()
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        // tungstenite zeroes the unused part of its read buffer before every read: at its
        // 128 KiB default that memset was a third of the simulator's CPU (perf). Frames here
        // are under 1 KiB but for announces, which the buffer grows to once.
        let config = WebSocketConfig::default()
            .max_message_size(Some(1 << 20))
            .read_buffer_size(READ_BUFFER_BYTES);
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                Err(ConnectError::Status(r.status().as_u16()))
            }
            Err(tokio_tungstenite::tungstenite::Error::Io(e)) => Err(ConnectError::io(&e)),
            Err(e) => Err(ConnectError::Other(e.to_string())),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_ws() {
        assert!(Target::parse("ws://127.0.0.1:8000/v1/ws", false).is_ok());
        assert!(Target::parse("ws://localhost:8000/v1/ws", false).is_ok());
        assert!(Target::parse("ws://127.3.2.1:80/", false).is_ok());
        assert!(matches!(
            Target::parse("ws://10.0.0.1:8000/v1/ws", false),
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::parse("wss://127.0.0.1/v1/ws", false),
            Err(TargetError::Scheme(_))
        ));
        assert!(Target::parse("not a url", false).is_err());
    }

    #[test]
    fn urls_carry_format_and_swarm() {
        let t = Target::parse("ws://127.0.0.1:8000/v1/ws", true).unwrap();
        assert_eq!(t.url(), "ws://127.0.0.1:8000/v1/ws?format=msgpack");
        assert_eq!(
            t.url_for("w0-v3"),
            "ws://127.0.0.1:8000/v1/ws?format=msgpack&swarm=w0-v3"
        );
    }

    #[test]
    fn source_addresses_rotate() {
        assert_eq!(source_addr(0, 0, 4).to_string(), "127.0.0.1");
        assert_eq!(source_addr(0, 5, 4).to_string(), "127.0.0.2");
        assert_eq!(source_addr(2, 3, 4).to_string(), "127.0.2.4");
    }
}
