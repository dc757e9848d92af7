//! Real components for the autoscaler's integration tests, each on free 127.0.0.1 ports in its
//! own temporary folder and stopped on drop: `redis-server`, `haproxy` (rendered from
//! haproxy/haproxy.cfg.tmpl with an empty backend, as the autoscaler starts it), the
//! `autoscaler` binary with a config written by the test, and the `simulator`.
//!
//! A port picked by binding `127.0.0.1:0` can be taken by another test before the child binds
//! it: a child that exits at start is started again on fresh ports.

#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)] // a failed expectation fails the test

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long anything may take to come up, settle or go away.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Pause between polls.
pub const POLL: Duration = Duration::from_millis(50);
/// The admin token every test tracker gets.
pub const TOKEN: &str = "autoscaler-test-token";

/// Polls `f` until it returns `Some`, failing the test after `deadline`.
pub fn eventually<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        thread::sleep(POLL);
    }
}

/// A new empty folder under the system temp dir, unique across processes and threads.
pub fn temp_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("swarmtrack-as-{what}-{}-{n}", std::process::id()));
        if fs::create_dir(&dir).is_ok() {
            return dir;
        }
    }
}

/// A free loopback address (released: see the module note on races).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A binary of the workspace built next to this test (`target/debug/NAME`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/TEST -> target/debug/NAME
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: cargo build -p {name} (scripts/test builds the whole workspace)",
        bin.display()
    );
    bin
}

/// A child process killed on drop.
pub struct Proc {
    /// The process.
    pub child: Child,
}

impl Proc {
    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !matches!(
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim().chars().next()),
            Some('Z' | 'X')
        )
    })
}

/// A `redis-server` on a free port.
pub struct Redis {
    /// Its port.
    pub port: u16,
    proc: Proc,
    dir: PathBuf,
}

impl Redis {
    /// Starts one and waits until it answers PING.
    pub fn start() -> Self {
        let dir = temp_dir("redis");
        for _ in 0..20 {
            let port = free_addr().port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server (scripts/test installs it)");
            let mut proc = Proc { child };
            let end = Instant::now() + DEADLINE;
            while proc.running() && Instant::now() < end {
                if ping(port) {
                    return Self { port, proc, dir };
                }
                thread::sleep(POLL);
            }
            proc.kill();
        }
        panic!("redis-server did not start");
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The HAProxy template shared with production and scripts/fleet.
const TEMPLATE: &str = include_str!("../../../haproxy/haproxy.cfg.tmpl");

/// A `haproxy` whose `trackers` backend starts empty (leastconn).
pub struct Haproxy {
    /// Viewers' front end.
    pub front: SocketAddr,
    /// Runtime API socket.
    pub socket: PathBuf,
    /// Its folder (config, log, socket).
    pub dir: PathBuf,
    proc: Option<Proc>,
}

impl Haproxy {
    /// Starts one and waits until its runtime API answers.
    pub fn start() -> Self {
        let dir = temp_dir("haproxy");
        let socket = dir.join("haproxy.sock");
        let mut h = Self {
            front: free_addr(),
            socket,
            dir,
            proc: None,
        };
        h.launch();
        h
    }

    fn config(&self, stats: SocketAddr) -> String {
        let values = [
            ("GLOBAL_MAXCONN", "1000".to_string()),
            ("RUNTIME_SOCKET", self.socket.display().to_string()),
            ("FRONT_BIND", self.front.to_string()),
            ("RUN_AS", "# ".to_string()),
            ("TLS", "# ".to_string()),
            ("TLS_BIND", "127.0.0.1:0".to_string()),
            ("TLS_CERT", "/nonexistent.pem".to_string()),
            ("LEASTCONN", String::new()),
            ("SWARM", "# ".to_string()),
            ("HASH_BALANCE_FACTOR", "150".to_string()),
            ("CHECK_INTER", "200ms".to_string()),
            ("CHECK_FASTINTER", "100ms".to_string()),
            ("CHECK_FALL", "2".to_string()),
            ("CHECK_RISE", "1".to_string()),
            ("SLOWSTART", "1s".to_string()),
            ("SERVER_MAXCONN", "400".to_string()),
            ("SERVERS", String::new()),
            ("STATS_BIND", stats.to_string()),
        ];
        let mut text = TEMPLATE.to_string();
        for (k, v) in values {
            text = text.replace(&format!("@{k}@"), &v);
        }
        text
    }

    /// (Re)starts the process on the same socket; a new front port if the old one is taken.
    fn launch(&mut self) {
        for _ in 0..20 {
            let cfg = self.dir.join("haproxy.cfg");
            fs::write(&cfg, self.config(free_addr())).expect("write haproxy.cfg");
            let _ = fs::remove_file(&self.socket);
            let log = fs::File::create(self.dir.join("haproxy.log")).expect("log");
            let child = Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn haproxy (scripts/test installs it)");
            let mut proc = Proc { child };
            let end = Instant::now() + DEADLINE;
            while proc.running() && Instant::now() < end {
                if self.runtime("show info").is_some() {
                    self.proc = Some(proc);
                    return;
                }
                thread::sleep(POLL);
            }
            proc.kill();
            self.front = free_addr();
        }
        panic!("haproxy did not start: {}", self.log());
    }

    /// Stops and starts haproxy again as a reload would leave it: dynamic servers gone.
    pub fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        self.launch();
    }

    /// One runtime API command (blocking, bounded); `None` on an I/O error.
    pub fn runtime(&self, command: &str) -> Option<String> {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("{command}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).ok()?;
        Some(reply)
    }

    /// `ws://FRONT/v1/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.front)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        if thread::panicking() {
            eprintln!("haproxy log:\n{}", self.log());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The `autoscaler` binary with a local provider, its config and state in a temp folder.
pub struct Autoscaler {
    /// Status listener.
    pub status: SocketAddr,
    /// Folder of the config, the log and the local provider's state.
    pub dir: PathBuf,
    /// Extra environment for the binary (e.g. AWS credentials for moto).
    pub env: Vec<(String, String)>,
    proc: Option<Proc>,
    starts: usize,
}

impl Autoscaler {
    /// Writes the config `make_config` returns for the local provider's state folder, and
    /// starts the binary.
    pub fn start(make_config: impl FnOnce(&Path) -> String) -> Self {
        Self::start_with_env(Vec::new(), make_config)
    }

    /// As [`start`](Self::start), with extra environment variables.
    pub fn start_with_env(
        env: Vec<(String, String)>,
        make_config: impl FnOnce(&Path) -> String,
    ) -> Self {
        let dir = temp_dir("autoscaler");
        let config = make_config(&Self::state_dir_for(&dir));
        fs::write(dir.join("autoscaler.toml"), config).expect("write config");
        let mut a = Self {
            status: free_addr(),
            dir,
            env,
            proc: None,
            starts: 0,
        };
        a.launch();
        a
    }

    /// Its config file (rewrite it, then [`launch`](Self::launch) again, to restart with
    /// another config).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("autoscaler.toml")
    }

    /// The local provider's state folder to name in the config.
    pub fn state_dir_for(dir: &Path) -> PathBuf {
        dir.join("state")
    }

    /// (Re)starts the binary and waits until `/status` answers.
    pub fn launch(&mut self) {
        for _ in 0..20 {
            self.starts += 1;
            let log = fs::File::create(self.dir.join(format!("autoscaler.{}.log", self.starts)))
                .expect("log");
            let child = Command::new(env!("CARGO_BIN_EXE_autoscaler"))
                .arg("--config")
                .arg(self.dir.join("autoscaler.toml"))
                .arg("--status-listen")
                .arg(self.status.to_string())
                .env("TRACKER_ADMIN_TOKEN", TOKEN)
                .env("RUST_LOG", "info,autoscaler=debug")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .env_remove("AUTOSCALER_CONFIG")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn autoscaler");
            let mut proc = Proc { child };
            let end = Instant::now() + DEADLINE;
            while proc.running() && Instant::now() < end {
                if self.get("/healthz").is_some() {
                    self.proc = Some(proc);
                    return;
                }
                thread::sleep(POLL);
            }
            proc.kill();
            self.status = free_addr();
        }
        panic!("autoscaler did not start: {}", self.log());
    }

    /// SIGKILL: no goodbye, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Every log so far.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                fs::read_to_string(self.dir.join(format!("autoscaler.{n}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// GET `path` on the status listener; the body of a 200 answer.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.status, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).ok()?;
        let (head, body) = reply.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_string())
    }

    /// `/status` as JSON.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.get("/status")?).ok()
    }

    /// The local provider's instance records: (id, pid, phase).
    pub fn records(&self) -> Vec<(String, Option<u32>, String)> {
        let Ok(entries) = fs::read_dir(Self::state_dir_for(&self.dir)) else {
            return Vec::new();
        };
        let mut out: Vec<_> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| {
                let v: serde_json::Value =
                    serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
                Some((
                    v["id"].as_str()?.to_string(),
                    v["pid"].as_u64().map(|p| p as u32),
                    v["phase"].as_str()?.to_string(),
                ))
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        self.kill();
        // The instances it started outlive it by design (restart safety): stop them here,
        // each a process group (the machine and its tracker).
        for (_, pid, _) in self.records() {
            if let Some(pid) = pid.filter(|&p| pid_alive(p)) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
        if thread::panicking() {
            eprintln!("autoscaler log:\n{}", self.log());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The config of a test fleet: fast polls and checks, short drains; `extra` (top-level keys
/// first, then whole sections such as `[targets]`, `[scaling]`) comes before the fixed sections.
pub fn test_config(haproxy: &Haproxy, redis: &Redis, state_dir: &Path, extra: &str) -> String {
    format!(
        r#"fleet = "test"
poll_interval_ms = 500
{extra}

[haproxy]
socket = "{socket}"
backend = "trackers"
timeout_ms = 2000

[haproxy.server]
check_inter_ms = 200
check_fastinter_ms = 100
check_fall = 2
check_rise = 1
slowstart_ms = 0
maxconn = 400

[local]
tracker_bin = "{tracker}"
state_dir = "{state}"
args = ["--redis-url", "{redis}"]

[local.env]
RUST_LOG = "warn"
TRACKER__DRAIN__RECONNECT_WINDOW_MS = "1000"
TRACKER__DRAIN__CLOSE_GRACE_MS = "1000"
TRACKER__DRAIN__DEADLINE_SECS = "8"
"#,
        socket = haproxy.socket.display(),
        tracker = workspace_bin("tracker").display(),
        state = state_dir.display(),
        redis = redis.url(),
    )
}
