//! The command line: the subcommands of both modes and the worker, the descriptor check, and
//! running a mode's run to its report, table, JSON and plot.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::harness::controller::{self, Run};
use crate::harness::engine::Event;
use crate::harness::mode::Mode;
use crate::harness::options::Output;
use crate::harness::plan::{Invalid, Job};
use crate::harness::plot;
use crate::harness::workers::{self, Assignment};
use crate::native::options::{RampArgs, RunArgs, peak_connections};
use crate::native::report::Native;
use crate::pairs::PairsArgs;
use crate::webtorrent::options::WebtorrentArgs;
use crate::webtorrent::report::Webtorrent;

/// Descriptors a process keeps for itself (stdio, the runtime, pipes to workers).
pub const RESERVED_FDS: u64 = 100;

/// Emulates browser viewers against swarmtrack: real SDP and ICE, Zipf-popular videos, and a
/// ramp that finds the load where the service stops keeping up.
#[derive(Debug, Parser)]
#[command(name = "simulator", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A fixed load for a duration.
    Run(RunArgs),
    /// Raise connections/sec and messages/sec step by step until p99 latency or loss crosses
    /// a bound; report the knee (the last step that held).
    Ramp(RampArgs),
    /// Browser WebTorrent peers against a tracker's `/announce` (closed loop; `--ramp` finds
    /// the knee).
    Webtorrent(WebtorrentArgs),
    /// Fixed pairs of viewers relaying to each other, closed loop: the server's relayed
    /// messages per second and CPU per message (swarmtrack, or the bare relay as the ceiling).
    Pairs(PairsArgs),
    /// A worker of a run: started by the simulator itself (its plan on stdin, events on
    /// stdout), or with `--listen` on another host for a parent's `--worker-at`.
    Worker(WorkerArgs),
}

/// `worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Serve one run to a parent that connects here (`--worker-at` on the parent), then exit;
    /// prints the address it listens on. Without it, the run comes on stdin.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

/// A run's seed when none was given.
pub fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Raises the soft descriptor limit to the hard one; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// Refuses a plan whose connections (`peak`, in all) can't fit in the local processes'
/// descriptors.
///
/// # Errors
/// The plan doesn't fit, with the `--workers` it needs.
pub fn fits_fd_limit(peak: u64, processes: usize) -> Result<(), Invalid> {
    let limit = raise_fd_limit();
    let usable = limit.saturating_sub(RESERVED_FDS);
    let need = peak.div_ceil(processes.max(1) as u64);
    if need <= usable {
        return Ok(());
    }
    let workers = peak.div_ceil(usable.max(1));
    Err(Invalid(format!(
        "this run may hold up to {need} connections in one process, but a process here may \
         open only {limit} file descriptors (the hard limit; {usable} usable for connections). \
         Use --workers {workers} or more (up to 64), or lower the load"
    )))
}

/// What `main` does with the command line.
pub enum Plan {
    /// A native run.
    Native(Run<<Native as Mode>::Spec>, Output),
    /// A WebTorrent run.
    Webtorrent(Run<<Webtorrent as Mode>::Spec>, Output),
    /// A fixed-pairs run.
    Pairs(PairsArgs),
    /// Be a worker.
    Worker(WorkerArgs),
}

impl Command {
    /// Validates the command into what to run.
    ///
    /// # Errors
    /// An option out of range, named; a plan that doesn't fit the descriptor limit.
    pub fn plan(self) -> Result<Plan, Invalid> {
        match self {
            Command::Run(r) => {
                let run = r.run(r.load.output.seed.unwrap_or_else(clock_seed))?;
                fits_fd_limit(
                    peak_connections(&run.phases, r.load.watch_max),
                    run.processes.total(),
                )?;
                Ok(Plan::Native(run, r.load.output))
            }
            Command::Ramp(r) => {
                let run = r.run(r.load.output.seed.unwrap_or_else(clock_seed))?;
                fits_fd_limit(
                    peak_connections(&run.phases, r.load.watch_max),
                    run.processes.total(),
                )?;
                Ok(Plan::Native(run, r.load.output))
            }
            Command::Webtorrent(w) => {
                let run = w.run(w.output.seed.unwrap_or_else(clock_seed))?;
                fits_fd_limit(
                    crate::webtorrent::options::peak_connections(&run.phases),
                    run.processes.total(),
                )?;
                Ok(Plan::Webtorrent(run, w.output))
            }
            Command::Pairs(p) => {
                p.validate().map_err(Invalid)?;
                Ok(Plan::Pairs(p))
            }
            Command::Worker(w) => Ok(Plan::Worker(w)),
        }
    }
}

/// Runs `run` of mode `M`: the table on stdout, the JSON report and the plot where asked.
///
/// # Errors
/// A worker that couldn't start, an output that couldn't be written, or a run with problems.
pub async fn simulate<M: Mode>(run: Run<M::Spec>, output: &Output) -> anyhow::Result<()> {
    let report = controller::drive::<M>(run).await?;
    print!(
        "{}",
        report.table(&M::header(), M::row, &M::summary(&report), M::knee_line)
    );
    if let Some(path) = &output.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("report: {}", path.display());
    }
    if let Some(path) = &output.svg {
        write_plot::<M>(&report, path).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("plot: {}", path.display());
    }
    anyhow::ensure!(
        report.problems.is_empty(),
        "the run had problems: {}",
        report.problems.join("; ")
    );
    Ok(())
}

fn write_plot<M: Mode>(
    report: &crate::harness::mode::ReportOf<M>,
    path: &Path,
) -> anyhow::Result<()> {
    let timeline = plot::Timeline {
        points: &report.timeline,
        t_s: |p| p.t_s,
        step: |p| p.step,
    };
    plot::draw(
        path,
        &M::title(report),
        &timeline,
        report.knee.as_ref().map(|k| k.step),
        &M::panels(),
    )
}

/// Runs an assignment from a parent: the mode it names, with its job.
///
/// # Errors
/// An unknown mode or a malformed job; a failed engine.
pub async fn work(
    assignment: Assignment,
    stop: CancellationToken,
    events: mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    match assignment.mode.as_str() {
        Native::NAME => {
            let job: Job<<Native as Mode>::Spec> =
                serde_json::from_value(assignment.job).context("malformed native job")?;
            Native::work(job, stop, events).await
        }
        Webtorrent::NAME => {
            let job: Job<<Webtorrent as Mode>::Spec> =
                serde_json::from_value(assignment.job).context("malformed webtorrent job")?;
            Webtorrent::work(job, stop, events).await
        }
        other => anyhow::bail!("unknown mode {other:?}"),
    }
}

/// `simulator worker`: serves one run, from stdin or from a parent that connects.
///
/// # Errors
/// See [`workers::serve`].
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    // Ctrl-C reaches the whole process group; the parent decides (it closes our input), so a
    // worker must not die of it and lose its figures.
    tokio::spawn(async {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
        }
    });
    match args.listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            println!("listening on {}", listener.local_addr()?);
            workers::serve_tcp(listener, work).await
        }
        None => workers::serve(tokio::io::stdin(), tokio::io::stdout(), work).await,
    }
}
