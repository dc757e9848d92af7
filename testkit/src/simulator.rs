//! The `simulator` binary, run by tests to completion (with a deadline) or in the background,
//! and readers for its JSON report.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Process, workspace_bin};
use crate::wait::{LONG_DEADLINE, within_for};

/// Runs the simulator with `args` to its end, within [`LONG_DEADLINE`]; its output (stdout,
/// stderr, status) and how long it took. It is killed if the test gives up on it.
///
/// # Panics
/// When it can't be started or doesn't end in time.
pub async fn simulate(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let child = tokio::process::Command::new(workspace_bin("simulator"))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = within_for("the simulator to end", LONG_DEADLINE, child)
        .await
        .expect("run the simulator");
    (out, started.elapsed())
}

/// Starts the simulator with `args` in the background, its stdout discarded, its stderr the
/// test's; killed when the returned [`Process`] drops.
pub fn spawn(args: &[&str]) -> Process {
    Process::spawn(
        "simulator",
        Command::new(workspace_bin("simulator"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}

/// A JSON report (`--json`).
///
/// # Panics
/// When it can't be read or isn't JSON.
pub fn report(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("report {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("report {}: {e}", path.display()))
}

/// An unsigned number at a JSON pointer of the report (`/total/connects`).
///
/// # Panics
/// When there is none.
pub fn u(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in the report"))
}

/// A number at a JSON pointer of the report (`/total/offer/p99_ms`).
///
/// # Panics
/// When there is none.
pub fn f(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no {pointer} in the report"))
}

/// A run's stdout and stderr, for a failure message.
pub fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
