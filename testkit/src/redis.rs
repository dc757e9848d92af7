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

/// The ACL rules of a tracker's Redis user with the default `redis.key_prefix` (`st`): its keys
/// and channels only, and only the commands a tracker sends (connection set-up, membership,
/// relay, health, cluster discovery). docs/OPERATIONS.md quotes them (a test checks it does,
/// word for word) as `ACL SETUSER swarmtrack on >PASSWORD` followed by these rules.
pub const TRACKER_ACL_RULES: &str = "resetkeys ~st:* resetchannels &st:* -@all \
+hello +ping +get +set +pexpire +zadd +zrem +zremrangebyscore +zrandmember +zrangebyscore +eval \
+publish +spublish +subscribe +ssubscribe +unsubscribe +sunsubscribe +cluster|slots +cluster|shards";

/// A `redis-server` child process on `127.0.0.1`, standalone or as one node of a cluster.
pub struct RedisServer {
    port: u16,
    /// The cluster bus port; `None` for a standalone server.
    cluster_port: Option<u16>,
    /// The TLS port, besides the plain one (which the test's own inspection uses).
    tls_port: Option<u16>,
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

    /// Starts a standalone server that also serves TLS on a port of its own, with a
    /// certificate for `127.0.0.1` signed by a CA made for it ([`ca_file`](Self::ca_file));
    /// clients need no certificate. The plain port stays open for the test's own inspection.
    ///
    /// # Panics
    /// When the certificates can't be made or the server can't be started.
    pub fn start_tls() -> Self {
        let dir = temp_dir("redis");
        make_certificates(dir.path());
        Self::start_in(dir, false, true)
    }

    fn start_with(cluster: bool) -> Self {
        Self::start_in(temp_dir("redis"), cluster, false)
    }

    pub(crate) fn start_in(dir: TempDir, cluster: bool, tls: bool) -> Self {
        let (port, cluster_port, tls_port, process) = start_on_free_ports("redis-server", || {
            let port = free_port();
            let cluster_port = cluster.then(|| free_port_except(port));
            let tls_port = tls.then(|| free_port_except(port));
            // A failed attempt may have written nodes.conf with its ports; start clean.
            let _ = fs::remove_file(dir.path().join("nodes.conf"));
            launch_redis(dir.path(), port, cluster_port, tls_port)
                .map(|p| (port, cluster_port, tls_port, p))
        });
        Self {
            port,
            cluster_port,
            tls_port,
            process: Some(process),
            dir,
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:TLS_PORT`, for a server from [`start_tls`](Self::start_tls).
    ///
    /// # Panics
    /// When the server has no TLS port.
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a server started with start_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    /// The TLS port, if any.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
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
            match launch_redis(self.dir.path(), self.port, self.cluster_port, self.tls_port) {
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
fn launch_redis(
    dir: &Path,
    port: u16,
    cluster_port: Option<u16>,
    tls_port: Option<u16>,
) -> Result<Process, StartError> {
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
    if let Some(tport) = tls_port {
        cmd.args(["--tls-port", &tport.to_string()])
            .arg("--tls-cert-file")
            .arg(dir.join("server.crt"))
            .arg("--tls-key-file")
            .arg(dir.join("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("ca.crt"))
            .args(["--tls-auth-clients", "no"]);
        if cluster_port.is_some() {
            cmd.args(["--tls-cluster", "yes"]);
        }
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

/// One CA and server certificate for the nodes of a TLS cluster (they verify each other on
/// the bus with it).
pub(crate) struct CertificateSet {
    dir: TempDir,
}

impl CertificateSet {
    pub(crate) fn new() -> Self {
        let dir = temp_dir("redis-certs");
        make_certificates(dir.path());
        Self { dir }
    }

    /// A new node folder holding the certificates.
    pub(crate) fn copy_to_new_dir(&self) -> TempDir {
        let dir = temp_dir("redis");
        for f in ["ca.crt", "server.crt", "server.key"] {
            fs::copy(self.dir.path().join(f), dir.path().join(f)).expect("copy certificate");
        }
        dir
    }
}

/// A CA (`ca.crt`) and a server certificate for `127.0.0.1` and `localhost` signed by it
/// (`server.crt`, `server.key`) in `dir`, made with openssl (which scripts/test installs). It is
/// a client certificate too: cluster nodes present it to each other on the TLS bus.
fn make_certificates(dir: &Path) {
    let path = |name: &str| dir.join(name).display().to_string();
    let (ca_key, ca_crt) = (path("ca.key"), path("ca.crt"));
    let (key, csr, ext, crt) = (
        path("server.key"),
        path("server.csr"),
        path("server.ext"),
        path("server.crt"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=swarmtrack test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", &ca_key, "-out", &ca_crt]);
    run("openssl", &ca, dir, DEADLINE);
    let mut req = vec!["req", "-subj", "/CN=127.0.0.1"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr]);
    run("openssl", &req, dir, DEADLINE);
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("server.ext");
    let sign = [
        "x509", "-req", "-in", &csr, "-CA", &ca_crt, "-CAkey", &ca_key, "-days", "2", "-extfile",
        &ext, "-out", &crt,
    ];
    run("openssl", &sign, dir, DEADLINE);
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
