//! Connections from a chosen loopback source address: the attacker and the legitimate viewer
//! must look like different hosts to HAProxy's per-source limits.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::Context;
use swarmtrack_protocol::Format;
use testkit::native::{Client, Ws};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;

/// A TCP connection from `src` (any port) to `to`, within `timeout`.
///
/// # Errors
/// Binding, connecting, or the timeout.
pub async fn tcp_from(
    src: Ipv4Addr,
    to: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<TcpStream> {
    tcp_with(src, to, timeout, None).await
}

/// [`tcp_from`] with the socket's receive buffer set to `rcvbuf` bytes before connecting, so a
/// client that stops reading stalls the server after a few KB instead of the megabytes
/// loopback's autotuned buffers would absorb.
///
/// # Errors
/// As [`tcp_from`].
pub async fn tcp_with(
    src: Ipv4Addr,
    to: SocketAddr,
    timeout: Duration,
    rcvbuf: Option<u32>,
) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddrV4::new(src, 0).into())?;
    let stream = tokio::time::timeout(timeout, socket.connect(to))
        .await
        .with_context(|| format!("connect {src} -> {to}: no answer within {timeout:?}"))?
        .with_context(|| format!("connect {src} -> {to}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A WebSocket upgrade of `/v1/ws` (with `query`, e.g. `format=msgpack`) from `src` to `to`,
/// within `timeout` in all.
///
/// # Errors
/// The connection or the upgrade failed (an HTTP refusal names its status), or the timeout.
pub async fn ws_from(
    src: Ipv4Addr,
    to: SocketAddr,
    query: &str,
    timeout: Duration,
) -> anyhow::Result<Ws> {
    ws_with(src, to, query, timeout, None).await
}

/// [`ws_from`] with a small receive buffer (see [`tcp_with`]).
///
/// # Errors
/// As [`ws_from`].
pub async fn ws_with(
    src: Ipv4Addr,
    to: SocketAddr,
    query: &str,
    timeout: Duration,
    rcvbuf: Option<u32>,
) -> anyhow::Result<Ws> {
    let upgrade = async {
        let tcp = tcp_with(src, to, timeout, rcvbuf).await?;
        let url = format!("ws://{to}/v1/ws?{query}");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .context("upgrade")?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(timeout, upgrade)
        .await
        .with_context(|| format!("upgrade {src} -> {to}: not done within {timeout:?}"))?
}

/// A viewer (testkit's client: it panics on a protocol surprise, which fails its scenario)
/// from `src` to a tracker or the front end, after its `welcome`.
///
/// # Errors
/// The connection or the upgrade failed.
pub async fn viewer_from(src: Ipv4Addr, to: SocketAddr, format: Format) -> anyhow::Result<Client> {
    viewer_with(src, to, format, None).await
}

/// [`viewer_from`] with a small receive buffer (see [`tcp_with`]).
///
/// # Errors
/// As [`viewer_from`].
pub async fn viewer_with(
    src: Ipv4Addr,
    to: SocketAddr,
    format: Format,
    rcvbuf: Option<u32>,
) -> anyhow::Result<Client> {
    let query = match format {
        Format::Json => "",
        Format::MsgPack => "format=msgpack",
    };
    let ws = ws_with(src, to, query, Duration::from_secs(10), rcvbuf).await?;
    Ok(Client::from_ws(ws, format).await)
}
