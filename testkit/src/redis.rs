//! Real `redis-server` processes: a single server or an N-node Redis Cluster, each on free
//! 127.0.0.1 ports with its own temporary folder, killed and cleaned up on drop. A tiny blocking
//! RESP client ([`crate::resp`]) inspects and steers them (PING, CLUSTER SETSLOT, ...).
//!
//! Many test processes start servers at once, so a port picked by binding `127.0.0.1:0` can be
//! taken again before redis binds it. Two rules make that harmless: a server only counts as up
//! when the process answering on the port reports our child's pid, and a child that exits because
//! its port was taken is started again on fresh ports.
//!
//! Everything here blocks the calling thread for at most a few seconds; the servers never depend
//! on the code under test, so that is safe inside async tests too.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use tempfile::TempDir;

use crate::process::{
    Process, StartError, free_port, launch, run, start_on_free_ports, tail, temp_dir,
};
pub use crate::resp::{Reply, RespConnection};
use crate::wait::{DEADLINE, POLL};
pub use cluster::{CLUSTER_DEADLINE, RedisCluster, SLOTS};

mod cluster;

/// A `redis-server` child process on `127.0.0.1`, standalone or as one node of a cluster.
pub struct RedisServer {
    port: u16,
    /// The cluster bus port; `None` for a standalone server.
    cluster_port: Option<u16>,
    /// Declared before `dir`: the process is killed before its folder goes.
    process: Option<Process>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a standalone server on a free port and waits until it answers.
    ///
    /// # Panics
    /// When it can't be started.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    fn start_with(cluster: bool) -> Self {
        let dir = temp_dir("redis");
        let (port, cluster_port, process) = start_on_free_ports("redis-server", || {
            let port = free_port();
            let cluster_port = cluster.then(|| free_port_except(port));
            // A failed attempt may have written nodes.conf with its ports; start clean.
            let _ = fs::remove_file(dir.path().join("nodes.conf"));
            launch_redis(dir.path(), port, cluster_port).map(|p| (port, cluster_port, p))
        });
        Self {
            port,
            cluster_port,
            process: Some(process),
            dir,
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The client port; it stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the process is running (it has not been [`kill`](Self::kill)ed).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::id)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("redis.log")).unwrap_or_default()
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same port and directory (killing it first if it runs)
    /// and waits until it answers. Data is gone: nothing is persisted. A cluster node keeps
    /// its identity and slots through `nodes.conf`.
    ///
    /// # Panics
    /// When it does not come back within [`DEADLINE`] (e.g. someone else keeps the port).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + DEADLINE;
        loop {
            match launch_redis(self.dir.path(), self.port, self.cluster_port) {
                Ok(process) => {
                    self.process = Some(process);
                    return;
                }
                // Someone holds the port for now; it is ours to reuse once they let go.
                Err(StartError::PortTaken) if Instant::now() < deadline => thread::sleep(POLL * 10),
                Err(StartError::PortTaken) => panic!("port {} stayed taken", self.port),
                Err(StartError::Failed(why)) => panic!("redis-server did not restart: {why}"),
            }
        }
    }

    /// A new connection to this server.
    ///
    /// # Errors
    /// The connect error, e.g. `ConnectionRefused` after [`kill`](Self::kill).
    pub fn connect(&self) -> io::Result<RespConnection> {
        RespConnection::connect(self.port)
    }

    /// Runs one command on a new connection.
    ///
    /// # Errors
    /// An I/O error; a Redis error is an `Ok(Reply::Error)`.
    pub fn try_command(&self, args: &[&str]) -> io::Result<Reply> {
        self.connect()?.call(args)
    }

    /// Runs one command and returns the reply as `redis-cli --raw` prints it.
    ///
    /// # Panics
    /// On an I/O error or an error reply.
    pub fn command(&self, args: &[&str]) -> String {
        match self.try_command(args) {
            Ok(Reply::Error(e)) => panic!("{args:?} on port {}: {e}", self.port),
            Ok(reply) => reply.to_raw(),
            Err(e) => panic!("{args:?} on port {}: {e}", self.port),
        }
    }

    /// Runs `redis-cli -p PORT --raw ARGS...` and returns its output.
    ///
    /// # Panics
    /// When redis-cli fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port, "--raw"];
        all.extend_from_slice(args);
        run("redis-cli", &all, self.dir(), DEADLINE)
    }
}

/// Spawns redis-server on these ports in `dir` and waits until it answers as our child.
fn launch_redis(dir: &Path, port: u16, cluster_port: Option<u16>) -> Result<Process, StartError> {
    let log = dir.join("redis.log");
    let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let port_arg = port.to_string();
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port_arg,
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "no",
    ])
    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
    .arg("--dir")
    .arg(dir)
    .arg("--logfile")
    .arg(&log);
    if let Some(cport) = cluster_port {
        cmd.args([
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &cport.to_string(),
        ])
        .arg("--cluster-config-file")
        .arg(dir.join("nodes.conf"));
    }
    let stderr = File::create(dir.join("stderr.log")).expect("stderr.log");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // Errors before the log file is open (a bad argument) go to stderr; only this run's part of
    // the log counts (a restart appends to it).
    let run_log = || {
        let text = fs::read(&log).unwrap_or_default();
        let new = String::from_utf8_lossy(text.get(log_start as usize..).unwrap_or(&[]));
        let stderr = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        format!("{stderr}{new}")
    };
    launch("redis-server", &mut cmd, DEADLINE, run_log, |process| {
        // Another test's server may answer on a port we both picked; only ours counts.
        let pid = process.id().to_string();
        matches!(
            RespConnection::connect(port).and_then(|mut c| c.call(&["INFO", "server"])),
            Ok(Reply::Bulk(info)) if info_field(&info, "process_id") == Some(pid.as_str())
        )
    })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            // The log is about to go with the directory; it may explain the failure.
            eprintln!(
                "redis on port {} (last log lines):\n{}",
                self.port,
                tail(&self.log(), 20)
            );
        }
    }
}

/// The value of `field` in `INFO` or `CLUSTER INFO` text (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

fn free_port_except(taken: u16) -> u16 {
    loop {
        let port = free_port();
        if port != taken {
            return port;
        }
    }
}
