//! Child processes for tests: a [`Process`] guard that kills and reaps its child when dropped
//! (also while a failing test unwinds), free loopback ports, temporary folders, readiness by
//! polling, and where the workspace's binaries are.
//!
//! Ports are picked by binding `127.0.0.1:0` and letting go, so another test process may take
//! one before our child binds it. Two rules make that harmless: a child only counts as ready
//! when it is *our* child that listens (see [`listens_on`]) or answers, and a child that exits at
//! start because its port was taken is started again on fresh ports ([`start_on_free_ports`]).
//!
//! A test killed from outside (nextest's timeout) can't run destructors; nextest puts each test
//! in its own process group and signals the whole group, which includes these children.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::wait::POLL;

/// Tries at fresh ports before giving up; each retry means another process won a bind race.
pub const START_ATTEMPTS: usize = 20;

/// Why a server process did not come up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// It exited because a port it was given was taken meanwhile: try other ports.
    #[error("a port was taken before the process bound it")]
    PortTaken,
    /// Anything else; the text says what (exit status, the end of its log).
    #[error("{0}")]
    Failed(String),
}

/// A child process, killed (SIGKILL) and reaped when dropped, so a test leaves no process
/// behind even when it panics.
pub struct Process {
    name: String,
    pid: u32,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Spawns `command`; `name` is for messages.
    ///
    /// # Panics
    /// When the program can't be started (scripts/test installs what the tests need).
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "spawn {name} ({:?}): {e} (scripts/test installs what the tests need)",
                command.get_program()
            )
        });
        Self {
            name: name.to_string(),
            pid: child.id(),
            child,
            exited: None,
        }
    }

    /// Its process id (kept after it exits).
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Its exit status once it has exited (and been reaped); `None` while it runs.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits until it exits by itself, within `deadline`.
    ///
    /// # Panics
    /// When it still runs at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let what = format!("{} to exit", self.name);
        crate::wait::eventually_blocking(&what, deadline, || self.try_exit())
    }

    /// SIGKILL, as a crash would, and waits for it to be gone. Does nothing once it has exited.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// Sends a signal by name (`INT`, `TERM`, ...) without waiting.
    ///
    /// # Panics
    /// When `kill(1)` can't be run or refuses.
    pub fn signal(&mut self, signal: &str) {
        if !self.is_running() {
            return;
        }
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{signal} {}: {status}", self.pid);
    }

    /// Whether this process listens on 127.0.0.1:`port` (or any address with that port).
    pub fn listens_on(&self, port: u16) -> bool {
        listens_on(self.pid, port)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `command` and polls until `ready` holds, within `deadline`. `log` gives what the
/// child wrote so far in this run: an exit before it is ready is a lost port race
/// ([`StartError::PortTaken`]) when the log [says so](says_port_taken), else a failure with the
/// log's end; past the deadline the child is killed and it is a failure too.
///
/// # Errors
/// As above.
pub fn launch(
    name: &str,
    command: &mut Command,
    deadline: Duration,
    log: impl Fn() -> String,
    mut ready: impl FnMut(&mut Process) -> bool,
) -> Result<Process, StartError> {
    let mut process = Process::spawn(name, command);
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = process.try_exit() {
            let text = log();
            if says_port_taken(&text) {
                return Err(StartError::PortTaken);
            }
            return Err(StartError::Failed(format!(
                "{name} exited at start ({status}):\n{}",
                tail(&text, 30)
            )));
        }
        if ready(&mut process) {
            return Ok(process);
        }
        if Instant::now() > until {
            process.kill();
            return Err(StartError::Failed(format!(
                "{name} not ready within {deadline:?}:\n{}",
                tail(&log(), 30)
            )));
        }
        thread::sleep(POLL);
    }
}

/// Calls `attempt` (which picks fresh ports each time) until it starts, retrying only a lost
/// port race.
///
/// # Panics
/// On a failure other than a taken port, or after [`START_ATTEMPTS`] lost races.
pub fn start_on_free_ports<T>(what: &str, mut attempt: impl FnMut() -> Result<T, StartError>) -> T {
    for _ in 0..START_ATTEMPTS {
        match attempt() {
            Ok(v) => return v,
            Err(StartError::PortTaken) => continue,
            Err(StartError::Failed(why)) => panic!("{what} did not start: {why}"),
        }
    }
    panic!("{what} found no free port in {START_ATTEMPTS} attempts");
}

/// Whether a log says a listener could not be bound (redis-server, haproxy, the workspace's
/// binaries, Python servers).
pub fn says_port_taken(log: &str) -> bool {
    [
        "Address already in use",
        "cannot bind socket",
        "Failed listening",
    ]
    .iter()
    .any(|m| log.contains(m))
}

/// A port that was free a moment ago; callers cope with losing it to a race.
///
/// # Panics
/// When no port can be bound at all.
pub fn free_port() -> u16 {
    free_addr().port()
}

/// `127.0.0.1` and a port that was free a moment ago.
///
/// # Panics
/// When no port can be bound at all.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
}

/// `N` distinct free addresses (all held while picking, so they differ).
///
/// # Panics
/// When no port can be bound at all.
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("local addr"))
}

/// Whether process `pid` holds a TCP socket listening on `port` (IPv4 or IPv6, any address):
/// the sockets listening on the port from `/proc/net/tcp{,6}`, matched against the inodes of
/// the process's open descriptors. Proves that the server answering there is the one we started.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .ok()
            .and_then(|l| {
                l.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .is_some_and(|inode| inodes.contains(&inode))
    })
}

/// Inodes of the TCP sockets in LISTEN state on `port`.
fn listening_inodes(port: u16) -> Vec<u64> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .flat_map(|text| {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let local = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
                    let listening = *f.get(3)? == "0A";
                    (local == port && listening).then(|| f.get(9)?.parse().ok())?
                })
                .collect::<Vec<u64>>()
        })
        .collect()
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

/// A new empty folder under the system temp dir (`swarmtrack-WHAT-...`), removed on drop.
///
/// # Panics
/// When it can't be created.
pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("swarmtrack-{what}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("create a temp dir for {what}: {e}"))
}

/// A binary of the workspace: the path nextest names in `NEXTEST_BIN_EXE_<name>` (set for the
/// binaries of the package under test), else the one built next to this test
/// (`target/<profile>/<name>`, from `target/<profile>/deps/<test>`).
///
/// # Panics
/// When it has not been built (scripts/test builds the whole workspace first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let named = [
        format!("NEXTEST_BIN_EXE_{name}"),
        format!("CARGO_BIN_EXE_{name}"),
    ]
    .into_iter()
    .filter_map(std::env::var_os)
    .map(PathBuf::from)
    .find(|p| p.exists());
    if let Some(bin) = named {
        return bin;
    }
    let exe = std::env::current_exe().expect("current exe");
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

/// Runs a command to completion within `deadline` and returns its output (stdout and stderr);
/// fails the test on a non-zero exit or a timeout. Output goes through a file in `dir`, so a
/// chatty command can't block on a full pipe while we wait.
///
/// # Panics
/// As above.
pub fn run(program: &str, args: &[&str], dir: &Path, deadline: Duration) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let out_path = dir.join(format!(
        "{program}-{}.out",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let out = File::create(&out_path).expect("command output file");
    let err = out.try_clone().expect("clone output file");
    let mut process = Process::spawn(
        program,
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
    );
    let status = crate::wait::poll_blocking(deadline, || process.try_exit());
    let output = fs::read_to_string(&out_path).unwrap_or_default();
    let _ = fs::remove_file(&out_path);
    match status {
        None => panic!("{program} {args:?} timed out:\n{output}"),
        Some(status) => assert!(
            status.success(),
            "{program} {args:?} failed ({status}):\n{output}"
        ),
    }
    output
}

/// The last `n` lines of `text`, for a failure message.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A log file's text so far (empty if it doesn't exist yet).
pub fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Opens (truncating) a log file for a child's stdout and stderr.
///
/// # Panics
/// When it can't be created.
pub fn log_file(path: &Path) -> (Stdio, Stdio) {
    let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let copy = file.try_clone().expect("clone log file");
    (Stdio::from(file), Stdio::from(copy))
}
