//! The `local` provider: each instance is a "machine" on 127.0.0.1 with two free ports
//! (viewers, admin), for the demo and the end-to-end tests.
//!
//! A machine is a small shell process in its own process group: it "boots" for
//! `boot_delay_secs` (as an EC2 instance takes a minute or more before its tracker listens),
//! starts the tracker as its child, and stays up when the tracker exits or dies, as an
//! instance stays running when its tracker process crashes. So the autoscaler meets the same
//! cases as on EC2: a launch that takes time to serve, and a live instance whose tracker is
//! dead. Terminating a machine kills its whole process group.
//!
//! Its ports are drawn below the kernel's ephemeral range, so nothing takes them implicitly
//! while the machine boots.
//!
//! Its memory is a state folder with one JSON file per instance (`l<port>.json`: pid, ports,
//! phase, launch token) written before the process starts and rewritten on each change, so a
//! restarted autoscaler finds its processes again and a retried launch with the same token
//! finds the first one. A machine counts as alive while `/proc/<pid>` runs a program whose
//! command line holds its listen address (a recycled pid doesn't pass).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::{Instance, Phase, Provider, ProviderError};
use crate::config::LocalConfig;

/// How long `terminate` waits for a killed process to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// The machine: boot for `$1` seconds, run the tracker (`$2...`), then stay up until killed.
/// The tracker's exit status goes to the instance's log.
const MACHINE: &str = r#"sleep "$1"; shift; "$@"; echo "swarmtrack-machine: tracker exited with status $?" >&2; while :; do sleep 3600; done"#;

/// One instance's state file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    token: String,
    pid: Option<u32>,
    addr: SocketAddr,
    admin: SocketAddr,
    phase: Phase,
    launched_at_ms: u64,
    phase_since_ms: u64,
}

/// Tracker processes on this machine.
#[derive(Clone, Debug)]
pub struct LocalProvider {
    config: LocalConfig,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProviderError {
    let what = what.into();
    move |source| ProviderError::Io { what, source }
}

/// Whether `pid` is a live (not zombie) process whose command line holds `addr`.
fn process_alive(pid: u32, addr: SocketAddr) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(stat) = std::fs::read_to_string(proc.join("stat")) else {
        return false;
    };
    // The state letter follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim().chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    std::fs::read(proc.join("cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&addr.to_string()))
        .unwrap_or(false)
}

/// The process group of `pid` (field 5 of `/proc/<pid>/stat`).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The pid of a live process whose command line listens on `addr`: finds a machine whose
/// launch was interrupted between its start and the record of its pid.
fn find_pid(addr: SocketAddr) -> Option<u32> {
    let needle = format!("--listen\0{addr}\0");
    let found: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            (String::from_utf8_lossy(&cmdline).contains(&needle) && process_alive(pid, addr))
                .then_some(pid)
        })
        .collect();
    // The machine and its tracker both name the address: the machine leads the group.
    found
        .iter()
        .copied()
        .find(|&pid| process_group(pid) == Some(pid))
        .or_else(|| found.first().copied())
}

/// Lowest port the tracker's ports are drawn from.
const LOW_PORT: u16 = 10_000;

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Two distinct free loopback ports (both held while picking), below the kernel's ephemeral
/// range: the tracker binds them only after the boot delay, and meanwhile a port of that range
/// can become an outgoing connection's local port (measured: under the surge demo's load, a
/// launch with a 60 s boot lost its admin port so). A port below it is taken only by an
/// explicit bind.
fn two_free_addrs() -> std::io::Result<(SocketAddr, SocketAddr)> {
    let top = ephemeral_start().unwrap_or(32_768);
    if top > LOW_PORT + 100 {
        for _ in 0..200 {
            let pick = || rand::random_range(LOW_PORT..top);
            let (a, b) = (pick(), pick());
            if a == b {
                continue;
            }
            if let (Ok(x), Ok(y)) = (
                TcpListener::bind(("127.0.0.1", a)),
                TcpListener::bind(("127.0.0.1", b)),
            ) {
                return Ok((x.local_addr()?, y.local_addr()?));
            }
        }
    }
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?, b.local_addr()?))
}

impl LocalProvider {
    /// A provider keeping its state in `config.state_dir` (created if missing).
    ///
    /// # Errors
    /// The state folder can't be created.
    pub fn new(config: LocalConfig) -> Result<Self, ProviderError> {
        std::fs::create_dir_all(&config.state_dir)
            .map_err(io(format!("create {}", config.state_dir.display())))?;
        Ok(Self { config })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.config.state_dir.join(format!("{id}.json"))
    }

    async fn write(&self, r: &Record) -> Result<(), ProviderError> {
        let path = self.path(&r.id);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(r).map_err(|e| ProviderError::Api {
            what: "encode state".into(),
            why: e.to_string(),
        })?;
        tokio::fs::write(&tmp, text)
            .await
            .map_err(io(format!("write {}", tmp.display())))?;
        // Rename: a crash leaves the old file or the new one, never half of one.
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io(format!("rename {}", path.display())))
    }

    async fn records(&self) -> Result<Vec<Record>, ProviderError> {
        let dir = &self.config.state_dir;
        let mut entries = tokio::fs::read_dir(dir)
            .await
            .map_err(io(format!("read {}", dir.display())))?;
        let mut records = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io(format!("read {}", dir.display())))?
        {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = tokio::fs::read(&path)
                .await
                .map_err(io(format!("read {}", path.display())))?;
            match serde_json::from_slice::<Record>(&text) {
                Ok(r) => records.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable state file skipped")
                }
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn record(&self, id: &str) -> Result<Record, ProviderError> {
        let text = tokio::fs::read(self.path(id))
            .await
            .map_err(|_| ProviderError::Unknown(id.to_string()))?;
        serde_json::from_slice(&text).map_err(|e| ProviderError::Api {
            what: format!("state of {id}"),
            why: e.to_string(),
        })
    }

    fn instance(r: &Record) -> Instance {
        let pid = r.pid.or_else(|| find_pid(r.addr));
        Instance {
            id: r.id.clone(),
            addr: r.addr,
            admin: r.admin,
            phase: r.phase,
            launched_at: at_ms(r.launched_at_ms),
            phase_since: at_ms(r.phase_since_ms),
            alive: pid.is_some_and(|pid| process_alive(pid, r.addr)),
        }
    }

    /// The state folder.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    async fn spawn(&self, r: &Record) -> Result<u32, ProviderError> {
        let log_path = self.config.state_dir.join(format!("{}.log", r.id));
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("create {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(io(format!("clone {}", log_path.display())))?;
        let env: &BTreeMap<String, String> = &self.config.env;
        // TRACKER_ADMIN_TOKEN, TRACKER_FLEET_KEY and RUST_LOG pass through from the
        // autoscaler's environment.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(MACHINE)
            .arg("swarmtrack-machine")
            .arg(self.config.boot_delay_secs.to_string())
            .arg(&self.config.tracker_bin)
            .arg("--listen")
            .arg(r.addr.to_string())
            .arg("--admin-listen")
            .arg(r.admin.to_string())
            .args(&self.config.args)
            .envs(env)
            // Its own group, so terminating it takes the tracker along, and a Ctrl-C meant for
            // the autoscaler doesn't reach it (an EC2 instance outlives its autoscaler too).
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io(format!("start {}", self.config.tracker_bin.display())))?;
        let pid = child.id().ok_or_else(|| ProviderError::Api {
            what: "start tracker".into(),
            why: "exited at once".into(),
        })?;
        // Reap it when it exits so it never lingers as a zombie; the task ends with it.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        Ok(pid)
    }
}

impl Provider for LocalProvider {
    async fn list(&self) -> Result<Vec<Instance>, ProviderError> {
        Ok(self.records().await?.iter().map(Self::instance).collect())
    }

    async fn launch(&self, client_token: &str) -> Result<Instance, ProviderError> {
        if let Some(r) = self
            .records()
            .await?
            .into_iter()
            .find(|r| r.token == client_token)
        {
            return Ok(Self::instance(&r));
        }
        let (addr, admin) = two_free_addrs().map_err(io("pick free ports"))?;
        let now = now_ms();
        let mut r = Record {
            id: format!("l{}", addr.port()),
            token: client_token.to_string(),
            pid: None,
            addr,
            admin,
            phase: Phase::Launching,
            launched_at_ms: now,
            phase_since_ms: now,
        };
        // Recorded before it starts: a crash in between leaves a record whose process is found
        // by its address (or, if it never started, cleaned up as dead), never a process nobody
        // knows.
        self.write(&r).await?;
        r.pid = Some(self.spawn(&r).await?);
        self.write(&r).await?;
        Ok(Self::instance(&r))
    }

    async fn set_phase(&self, id: &str, phase: Phase) -> Result<(), ProviderError> {
        let mut r = self.record(id).await?;
        if r.phase != phase {
            r.phase = phase;
            r.phase_since_ms = now_ms();
            self.write(&r).await?;
        }
        Ok(())
    }

    async fn terminate(&self, id: &str) -> Result<(), ProviderError> {
        let r = match self.record(id).await {
            Ok(r) => r,
            Err(ProviderError::Unknown(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let pid = r.pid.or_else(|| find_pid(r.addr));
        if let Some(pid) = pid.filter(|&pid| process_alive(pid, r.addr)) {
            // As a cloud instance's termination: no goodbye, for the machine and its tracker.
            // The workspace forbids unsafe code, so the `kill` utility sends the signal.
            let target = match process_group(pid) {
                Some(group) if group == pid => format!("-{group}"),
                _ => pid.to_string(),
            };
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg("--")
                .arg(target)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            let deadline = tokio::time::Instant::now() + KILL_WAIT;
            while process_alive(pid, r.addr) {
                if tokio::time::Instant::now() > deadline {
                    return Err(ProviderError::Api {
                        what: format!("terminate {id}"),
                        why: format!("pid {pid} still runs after SIGKILL"),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(format!("remove state of {id}"))(e)),
        }
    }
}
