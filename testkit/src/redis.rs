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
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{
    Process, StartError, free_port, launch, run, says_port_taken, start_on_free_ports, tail,
    temp_dir,
};
pub use crate::resp::{Reply, RespConnection};
use crate::wait::{DEADLINE, LONG_DEADLINE, POLL};

/// How long a cluster may take to form or settle: `redis-cli --cluster create` alone polls once a
/// second, and the machine running the tests may be busy.
pub const CLUSTER_DEADLINE: Duration = LONG_DEADLINE;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

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
    // Errors before the log file is open (a bad argument) go to stderr.
    let stderr = File::create(dir.join("stderr.log")).expect("stderr.log");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // Only this run's part of the log (a restart appends to it).
    let new_log = || {
        let text = fs::read(&log).unwrap_or_default();
        String::from_utf8_lossy(text.get(log_start as usize..).unwrap_or(&[])).into_owned()
    };
    let started = launch(
        "redis-server",
        &mut cmd,
        DEADLINE,
        |process| {
            // Another test's server may answer on a port we both picked; only ours counts.
            let pid = process.id().to_string();
            matches!(
                RespConnection::connect(port).and_then(|mut c| c.call(&["INFO", "server"])),
                Ok(Reply::Bulk(info)) if info_field(&info, "process_id") == Some(pid.as_str())
            )
        },
        |status| {
            let new = new_log();
            if says_port_taken(&new) {
                return StartError::PortTaken;
            }
            let stderr = fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            StartError::Failed(format!("exited {status}: {stderr}"))
        },
    );
    started.map_err(|e| match e {
        StartError::Failed(why) => StartError::Failed(format!("{why}\n{}", tail(&new_log(), 20))),
        taken => taken,
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

/// A Redis Cluster of real `redis-server` processes, masters only, covering all slots.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// `CLUSTER MYID` of each node; kept across restarts by `nodes.conf`.
    ids: Vec<String>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) nodes, joins them with `redis-cli --cluster create` and waits
    /// until every node reports `cluster_state:ok` with all slots assigned and the same map.
    pub fn start(n: usize) -> Self {
        assert!(n >= 3, "a Redis Cluster needs at least 3 masters");
        // Older servers fail later with a vaguer "Bad directive" on --cluster-port.
        let version = Command::new("redis-server")
            .arg("--version")
            .output()
            .expect("redis-server --version (scripts/test installs it)");
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        let major = version
            .split_once("v=")
            .and_then(|(_, v)| v.split('.').next()?.parse::<u32>().ok());
        assert!(
            major >= Some(7),
            "Redis Cluster tests need redis-server >= 7 (--cluster-port, sharded pub/sub): {version}"
        );
        let nodes: Vec<RedisServer> = thread::scope(|s| {
            let starting: Vec<_> = (0..n)
                .map(|_| s.spawn(|| RedisServer::start_with(true)))
                .collect();
            starting.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        run("redis-cli", &args, nodes[0].dir(), CLUSTER_DEADLINE);
        let ids = nodes
            .iter()
            .map(|n| n.command(&["CLUSTER", "MYID"]))
            .collect();
        let cluster = Self { nodes, ids };
        cluster.wait_healthy();
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`, to kill or restart it (then call [`wait_healthy`](Self::wait_healthy)).
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// Node `i`'s cluster id.
    pub fn node_id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// The hash slot of `key`, as `CLUSTER KEYSLOT` computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("no node runs");
        node.command(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("slot number")
    }

    /// The index of the node owning `slot` according to node `by`, if any.
    pub fn owner_seen_by(&self, slot: u16, by: usize) -> Option<usize> {
        let map = self.slot_map(by).ok()?;
        map[usize::from(slot)]
    }

    /// The index of the node owning `slot`, as the first running node sees it.
    pub fn owner_of(&self, slot: u16) -> usize {
        let by = self.nodes.iter().position(RedisServer::is_running);
        by.and_then(|by| self.owner_seen_by(slot, by))
            .unwrap_or_else(|| panic!("slot {slot} has no owner"))
    }

    /// Runs `redis-cli -c` (following redirections) against the first running node.
    pub fn cli(&self, args: &[&str]) -> String {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("no node runs");
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        node.cli(&all)
    }

    /// Moves `slot` and its keys to node `to` the way `redis-cli --cluster reshard` does:
    /// IMPORTING on the target, MIGRATING on the owner, MIGRATE the keys in batches, then
    /// SETSLOT NODE on the target, the owner and the rest; waits until every node agrees.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let from = self.owner_of(slot);
        if from == to {
            return;
        }
        let s = slot.to_string();
        let (src, dst) = (&self.nodes[from], &self.nodes[to]);
        dst.command(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &self.ids[from]]);
        src.command(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &self.ids[to]]);
        // While MIGRATING, new keys go to the target (ASK), so once the owner reports none left
        // none can reappear before SETSLOT NODE.
        let dst_port = dst.port.to_string();
        let timeout_ms = DEADLINE.as_millis().to_string();
        loop {
            let keys = src.try_command(&["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            let keys = keys.expect("GETKEYSINSLOT");
            let keys: Vec<&str> = keys.items().iter().filter_map(bulk).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1", &dst_port, "", "0", &timeout_ms];
            args.extend(["REPLACE", "KEYS"]);
            args.extend(keys);
            src.command(&args);
        }
        dst.command(&["CLUSTER", "SETSLOT", &s, "NODE", &self.ids[to]]);
        src.command(&["CLUSTER", "SETSLOT", &s, "NODE", &self.ids[to]]);
        for (i, node) in self.nodes.iter().enumerate() {
            if i != from && i != to && node.is_running() {
                node.command(&["CLUSTER", "SETSLOT", &s, "NODE", &self.ids[to]]);
            }
        }
        self.wait_until(&format!("slot {slot} moved to node {to}"), || {
            self.health()?;
            match self.owner_of(slot) {
                owner if owner == to => Ok(()),
                owner => Err(format!("node {owner} still owns it")),
            }
        });
    }

    /// Waits until every node runs, reports `cluster_state:ok` with all slots assigned and
    /// reachable, knows every other node, and all nodes agree on who owns each slot.
    pub fn wait_healthy(&self) {
        self.wait_until("a healthy cluster", || self.health());
    }

    fn wait_until(&self, what: &str, mut check: impl FnMut() -> Result<(), String>) {
        let deadline = Instant::now() + CLUSTER_DEADLINE;
        loop {
            match check() {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => {
                    panic!("timed out waiting for {what}: {why}")
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    }

    /// Why the cluster is not healthy yet, if it is not.
    fn health(&self) -> Result<(), String> {
        let mut first_map = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let info = node
                .try_command(&["CLUSTER", "INFO"])
                .map_err(|e| format!("node {i}: {e}"))?
                .to_raw();
            let known = self.nodes.len().to_string();
            let slots = SLOTS.to_string();
            for (field, want) in [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", slots.as_str()),
                ("cluster_slots_ok", slots.as_str()),
                ("cluster_known_nodes", known.as_str()),
            ] {
                if info_field(&info, field) != Some(want) {
                    return Err(format!("node {i}: {field} is not {want}"));
                }
            }
            let map = self.slot_map(i)?;
            match &first_map {
                None => first_map = Some(map),
                Some(first) if *first != map => return Err(format!("node {i} sees another map")),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The owner (node index) of every slot according to `CLUSTER SLOTS` on node `by`.
    fn slot_map(&self, by: usize) -> Result<Vec<Option<usize>>, String> {
        let reply = self.nodes[by]
            .try_command(&["CLUSTER", "SLOTS"])
            .map_err(|e| format!("node {by}: {e}"))?;
        let mut map = vec![None; SLOTS];
        // Each entry: [start, end, [ip, port, id, ...] of the master, replicas...].
        for range in reply.items() {
            let [start, end, master, ..] = range.items() else {
                return Err(format!("odd CLUSTER SLOTS entry {range:?}"));
            };
            let port = master.items().get(1).and_then(Reply::integer);
            let owner = self
                .nodes
                .iter()
                .position(|n| Some(i64::from(n.port)) == port)
                .ok_or_else(|| format!("unknown owner {master:?}"))?;
            let (Some(start), Some(end)) = (start.integer(), end.integer()) else {
                return Err(format!("odd CLUSTER SLOTS range {range:?}"));
            };
            for slot in start..=end {
                map[usize::try_from(slot).map_err(|e| e.to_string())?] = Some(owner);
            }
        }
        Ok(map)
    }
}

/// The value of `field` in `INFO` or `CLUSTER INFO` text (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

fn bulk(r: &Reply) -> Option<&str> {
    match r {
        Reply::Bulk(s) => Some(s),
        _ => None,
    }
}

fn free_port_except(taken: u16) -> u16 {
    loop {
        let port = free_port();
        if port != taken {
            return port;
        }
    }
}
