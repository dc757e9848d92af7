//! A tracker as a separate process (the built binary), for tests that must kill it for real.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};

/// A `tracker` process on a free loopback port; killed on drop.
pub struct TrackerProcess {
    /// Its listener.
    pub addr: SocketAddr,
    child: Child,
}

impl TrackerProcess {
    /// Starts the tracker binary with these arguments (after `--listen`) and environment, and
    /// waits until `/healthz` answers.
    pub async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracker"));
        cmd.arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn tracker");
        let process = Self { addr, child };
        super::eventually("tracker process up", || async {
            tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
        })
        .await;
        process
    }

    /// The native protocol URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until the process exits on its own (e.g. at the end of a drain) and returns its
    /// exit code.
    pub async fn exited(&mut self) -> Option<i32> {
        super::eventually("tracker process exit", || {
            let status = self.child.try_wait().expect("try_wait");
            async move { status.map(|s| s.code()) }
        })
        .await
    }

    /// SIGKILL: no drain, no goodbye to Redis.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
