//! moto's EC2 server (`moto_server`, a Python package) on a free loopback port, for the
//! autoscaler's EC2 provider. scripts/test installs it into `target/venv` and names it in
//! `MOTO_SERVER`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use crate::process::{
    Process, free_addr, launch, log_file, read_log, start_on_free_ports, temp_dir,
};
use crate::wait::LONG_DEADLINE;

/// `moto_server` from `MOTO_SERVER`, else from `PATH`; `None` when absent outside CI, after
/// saying loudly that the test is skipped.
///
/// # Panics
/// When it is absent in CI (`CI=true`), where the EC2 tests must run.
pub fn find() -> Option<PathBuf> {
    let named = std::env::var_os("MOTO_SERVER").map(PathBuf::from);
    let found = named.or_else(|| {
        Command::new("sh")
            .args(["-c", "command -v moto_server"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    });
    match found {
        Some(p) if p.exists() => Some(p),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("moto_server not found: set MOTO_SERVER (scripts/test installs moto)")
        }
        _ => {
            eprintln!(
                "\n*** SKIPPED: moto_server not found (set MOTO_SERVER or run scripts/test, \
                 which installs moto[server] into a venv) ***\n"
            );
            None
        }
    }
}

/// A running `moto_server`; killed on drop.
pub struct Moto {
    /// `http://127.0.0.1:PORT`, the EC2 endpoint URL.
    pub endpoint: String,
    /// Declared before `_dir`: the process is killed before its folder goes.
    _process: Process,
    _dir: TempDir,
}

impl Moto {
    /// Starts `bin` on a free port and waits until it listens.
    ///
    /// # Panics
    /// When it can't be started.
    pub fn start(bin: &Path) -> Self {
        let dir = temp_dir("moto");
        let log = dir.path().join("moto.log");
        let (endpoint, process) = start_on_free_ports("moto_server", || {
            let addr = free_addr();
            let (out, err) = log_file(&log);
            let mut cmd = Command::new(bin);
            cmd.args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            launch(
                "moto_server",
                &mut cmd,
                LONG_DEADLINE,
                || read_log(&log),
                |p| p.listens_on(addr.port()),
            )
            .map(|p| (format!("http://{addr}"), p))
        });
        Self {
            endpoint,
            _process: process,
            _dir: dir,
        }
    }
}
