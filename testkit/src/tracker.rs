//! Trackers under test, two ways: [`TestServer`] runs `tracker::run` in this process on
//! `127.0.0.1:0` (no port race at all: the test binds the listeners), [`TrackerProcess`] runs
//! the built binary on a free port, for tests that must kill it for real or watch it exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use ::tracker::config::{Config, Secret};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::{metric_value, request};
use crate::process::{
    Process, START_ATTEMPTS, free_port, log_file, read_log, says_port_taken, tail, temp_dir,
    workspace_bin,
};
use crate::wait::{DEADLINE, Deadline, LONG_DEADLINE, eventually, within_for};

/// The admin token test trackers get (`TRACKER_ADMIN_TOKEN` for processes).
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The fleet key test trackers share (`TRACKER_FLEET_KEY` for processes): every tracker with
/// Redis needs one, and trackers of one fleet the same.
pub const FLEET_KEY: &str = "test-fleet-key-0123456789abcdef0123456789abcdef";

/// A config for tests: loopback, an admin token, the test fleet key, no admin listener (so
/// [`TestServer`] serves `/metrics` on the main listener, on the worker threads that serve the
/// viewers: a test with one worker reads counters after the work it waited for), defaults
/// otherwise.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.server.admin_listen = None;
    c.admin_token = Some(Secret::new(ADMIN_TOKEN));
    c.fleet_key = Some(Secret::new(FLEET_KEY));
    c
}

/// A tracker running in this process; stopped (cancelled, then its task aborted) on drop.
pub struct TestServer {
    /// The main listener.
    pub addr: SocketAddr,
    /// The admin listener, if configured.
    pub admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a tracker with [`test_config`].
    pub async fn start() -> Self {
        Self::with_config(test_config()).await
    }

    /// Starts a tracker; `config.server.admin_listen` set to anything makes a separate admin
    /// listener on a free port.
    ///
    /// # Panics
    /// When a loopback listener can't be bound.
    pub async fn with_config(config: Config) -> Self {
        let main = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = match config.server.admin_listen {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.expect("bind admin")),
            None => None,
        };
        Self::on(main, admin, config)
    }

    /// Starts a tracker on listeners the test bound (e.g. the address of one that stopped).
    ///
    /// # Panics
    /// When a listener has no local address.
    pub fn on(main: TcpListener, admin: Option<TcpListener>, config: Config) -> Self {
        let addr = main.local_addr().expect("addr");
        let admin_addr = admin.as_ref().map(|a| a.local_addr().expect("admin addr"));
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(::tracker::run(
            config,
            ::tracker::Listeners { main, admin },
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

    /// The WebTorrent tracker protocol's URL.
    pub fn announce_url(&self) -> String {
        format!("ws://{}/announce", self.addr)
    }

    /// Where `/metrics` and `/admin` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.unwrap_or(self.addr)
    }

    /// The Prometheus text.
    ///
    /// # Panics
    /// When `/metrics` doesn't answer 200.
    pub async fn metrics(&self) -> String {
        let (status, body) = request(self.admin_addr(), "GET", "/metrics", &[]).await;
        assert_eq!(status, 200, "metrics: {body}");
        body
    }

    /// One sample's value (0 when absent), e.g. `tracker_errors_sent_total{code="too_large"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Waits until a metric sample reaches `want`.
    ///
    /// # Panics
    /// When it doesn't within [`DEADLINE`].
    pub async fn wait_metric(&self, series: &str, want: f64) {
        eventually(&format!("{series} == {want}"), || async {
            (self.metric(series).await == want).then_some(())
        })
        .await;
    }

    /// An admin request with the test token, e.g. `POST /admin/drain`; status and body.
    pub async fn admin_request(&self, method: &str, path: &str) -> (u16, String) {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        request(
            self.admin_addr(),
            method,
            path,
            &[("Authorization", auth.as_str())],
        )
        .await
    }

    /// Asks the tracker to stop (as SIGTERM does) without waiting.
    pub fn request_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for `run` to return, within [`DEADLINE`], and gives its result.
    ///
    /// # Panics
    /// When it doesn't return in time, or panicked.
    pub async fn exited(&mut self) -> anyhow::Result<()> {
        self.exited_within(DEADLINE).await
    }

    /// Waits for `run` to return, within `deadline`, and gives its result.
    ///
    /// # Panics
    /// When it doesn't return in time, or panicked.
    pub async fn exited_within(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let handle = self.handle.take().expect("already awaited");
        within_for("tracker exit", deadline, handle)
            .await
            .expect("run task panicked")
    }

    /// Once `connections` viewers are connected, drains this tracker, waits for it to exit (once
    /// its viewers have gone) and starts a new one with `config` on its address, as a restart in
    /// place behind a front end does.
    ///
    /// # Panics
    /// When the viewers don't come, the drain is refused, the tracker doesn't exit cleanly
    /// within [`LONG_DEADLINE`] or its address can't be bound again.
    pub async fn restart_once_connected(mut self, connections: u64, config: Config) -> Self {
        let deadline = Deadline::after("viewers to arrive", LONG_DEADLINE);
        while self.metric("tracker_connections").await < connections as f64 {
            deadline.tick().await;
        }
        let (status, body) = self.admin_request("POST", "/admin/drain").await;
        assert!((200..300).contains(&status), "drain: {status} {body}");
        self.exited_within(LONG_DEADLINE)
            .await
            .expect("the drained tracker's run failed");
        let listener = TcpListener::bind(self.addr).await.expect("bind again");
        Self::on(listener, None, config)
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

/// A `tracker` process (the built binary, found by [`workspace_bin`]) on a free loopback
/// port; killed on drop. Its output goes to a log whose end is printed if the test fails.
pub struct TrackerProcess {
    /// Its listener.
    pub addr: SocketAddr,
    /// Its admin listener (`/metrics`, `/admin/*`).
    pub admin: SocketAddr,
    /// Declared before `_dir`: the process is killed before its folder goes.
    process: Process,
    log: PathBuf,
    _dir: TempDir,
}

impl TrackerProcess {
    /// Starts the tracker binary with these arguments (after `--listen` and `--admin-listen`,
    /// both on free loopback ports) and environment (`RUST_LOG=warn` and
    /// `TRACKER_FLEET_KEY=`[`FLEET_KEY`] unless given), and waits until it listens.
    ///
    /// # Panics
    /// When it exits at start for another reason than a taken port, or doesn't listen within
    /// [`LONG_DEADLINE`].
    pub async fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_with_limit(None, args, env).await
    }

    /// [`spawn`](Self::spawn) with its descriptor limit (soft and hard) set to `nofile`
    /// (through `prlimit`, util-linux), when given.
    ///
    /// # Panics
    /// As [`spawn`](Self::spawn).
    pub async fn spawn_with_limit(
        nofile: Option<u64>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let bin = workspace_bin("tracker");
        let dir = temp_dir("tracker");
        for attempt in 0..START_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = dir.path().join(format!("tracker.{attempt}.log"));
            let (out, err) = log_file(&log);
            let mut cmd = match nofile {
                // prlimit sets the limit and execs the tracker: the same pid.
                Some(n) => {
                    let mut c = Command::new("prlimit");
                    c.arg(format!("--nofile={n}:{n}")).arg("--").arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            cmd.arg("--listen")
                .arg(addr.to_string())
                .arg("--admin-listen")
                .arg(admin.to_string())
                .args(args)
                .env("RUST_LOG", "warn")
                .env("TRACKER_FLEET_KEY", FLEET_KEY)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut process = Process::spawn("tracker", &mut cmd);
            let deadline = Deadline::after("tracker process to listen", LONG_DEADLINE);
            loop {
                if let Some(status) = process.try_exit() {
                    let text = read_log(&log);
                    if says_port_taken(&text) {
                        break;
                    }
                    panic!("tracker exited at start ({status}):\n{}", tail(&text, 30));
                }
                // Only our child counts: another test's server may listen on a port we both
                // picked.
                if process.listens_on(addr.port()) && process.listens_on(admin.port()) {
                    return Self {
                        addr,
                        admin,
                        process,
                        log,
                        _dir: dir,
                    };
                }
                if deadline.passed() {
                    panic!("tracker never listened:\n{}", tail(&read_log(&log), 30));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        panic!("tracker found no free port in {START_ATTEMPTS} attempts");
    }

    /// The native protocol URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Waits until the process exits on its own (e.g. at the end of a drain) and returns its
    /// exit code.
    ///
    /// # Panics
    /// When it still runs after [`DEADLINE`].
    pub async fn exited(&mut self) -> Option<i32> {
        eventually("tracker process exit", || {
            let status = self.process.try_exit();
            async move { status.map(|s| s.code()) }
        })
        .await
    }

    /// SIGKILL: no drain, no goodbye to Redis.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Its log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "tracker on {} (last log lines):\n{}",
                self.addr,
                tail(&self.log(), 30)
            );
        }
    }
}
