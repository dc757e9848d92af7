//! The options every mode shares: where the report goes, how many processes (and on which
//! hosts) carry the load, and the tracker to watch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::plan::{Invalid, check};

/// Report outputs and the run's seed.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the SVG plot here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No live progress on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Random seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The processes that carry the load, and the tracker whose CPU each step reports.
#[derive(Debug, Clone, Args)]
pub struct Processes {
    /// Worker processes on this machine; each runs one thread and holds its share of the
    /// connections (one process can hold at most about 19,000: the descriptor limit). 0 with
    /// `--worker-at`: only remote workers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=64))]
    pub workers: u8,
    /// A worker on another host (`simulator worker --listen ADDR` there), by address; repeat
    /// for several. The run is then shared by these and the `--workers` local ones, and the
    /// report merges them.
    #[arg(long = "worker-at")]
    pub worker_at: Vec<SocketAddr>,
    /// The tracker's process id (on this machine): every step then reports the tracker's CPU
    /// use from /proc, and a ramp's verdict says whether the tracker or the simulator ran out.
    /// Repeat for several trackers (and Redis): their CPU adds up, against the CPUs they may
    /// run on together.
    #[arg(long)]
    pub tracker_pid: Vec<u32>,
}

impl Processes {
    /// Local plus remote workers.
    pub fn total(&self) -> usize {
        usize::from(self.workers) + self.worker_at.len()
    }

    /// Checks the counts.
    ///
    /// # Errors
    /// More than 64 workers in all, or a tracker pid that can't be read.
    pub fn validate(&self) -> Result<(), Invalid> {
        check((1..=64).contains(&self.total()), || {
            "1 to 64 workers in all (--workers plus --worker-at)".into()
        })?;
        for &pid in &self.tracker_pid {
            check(super::cpu::of_pid_ms(pid).is_some(), || {
                format!("--tracker-pid {pid}: no such process on this machine (/proc/{pid}/stat)")
            })?;
        }
        Ok(())
    }
}

/// A ramp's bounds.
#[derive(Debug, Clone, Args)]
pub struct BoundArgs {
    /// A step fails when a p99 latency is above this.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,
    /// A step fails when the share of messages lost (or refused), of errors per frame sent,
    /// or of connection attempts failed, is above this.
    #[arg(long, default_value_t = 0.01)]
    pub max_loss: f64,
}

/// The bounds a ramp step must stay within.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Highest p99 latency, ms.
    pub max_p99_ms: f64,
    /// Highest share lost, failed or refused.
    pub max_loss: f64,
}

impl BoundArgs {
    /// The bounds.
    ///
    /// # Errors
    /// `--max-loss` outside 0..=1.
    pub fn bounds(&self) -> Result<Bounds, Invalid> {
        check((0.0..=1.0).contains(&self.max_loss), || {
            "--max-loss must be within 0..=1".into()
        })?;
        Ok(Bounds {
            max_p99_ms: self.max_p99.as_secs_f64() * 1000.0,
            max_loss: self.max_loss,
        })
    }
}
