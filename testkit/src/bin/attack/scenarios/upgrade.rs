//! Item 6, before the upgrade: slowloris (headers a byte a second), keep-alive HTTP
//! connections left idle, oversized headers, and the admin surface (/metrics, /admin/drain) on
//! the public listener.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::Checks;
use crate::fleet::Fleet;
use crate::net::tcp_from;
use crate::table::Row;
use crate::{HEADER_ABUSE_BYTES, HEADER_TIMEOUT_MAX, KEEPALIVE_IDLE_MAX, SLOW, Scale};

/// Keep-alive connections left idle.
const KEEPALIVE_CONNS: usize = 10;
/// Waiting for the default-configured tracker to come up.
const START_TIMEOUT: Duration = Duration::from_secs(15);

pub fn run(f: Arc<Fleet>, s: Scale) -> Checks {
    Box::pin(async move {
        // The slow checks wait in parallel.
        let (slow, idle, abuse, admin) =
            tokio::join!(slowloris(&f, s), keepalive(&f), headers(&f), admin(&f));
        let mut rows = Row::or_error(6, "slowloris", slow);
        rows.extend(Row::or_error(6, "keep-alive idle", idle));
        rows.extend(Row::or_error(6, "header abuse", abuse));
        rows.extend(Row::or_error(6, "admin surface", admin));
        rows
    })
}

/// Reads until the server closes (EOF or error); `false` at `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

async fn slowloris(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    let mut tasks = JoinSet::new();
    for _ in 0..s.slow_conns {
        let mut stream = tcp_from(SLOW, f.trackers[0], Duration::from_secs(5)).await?;
        tasks.spawn(async move {
            let opened = Instant::now();
            let deadline = opened + HEADER_TIMEOUT_MAX + Duration::from_secs(3);
            if stream.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n").await.is_err() {
                return Some(opened.elapsed());
            }
            let mut buf = [0u8; 512];
            while Instant::now() < deadline {
                // One more header byte a second, never the blank line.
                tokio::select! {
                    r = stream.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { return Some(opened.elapsed()) },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        if stream.write_all(b"x").await.is_err() {
                            return Some(opened.elapsed());
                        }
                    }
                }
            }
            None
        });
    }
    let mut closed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(d) = r? {
            closed.push(d);
        }
    }
    let in_time = closed.iter().filter(|d| **d <= HEADER_TIMEOUT_MAX).count();
    Ok(vec![Row::check(
        6,
        "slowloris: headers a byte a second",
        format!("closed within {HEADER_TIMEOUT_MAX:?} (header timeout)"),
        format!(
            "{in_time}/{} closed in time (slowest {:.1?})",
            s.slow_conns,
            closed.iter().max().copied().unwrap_or_default()
        ),
        in_time == s.slow_conns,
    )])
}

async fn keepalive(f: &Fleet) -> anyhow::Result<Vec<Row>> {
    let mut tasks = JoinSet::new();
    for _ in 0..KEEPALIVE_CONNS {
        let mut stream = tcp_from(SLOW, f.trackers[0], Duration::from_secs(5)).await?;
        tasks.spawn(async move {
            stream
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .ok()?;
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.ok()?;
            if !buf[..n].starts_with(b"HTTP/1.1 200") {
                return None;
            }
            let answered = Instant::now();
            closed_by(
                &mut stream,
                answered + KEEPALIVE_IDLE_MAX + Duration::from_secs(3),
            )
            .await
            .then(|| answered.elapsed())
        });
    }
    let mut closed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(d) = r? {
            closed.push(d);
        }
    }
    let in_time = closed.iter().filter(|d| **d <= KEEPALIVE_IDLE_MAX).count();
    Ok(vec![Row::check(
        6,
        "keep-alive connection left idle",
        format!("closed within {KEEPALIVE_IDLE_MAX:?} of its last request"),
        format!("{in_time}/{KEEPALIVE_CONNS} closed in time"),
        in_time == KEEPALIVE_CONNS,
    )])
}

async fn headers(f: &Fleet) -> anyhow::Result<Vec<Row>> {
    let mut stream = tcp_from(SLOW, f.trackers[0], Duration::from_secs(5)).await?;
    let mut req = String::from(
        "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    let filler = "a".repeat(1000);
    let mut n = 0;
    while req.len() < HEADER_ABUSE_BYTES {
        req.push_str(&format!("X-Filler-{n}: {filler}\r\n"));
        n += 1;
    }
    req.push_str("\r\n");
    // The server may close before it has read it all: that is a refusal too.
    let _ = stream.write_all(req.as_bytes()).await;
    let mut buf = vec![0u8; 1024];
    let got = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
    let status = match got {
        Ok(Ok(0)) | Ok(Err(_)) => "closed without an answer".to_string(),
        Ok(Ok(len)) => String::from_utf8_lossy(&buf[..len])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        Err(_) => "no answer within 10s".to_string(),
    };
    let refused = status.starts_with("closed") || status.contains(" 4");
    let (ready, _) =
        testkit::http::try_request(f.trackers[0], "GET", "/readyz", &[], Duration::from_secs(5))
            .await?;
    Ok(vec![Row::check(
        6,
        "oversized request headers",
        format!(
            "{} KiB of headers refused (4xx or closed); the tracker goes on",
            HEADER_ABUSE_BYTES / 1024
        ),
        format!("{n} headers: {status}; /readyz {ready} after"),
        refused && ready == 200,
    )])
}

/// `GET /metrics`, `POST /admin/drain` (no token) and `GET /readyz` on `addr`.
async fn surface(addr: std::net::SocketAddr) -> anyhow::Result<(u16, u16, u16)> {
    let t = Duration::from_secs(5);
    let (metrics, _) = testkit::http::try_request(addr, "GET", "/metrics", &[], t).await?;
    let (drain, _) = testkit::http::try_request(addr, "POST", "/admin/drain", &[], t).await?;
    let (ready, _) = testkit::http::try_request(addr, "GET", "/readyz", &[], t).await?;
    Ok((metrics, drain, ready))
}

async fn admin(f: &Fleet) -> anyhow::Result<Vec<Row>> {
    // The fleet's public listener and its front end.
    let (fm, fd, fr) = surface(f.front).await?;
    let (tm, td, tr) = surface(f.trackers[0]).await?;
    // A tracker started with the defaults but its port: is the admin surface on the public
    // listener?
    let port = testkit::process::free_port();
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = tokio::process::Command::new(&f.tracker_bin)
        .args(["--listen", &listen.to_string()])
        .env("TRACKER_ADMIN_TOKEN", "attack-admin-token")
        .env_remove("TRACKER_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", f.tracker_bin.display()))?;
    let until = Instant::now() + START_TIMEOUT;
    let default = loop {
        if let Ok(r) = surface(listen).await {
            break Some(r);
        }
        if Instant::now() > until || child.try_wait()?.is_some() {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill().await;
    let (dm, dd, dr) = default.context("the tracker with default settings did not come up")?;
    let off = |m: u16, d: u16| m != 200 && d != 401 && d != 200 && d != 202;
    Ok(vec![
        Row::check(
            6,
            "admin surface on the public listener (fleet)",
            "/metrics and /admin/drain not served on the front end or the public listener; /readyz is",
            format!(
                "front end: /metrics {fm}, /admin/drain {fd}, /readyz {fr}; tracker public: {tm}, {td}, {tr}"
            ),
            off(fm, fd) && off(tm, td) && tr == 200,
        ),
        Row::check(
            6,
            "admin surface with default settings",
            "only on a loopback admin listener by default: not on the public listener",
            format!("public listener: /metrics {dm}, /admin/drain {dd}, /readyz {dr}"),
            off(dm, dd) && dr == 200,
        ),
    ])
}
