//! A Redis Cluster of real `redis-server` processes (masters only, every slot assigned), and
//! what the tracker's cluster tests do to it: move a slot with its keys, kill and restart a node,
//! wait until every node agrees on the slot map again.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::{RedisServer, Reply, info_field};
use crate::process::run;
use crate::wait::{DEADLINE, LONG_DEADLINE, POLL};

/// How long a cluster may take to form or settle: `redis-cli --cluster create` alone polls once a
/// second, and the machine running the tests may be busy.
pub const CLUSTER_DEADLINE: Duration = LONG_DEADLINE;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

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
        Self::start_nodes(n, false)
    }

    /// As [`start`](Self::start), with every node also serving TLS on a port of its own
    /// (`tls-cluster yes`: the bus is TLS too, and `CLUSTER SLOTS` asked over TLS names the TLS
    /// ports), all with certificates of one CA ([`RedisServer::ca_file`] of any node).
    pub fn start_tls(n: usize) -> Self {
        Self::start_nodes(n, true)
    }

    fn start_nodes(n: usize, tls: bool) -> Self {
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
        let certs = tls.then(super::CertificateSet::new);
        let nodes: Vec<RedisServer> = thread::scope(|s| {
            let starting: Vec<_> = (0..n)
                .map(|_| {
                    let certs = certs.as_ref();
                    s.spawn(move || match certs {
                        Some(c) => RedisServer::start_in(c.copy_to_new_dir(), true, true),
                        None => RedisServer::start_with(true),
                    })
                })
                .collect();
            starting.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // With tls-cluster, nodes meet at their TLS ports.
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.tls_port.unwrap_or(n.port)))
            .collect();
        let ca = nodes[0].ca_file().display().to_string();
        let mut args = if tls {
            vec!["--tls", "--cacert", ca.as_str()]
        } else {
            Vec::new()
        };
        args.extend(["--cluster", "create"]);
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

    /// `rediss://127.0.0.1:TLS_PORT` of every node of a [`start_tls`](Self::start_tls) cluster.
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::tls_url).collect()
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

fn bulk(r: &Reply) -> Option<&str> {
    match r {
        Reply::Bulk(s) => Some(s),
        _ => None,
    }
}
