//! What the simulator's integration tests share: a tracker in this process on a free loopback
//! port (with its admin endpoints and metrics), the simulator binary run with a deadline, and
//! readers for its JSON report.

#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)] // each test uses a part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracker::config::{Config, Secret};

pub const ADMIN_TOKEN: &str = "sim-test-token";
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A tracker running in this process.
pub struct Tracker {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

pub fn config() -> Config {
    let mut c = Config::default();
    c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.admin_token = Some(Secret::new(ADMIN_TOKEN));
    c
}

impl Tracker {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind(config.server.listen).await.unwrap();
        Self::on(listener, config)
    }

    pub fn on(listener: TcpListener, config: Config) -> Self {
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let listeners = tracker::Listeners {
            main: listener,
            admin: None,
        };
        let task = tokio::spawn(tracker::run(config, listeners, stop.clone()));
        Self { addr, stop, task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// The WebTorrent tracker protocol's URL.
    pub fn announce_url(&self) -> String {
        format!("ws://{}/announce", self.addr)
    }

    pub async fn http(&self, method: &str, path: &str) -> String {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    pub async fn metric(&self, name: &str) -> f64 {
        let body = self.http("GET", "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Tracker {
    /// Waits for the tracker to exit by itself (after a drain).
    pub async fn exited(mut self) {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async { Ok(()) }));
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("the tracker didn't exit")
            .unwrap()
            .unwrap();
    }
}

impl Tracker {
    /// Once `connections` are open, drains this tracker, waits for it to exit (once its
    /// clients have gone) and starts a new one on its address, as in a restart in place behind
    /// a front end.
    pub async fn restart_once_connected(self, connections: u64) -> Tracker {
        let until = Instant::now() + DEADLINE;
        while self.metric("tracker_connections").await < connections as f64 {
            assert!(Instant::now() < until, "clients never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reply = self.http("POST", "/admin/drain").await;
        assert!(reply.starts_with("HTTP/1.1 20"), "{reply}");
        let addr = self.addr;
        self.exited().await;
        let listener = TcpListener::bind(addr).await.unwrap();
        Tracker::on(listener, config())
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simtest-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the simulator with `args` and waits for it, within [`DEADLINE`].
pub async fn simulate(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_simulator"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, child)
        .await
        .expect("the simulator didn't end in time")
        .unwrap();
    (out, started.elapsed())
}

pub fn report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {path} in the report"))
}

pub fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no {path} in the report"))
}

pub fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
