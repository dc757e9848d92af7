//! A real `haproxy` in front of trackers, rendered from the same template as production and
//! `scripts/fleet` (`haproxy/haproxy.cfg.tmpl`), on free 127.0.0.1 ports with its own temporary
//! folder and runtime socket; killed and cleaned up on drop. A small client for the runtime API
//! (one command per connection over the unix socket) reads server states; `show stat` is parsed
//! by the autoscaler's own parser ([`autoscaler::haproxy::parse_show_stat`]), the one copy.
//!
//! Ports are picked by binding `127.0.0.1:0`, so another test may take one before haproxy binds
//! it: haproxy then exits at start ("cannot bind socket") and is started again on fresh ports.
//! Everything here blocks the calling thread for at most a few seconds; haproxy never depends on
//! the code under test, so that is safe inside async tests too.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub use ::autoscaler::haproxy::ServerStat;
use tempfile::TempDir;

use crate::process::{
    Process, StartError, free_addrs, launch, log_file, read_log, start_on_free_ports, tail,
    temp_dir,
};
use crate::wait::{DEADLINE, LONG_DEADLINE, POLL};

/// The template shared with production and `scripts/fleet`.
pub const TEMPLATE: &str = include_str!("../../haproxy/haproxy.cfg.tmpl");

/// The backend every tracker is a server of.
pub const BACKEND: &str = "trackers";

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
    /// Connections open at once from one source (IPv4 address, IPv6 /64).
    pub src_max_conn: u32,
    /// New connections from one source per `src_rate_period`.
    pub src_conn_rate: u32,
    /// WebSocket upgrades from one source per `src_rate_period`.
    pub src_upgrade_rate: u32,
    /// The period of both rates (HAProxy time syntax).
    pub src_rate_period: &'static str,
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
            // Out of the way: every viewer of most tests comes from 127.0.0.1. The per-source
            // test sets its own.
            src_max_conn: 100_000,
            src_conn_rate: 100_000,
            src_upgrade_rate: 100_000,
            src_rate_period: "10s",
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
        ("SOCKET_OWNER", String::new()),
        ("SRC_TABLE_SIZE", "10k".to_string()),
        ("SRC_EXPIRE", "60s".to_string()),
        ("SRC_RATE_PERIOD", options.src_rate_period.to_string()),
        ("SRC_MAX_CONN", options.src_max_conn.to_string()),
        ("SRC_CONN_RATE", options.src_conn_rate.to_string()),
        ("SRC_UPGRADE_RATE", options.src_upgrade_rate.to_string()),
    ])
}

/// Parses the trackers' servers out of a `show stat` CSV dump (the header names the columns).
///
/// # Panics
/// When the reply is not a `show stat` dump.
pub fn parse_show_stat(csv: &str) -> Vec<ServerStat> {
    ::autoscaler::haproxy::parse_show_stat(csv, BACKEND)
        .unwrap_or_else(|why| panic!("show stat: {why}\n{csv}"))
}

/// A `haproxy` child process in front of trackers.
pub struct Haproxy {
    /// The viewers' front end.
    pub front: SocketAddr,
    /// Stats page and Prometheus exporter.
    pub stats: SocketAddr,
    /// The rendered config.
    pub config: String,
    options: Options,
    servers: Vec<SocketAddr>,
    socket: PathBuf,
    /// Declared before `dir`: the process is killed before its folder goes.
    process: Option<Process>,
    dir: TempDir,
}

impl Haproxy {
    /// Starts haproxy in front of `servers` (named `t1`, `t2`, ... in order; none for a backend
    /// that starts empty, as the autoscaler's) and waits until its runtime API answers. Servers
    /// may still be on their first checks: see [`wait_status`](Self::wait_status).
    ///
    /// # Panics
    /// When it can't be started.
    pub fn start(servers: &[SocketAddr], options: &Options) -> Self {
        let dir = temp_dir("haproxy");
        let socket = dir.path().join("haproxy.sock");
        let mut proxy = Self {
            front: SocketAddr::from(([127, 0, 0, 1], 0)),
            stats: SocketAddr::from(([127, 0, 0, 1], 0)),
            config: String::new(),
            options: options.clone(),
            servers: servers.to_vec(),
            socket,
            process: None,
            dir,
        };
        proxy.launch_on_free_ports();
        proxy
    }

    /// Stops haproxy (SIGKILL) and starts it again from the template, as a reload leaves it:
    /// the servers added at runtime are gone. The runtime socket stays where it was; the front
    /// end too unless another process took its port meanwhile.
    ///
    /// # Panics
    /// When it can't be started again.
    pub fn restart(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        let (front, stats) = (self.front, self.stats);
        match self.launch(front, stats) {
            Ok(()) => {}
            Err(StartError::PortTaken) => self.launch_on_free_ports(),
            Err(StartError::Failed(why)) => panic!("haproxy did not restart: {why}"),
        }
    }

    fn launch_on_free_ports(&mut self) {
        start_on_free_ports("haproxy", || {
            let [front, stats] = free_addrs::<2>();
            self.launch(front, stats)
        });
    }

    fn launch(&mut self, front: SocketAddr, stats: SocketAddr) -> Result<(), StartError> {
        self.front = front;
        self.stats = stats;
        self.config = render(&values(
            &self.options,
            &self.servers,
            front,
            stats,
            &self.socket,
        ));
        let cfg = self.dir.path().join("haproxy.cfg");
        fs::write(&cfg, &self.config).expect("write haproxy.cfg");
        let _ = fs::remove_file(&self.socket);
        let (out, err) = log_file(&self.log_path());
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let socket = self.socket.clone();
        let log_path = self.log_path();
        let process = launch(
            "haproxy",
            &mut cmd,
            LONG_DEADLINE,
            || read_log(&log_path),
            // The socket is in our own folder: whoever answers on it is our child, and it binds
            // every listener before it serves the runtime API.
            |_| runtime_command(&socket, "show info").is_ok(),
        )?;
        self.process = Some(process);
        Ok(())
    }

    /// `ws://FRONT/v1/ws`
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/ws", self.front)
    }

    /// The front-end URL with the routing key of the swarm-affine backend.
    pub fn swarm_url(&self, swarm: &str) -> String {
        format!("ws://{}/v1/ws?swarm={swarm}", self.front)
    }

    /// The runtime API socket (what the autoscaler's config names).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::id)
    }

    /// Its folder: config, log and socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }

    /// haproxy's log so far (alerts, server state changes, one line per finished session).
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }

    /// Runs one runtime API command and returns its reply.
    ///
    /// # Errors
    /// An I/O error (haproxy not up yet, or gone).
    pub fn try_runtime(&self, command: &str) -> io::Result<String> {
        runtime_command(&self.socket, command)
    }

    /// Runs one runtime API command.
    ///
    /// # Panics
    /// On an I/O error.
    pub fn runtime(&self, command: &str) -> String {
        self.try_runtime(command)
            .unwrap_or_else(|e| panic!("runtime API {command:?}: {e}"))
    }

    /// Every server of the trackers' backend.
    ///
    /// # Panics
    /// When the runtime API fails or its reply doesn't parse.
    pub fn servers(&self) -> Vec<ServerStat> {
        parse_show_stat(&self.runtime(&format!("show stat {BACKEND} 4 -1")))
    }

    /// One server's `show stat` line.
    ///
    /// # Panics
    /// When there is no such server.
    pub fn server(&self, name: &str) -> ServerStat {
        self.servers()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    /// Waits until server `name` has exactly this status (e.g. `UP`, `DOWN`) and returns how
    /// long that took.
    ///
    /// # Panics
    /// When it doesn't within [`DEADLINE`].
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
    ///
    /// # Panics
    /// When one isn't within [`DEADLINE`].
    pub fn wait_all_up(&self) {
        for s in self.servers() {
            self.wait_status(&s.name, "UP");
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        if thread::panicking() {
            eprintln!(
                "haproxy on {} (last log lines):\n{}",
                self.front,
                tail(&self.log(), 30)
            );
        }
    }
}

/// One runtime API command over the unix socket at `socket`, under [`DEADLINE`].
fn runtime_command(socket: &Path, command: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(DEADLINE))?;
    s.set_write_timeout(Some(DEADLINE))?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_stat_is_parsed_by_column_name() {
        let csv = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,wredis,status\n\
                   trackers,t1,0,0,3,4,17500,9,2,UP\n\
                   trackers,t2,0,0,0,1,17500,1,0,DOWN 1/2\n\
                   trackers,BACKEND,0,0,3,4,,10,2,UP\n\
                   other,t1,0,0,7,7,,7,0,UP\n\n";
        let servers = parse_show_stat(csv);
        assert_eq!(servers.len(), 2);
        let t1 = &servers[0];
        assert_eq!(
            (
                &*t1.name,
                &*t1.status,
                t1.sessions,
                t1.total,
                t1.redispatched
            ),
            ("t1", "UP", 3, 9, 2)
        );
        assert_eq!(&*servers[1].status, "DOWN 1/2");
        assert_eq!(placeholder("a @B_C@ d"), Some("@B_C@"));
        assert_eq!(placeholder("me@example.com @x@ @@"), None);
    }

    #[test]
    fn every_placeholder_of_the_template_gets_a_value() {
        let [a, b] = [SocketAddr::from(([127, 0, 0, 1], 1)); 2];
        for routing in [Routing::LeastConn, Routing::Swarm] {
            let text = render(&values(
                &Options::new(routing),
                &[a, b],
                a,
                b,
                Path::new("/s"),
            ));
            assert!(text.contains("    server t1 127.0.0.1:1"), "{text}");
            assert!(text.contains("    server t2 127.0.0.1:1"), "{text}");
        }
        // An empty backend, as the autoscaler starts it.
        let empty = render(&values(
            &Options::new(Routing::LeastConn),
            &[],
            a,
            b,
            Path::new("/s"),
        ));
        assert!(!empty.contains("server t1"), "{empty}");
    }
}
