//! The `autoscaler` binary under test, with the local provider: its config and state in a
//! temporary folder, its status listener on a free port. The trackers it launches outlive it by
//! design (restart safety), so dropping an [`Autoscaler`] kills them too, by the pids its state
//! records (each a process group: the local "machine" and the tracker it boots).

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::haproxy::{Haproxy, Options, Routing};
use crate::http::request_blocking;
use crate::process::{
    Process, free_addr, launch, log_file, pid_alive, read_log, start_on_free_ports, temp_dir,
    workspace_bin,
};
use crate::redis::RedisServer;
use crate::tracker::{ADMIN_TOKEN, FLEET_KEY};
use crate::wait::LONG_DEADLINE;

/// The `autoscaler` binary with a local provider.
pub struct Autoscaler {
    /// Status listener.
    pub status: SocketAddr,
    /// Extra environment for the binary (e.g. AWS credentials for moto).
    env: Vec<(String, String)>,
    /// Declared before `dir`: the process is killed before its folder goes.
    process: Option<Process>,
    starts: usize,
    dir: TempDir,
}

impl Autoscaler {
    /// Writes the config `make_config` returns for the local provider's state folder (see
    /// [`fleet_config`]), and starts the binary.
    ///
    /// # Panics
    /// When it can't be started.
    pub fn start(make_config: impl FnOnce(&Path) -> String) -> Self {
        Self::start_with_env(Vec::new(), make_config)
    }

    /// As [`start`](Self::start), with extra environment variables for the binary.
    ///
    /// # Panics
    /// When it can't be started.
    pub fn start_with_env(
        env: Vec<(String, String)>,
        make_config: impl FnOnce(&Path) -> String,
    ) -> Self {
        let dir = temp_dir("autoscaler");
        let config = make_config(&state_dir_of(dir.path()));
        fs::write(dir.path().join("autoscaler.toml"), config).expect("write config");
        let mut a = Self {
            status: free_addr(),
            env,
            process: None,
            starts: 0,
            dir,
        };
        a.launch();
        a
    }

    /// Its folder: the config, one log per start, and the local provider's state.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its config file: rewrite it, then [`kill`](Self::kill) and [`launch`](Self::launch)
    /// again, to restart with another config.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("autoscaler.toml")
    }

    /// The local provider's state folder (one JSON record per instance).
    pub fn state_dir(&self) -> PathBuf {
        state_dir_of(self.dir.path())
    }

    /// (Re)starts the binary and waits until `/healthz` answers; on a new status port if the
    /// last one was taken meanwhile.
    ///
    /// # Panics
    /// When it can't be started.
    pub fn launch(&mut self) {
        let bin = workspace_bin("autoscaler");
        let mut first = true;
        start_on_free_ports("autoscaler", || {
            if !std::mem::take(&mut first) {
                self.status = free_addr();
            }
            self.starts += 1;
            let log = self.log_path(self.starts);
            let (out, err) = log_file(&log);
            let mut cmd = Command::new(&bin);
            cmd.arg("--config")
                .arg(self.dir.path().join("autoscaler.toml"))
                .arg("--status-listen")
                .arg(self.status.to_string())
                .env("TRACKER_ADMIN_TOKEN", ADMIN_TOKEN)
                // Passed through to the trackers it starts, as the admin token is.
                .env("TRACKER_FLEET_KEY", FLEET_KEY)
                .env("RUST_LOG", "info,autoscaler=debug")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .env_remove("AUTOSCALER_CONFIG")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            let status = self.status;
            let process = launch(
                "autoscaler",
                &mut cmd,
                LONG_DEADLINE,
                || read_log(&log),
                |p| p.listens_on(status.port()) && get(status, "/healthz").is_some(),
            )?;
            self.process = Some(process);
            Ok(())
        });
    }

    fn log_path(&self, start: usize) -> PathBuf {
        self.dir.path().join(format!("autoscaler.{start}.log"))
    }

    /// SIGKILL: no goodbye, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Every log so far, one per start.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|n| read_log(&self.log_path(n)))
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// GET `path` on the status listener; the body of a 200 answer.
    pub fn get(&self, path: &str) -> Option<String> {
        get(self.status, path)
    }

    /// `/status` as JSON.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.get("/status")?).ok()
    }

    /// The local provider's instance records: (id, pid, phase), sorted.
    pub fn records(&self) -> Vec<(String, Option<u32>, String)> {
        let Ok(entries) = fs::read_dir(state_dir_of(self.dir.path())) else {
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
                    v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
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
        // The instances it started outlive it by design: stop them here, each a process
        // group (the machine and its tracker).
        for (_, pid, _) in self.records() {
            if let Some(pid) = pid.filter(|&p| pid_alive(p)) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
        if std::thread::panicking() {
            eprintln!("autoscaler log:\n{}", self.log());
        }
    }
}

/// The local provider's state folder inside an autoscaler's folder.
fn state_dir_of(dir: &Path) -> PathBuf {
    dir.join("state")
}

/// GET on the status listener: the body of a 200 answer, `None` otherwise.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    match request_blocking(addr, "GET", path, Duration::from_secs(5)) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// The haproxy an autoscaler manages in tests: the template with an empty `leastconn` backend
/// (start it with no servers), room for the simulator's viewers.
pub fn haproxy_options() -> Options {
    Options {
        server_maxconn: 400,
        global_maxconn: 1000,
        ..Options::new(Routing::LeastConn)
    }
}

/// The config of a test fleet: fast polls and checks, short drains, the workspace's tracker
/// binary on `redis`, behind `haproxy`'s runtime socket; `extra` (top-level keys first, then
/// whole sections such as `[targets]`, `[scaling]`) comes before the fixed sections.
pub fn fleet_config(
    haproxy: &Haproxy,
    redis: &RedisServer,
    state_dir: &Path,
    extra: &str,
) -> String {
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
        socket = haproxy.socket().display(),
        tracker = workspace_bin("tracker").display(),
        state = state_dir.display(),
        redis = redis.url(),
    )
}
