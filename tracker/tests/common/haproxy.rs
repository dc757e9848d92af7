//! A real `haproxy` in front of test trackers, rendered from the same template as production
//! and `scripts/fleet` (`haproxy/haproxy.cfg.tmpl`), on free 127.0.0.1 ports with its own
//! temporary directory and runtime socket; killed and cleaned up on drop. A small client for the
//! runtime API (one command per connection over the unix socket) reads server states.
//!
//! Ports are picked by binding `127.0.0.1:0`, so another test may take one before haproxy binds
//! it: haproxy then exits at start ("cannot bind socket") and is started again on fresh ports.
//! Everything here blocks the calling thread for at most a few seconds; haproxy never depends on
//! the code under test, so that is safe inside async tests too.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed expectation fails the test

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::DEADLINE;

/// The template shared with `scripts/fleet`.
pub const TEMPLATE: &str = include_str!("../../../haproxy/haproxy.cfg.tmpl");

/// The backend every tracker is a server of.
pub const BACKEND: &str = "trackers";

/// Tries at fresh ports before giving up; each retry means another process won a bind race.
const START_ATTEMPTS: usize = 20;

/// Pause between polls.
const POLL: Duration = Duration::from_millis(10);

/// How the backend picks a tracker for a new viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// `balance leastconn`.
    LeastConn,
    /// `balance url_param swarm` with a bounded-load consistent hash.
    Swarm,
}

/// The values of the template's settings that tests choose.
#[derive(Clone, Debug)]
pub struct Options {
    /// Backend algorithm.
    pub routing: Routing,
    /// Health check interval (HAProxy time syntax, e.g. `200ms`).
    pub check_inter: &'static str,
    /// Interval while a server changes state.
    pub check_fastinter: &'static str,
    /// Failed checks before a server is marked down.
    pub check_fall: u32,
    /// Passed checks before a server is marked up again.
    pub check_rise: u32,
    /// Warm-up of a server coming back up.
    pub slowstart: &'static str,
    /// `hash-balance-factor` of the swarm-affine backend, in percent.
    pub hash_balance_factor: u32,
    /// Per-server `maxconn`.
    pub server_maxconn: u32,
    /// `global maxconn`.
    pub global_maxconn: u32,
}

impl Options {
    /// Fast checks so a dead or draining tracker is noticed within a second.
    pub fn new(routing: Routing) -> Self {
        Self {
            routing,
            check_inter: "200ms",
            check_fastinter: "100ms",
            check_fall: 2,
            check_rise: 1,
            slowstart: "1s",
            hash_balance_factor: 150,
            // Tests hold tens of viewers; HAProxy needs ~2 x maxconn descriptors at start.
            server_maxconn: 200,
            global_maxconn: 256,
        }
    }
}

/// The template with every placeholder replaced; fails the test if one has no value.
pub fn render(values: &HashMap<&str, String>) -> String {
    let mut text = TEMPLATE.to_string();
    for (key, value) in values {
        text = text.replace(&format!("@{key}@"), value);
    }
    if let Some(left) = placeholder(&text) {
        panic!("haproxy.cfg.tmpl: no value for {left}");
    }
    text
}

/// The first `@NAME@` placeholder left in `text`.
pub fn placeholder(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(start) = rest.find('@') {
        let after = &rest[start + 1..];
        let len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(after.len());
        if len > 0 && after[len..].starts_with('@') {
            return Some(&rest[start..start + len + 2]);
        }
        rest = after;
    }
    None
}

/// The values for a config: `servers` become `t1`, `t2`, ... in order.
pub fn values(
    options: &Options,
    servers: &[SocketAddr],
    front: SocketAddr,
    stats: SocketAddr,
    socket: &Path,
) -> HashMap<&'static str, String> {
    let comment = |on: bool| if on { String::new() } else { "# ".to_string() };
    let servers: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("    server t{} {a}", i + 1))
        .collect();
    HashMap::from([
        ("GLOBAL_MAXCONN", options.global_maxconn.to_string()),
        ("RUNTIME_SOCKET", socket.display().to_string()),
        ("FRONT_BIND", front.to_string()),
        ("RUN_AS", comment(false)),
        ("TLS", comment(false)),
        ("TLS_BIND", "127.0.0.1:0".to_string()),
        ("TLS_CERT", "/nonexistent.pem".to_string()),
        ("LEASTCONN", comment(options.routing == Routing::LeastConn)),
        ("SWARM", comment(options.routing == Routing::Swarm)),
        (
            "HASH_BALANCE_FACTOR",
            options.hash_balance_factor.to_string(),
        ),
        ("CHECK_INTER", options.check_inter.to_string()),
        ("CHECK_FASTINTER", options.check_fastinter.to_string()),
        ("CHECK_FALL", options.check_fall.to_string()),
        ("CHECK_RISE", options.check_rise.to_string()),
        ("SLOWSTART", options.slowstart.to_string()),
        ("SERVER_MAXCONN", options.server_maxconn.to_string()),
        ("SERVERS", servers.join("\n")),
        ("STATS_BIND", stats.to_string()),
    ])
}

/// One server as `show stat` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStat {
    /// `svname`, e.g. `t1`.
    pub name: String,
    /// `status`: `UP`, `DOWN`, `MAINT`, `DRAIN`, `UP 1/2` (going down), `DOWN 1/2` (going up).
    pub status: String,
    /// `scur`: sessions now.
    pub sessions: u64,
    /// `stot`: sessions since start.
    pub total: u64,
    /// `wredis`: requests this server answered with a retryable failure (e.g. 503) that went to
    /// another server.
    pub redispatched: u64,
}

/// Parses the servers of a `show stat` CSV dump (the header names the columns).
pub fn parse_show_stat(csv: &str) -> Vec<ServerStat> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .expect("show stat header")
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("show stat has no {name} column"))
    };
    let (px, sv, status, scur, stot, wredis) = (
        col("pxname"),
        col("svname"),
        col("status"),
        col("scur"),
        col("stot"),
        col("wredis"),
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[sv] != "FRONTEND" && f[sv] != "BACKEND" && f[px] == BACKEND)
        .map(|f| ServerStat {
            name: f[sv].to_string(),
            status: f[status].to_string(),
            sessions: f[scur].parse().unwrap_or(0),
            total: f[stot].parse().unwrap_or(0),
            redispatched: f[wredis].parse().unwrap_or(0),
        })
        .collect()
}

/// A `haproxy` child process in front of test trackers.
pub struct Haproxy {
    /// The viewers' front end.
    pub front: SocketAddr,
    /// Stats page and Prometheus exporter.
    pub stats: SocketAddr,
    /// The rendered config.
    pub config: String,
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl Haproxy {
    /// Starts haproxy in front of `servers` (named `t1`, `t2`, ... in order) and waits until its
    /// runtime API answers. Servers may still be on their first checks: see
    /// [`wait_status`](Self::wait_status).
    pub fn start(servers: &[SocketAddr], options: &Options) -> Self {
        let dir = temp_dir();
        let socket = dir.join("haproxy.sock");
        for _ in 0..START_ATTEMPTS {
            let (front, stats) = two_free_addrs();
            let config = render(&values(options, servers, front, stats, &socket));
            let mut proxy = Self {
                front,
                stats,
                config,
                dir: dir.clone(),
                socket: socket.clone(),
                child: None,
            };
            match proxy.launch() {
                Ok(()) => return proxy,
                // Keep the directory for the next attempt: forget it before the drop.
                Err(Launch::PortTaken) => proxy.dir = PathBuf::new(),
                Err(Launch::Failed(why)) => panic!("haproxy did not start: {why}"),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("haproxy found no free ports in {START_ATTEMPTS} attempts");
    }

    fn launch(&mut self) -> Result<(), Launch> {
        let cfg = self.dir.join("haproxy.cfg");
        fs::write(&cfg, &self.config).expect("write haproxy.cfg");
        let _ = fs::remove_file(&self.socket);
        let log = File::create(self.log_path()).expect("haproxy.log");
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn haproxy (scripts/test installs it)");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let log = self.log();
                if log.contains("cannot bind socket") || log.contains("Address already in use") {
                    return Err(Launch::PortTaken);
                }
                return Err(Launch::Failed(format!("exited {status}: {log}")));
            }
            // The socket is in our own directory: whoever answers on it is our child, and it
            // binds every listener before it serves the runtime API.
            if self.try_runtime("show info").is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Launch::Failed(format!("no runtime API: {}", self.log())));
            }
            thread::sleep(POLL);
        }
    }

    /// `ws://FRONT/v1/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.front)
    }

    /// The front-end URL with the routing key of the swarm-affine backend.
    pub fn swarm_url(&self, swarm: &str) -> String {
        format!("ws://{}/v1/ws?swarm={swarm}", self.front)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("haproxy.log")
    }

    /// haproxy's log so far (alerts, server state changes, one line per finished session).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs one runtime API command and returns its reply.
    ///
    /// # Errors
    /// An I/O error (haproxy not up yet, or gone).
    pub fn try_runtime(&self, command: &str) -> io::Result<String> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(DEADLINE))?;
        s.set_write_timeout(Some(DEADLINE))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    }

    /// Runs one runtime API command; fails the test on an I/O error.
    pub fn runtime(&self, command: &str) -> String {
        self.try_runtime(command)
            .unwrap_or_else(|e| panic!("runtime API {command:?}: {e}"))
    }

    /// Every server of the trackers' backend.
    pub fn servers(&self) -> Vec<ServerStat> {
        parse_show_stat(&self.runtime(&format!("show stat {BACKEND} 4 -1")))
    }

    /// One server's `show stat` line.
    pub fn server(&self, name: &str) -> ServerStat {
        self.servers()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    /// Waits until server `name` has exactly this status (e.g. `UP`, `DOWN`) and returns how
    /// long that took.
    pub fn wait_status(&self, name: &str, status: &str) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.server(name).status;
            if now == status {
                return start.elapsed();
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "server {name} stayed {now}, not {status}; log:\n{}",
                    self.log()
                );
            }
            thread::sleep(POLL * 5);
        }
    }

    /// Waits until every server is fully `UP` (past its first checks).
    pub fn wait_all_up(&self) {
        for s in self.servers() {
            self.wait_status(&s.name, "UP");
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("haproxy on {} (last log lines):", self.front);
            tail.iter().rev().for_each(|l| eprintln!("  {l}"));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

enum Launch {
    PortTaken,
    Failed(String),
}

/// Two distinct free ports (both held while picking, so they differ).
fn two_free_addrs() -> (SocketAddr, SocketAddr) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    (a.local_addr().expect("addr"), b.local_addr().expect("addr"))
}

/// A new empty directory under the system temp dir, unique across processes and threads.
pub fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("swarmtrack-haproxy-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}
