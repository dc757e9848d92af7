//! The `simulator` binary: `run`, `ramp`, `webtorrent` (and `worker`, which the simulator
//! starts itself).

use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use simulator::controller::{self, Mode};
use simulator::options::{Cli, Command, Invalid, LoadArgs, Phase, peak_connections};
use simulator::ramp::Bounds;
use simulator::webtorrent::WebtorrentArgs;
use simulator::{plot, webtorrent, workers};

/// Descriptors a process keeps for itself (stdio, the runtime, pipes to workers).
const RESERVED_FDS: u64 = 100;

fn main() -> ExitCode {
    // clap exits with code 2 on a malformed command line.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mode, load, phases) = match cli.command {
        Command::Worker => {
            raise_fd_limit();
            return match runtime.block_on(workers::worker_main()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: worker: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Webtorrent(w) => return run_webtorrent(&runtime, &w),
        Command::Run(r) => (Mode::Run, r.load.clone(), r.phases()),
        Command::Ramp(r) => (
            Mode::Ramp(Bounds {
                max_p99_ms: r.max_p99.as_secs_f64() * 1000.0,
                max_loss: r.max_loss,
            }),
            r.load.clone(),
            r.phases(),
        ),
    };
    let phases = match phases.and_then(|p| fits_fd_limit(&load, &p).map(|()| p)) {
        Ok(p) => p,
        Err(Invalid(msg)) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    exit(runtime.block_on(simulate(mode, &load, phases)))
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// The WebTorrent mode runs in one process: a plan that doesn't fit its descriptors is refused.
fn run_webtorrent(runtime: &tokio::runtime::Runtime, args: &WebtorrentArgs) -> ExitCode {
    let limit = raise_fd_limit();
    let plan = args
        .plan(args.seed.unwrap_or_else(clock_seed))
        .and_then(|p| {
            p.fits(limit, limit.saturating_sub(RESERVED_FDS))
                .map(|()| p)
        });
    let outputs = Outputs {
        json: args.json.as_deref(),
        svg: args.svg.as_deref(),
    };
    match plan {
        Ok(plan) => exit(runtime.block_on(async {
            let report = webtorrent::run(plan, args.quiet).await?;
            outputs.emit(&report, &report.table(), &report.problems, |path| {
                webtorrent::plot::write(&report, path)
            })
        })),
        Err(Invalid(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

async fn simulate(mode: Mode, load: &LoadArgs, phases: Vec<Phase>) -> anyhow::Result<()> {
    let seed = load.seed.unwrap_or_else(clock_seed);
    let report = controller::drive(mode, load, phases, seed).await?;
    let outputs = Outputs {
        json: load.json.as_deref(),
        svg: load.svg.as_deref(),
    };
    outputs.emit(&report, &report.table(), &report.problems, |path| {
        plot::write(&report, path)
    })
}

/// Where a run's report goes besides the table on stdout.
struct Outputs<'a> {
    json: Option<&'a Path>,
    svg: Option<&'a Path>,
}

impl Outputs<'_> {
    /// Prints the table, writes the JSON report and the plot when asked.
    fn emit<R: Serialize>(
        &self,
        report: &R,
        table: &str,
        problems: &[String],
        plot: impl FnOnce(&Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        print!("{table}");
        if let Some(path) = self.json {
            let json = serde_json::to_vec_pretty(report)?;
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("report: {}", path.display());
        }
        if let Some(path) = self.svg {
            plot(path).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("plot: {}", path.display());
        }
        anyhow::ensure!(
            problems.is_empty(),
            "the run had problems: {}",
            problems.join("; ")
        );
        Ok(())
    }
}

/// Raises the soft descriptor limit to the hard one; returns the limit now in force.
fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// Refuses a plan whose viewers can't fit in one process's descriptors.
fn fits_fd_limit(load: &LoadArgs, phases: &[Phase]) -> Result<(), Invalid> {
    let limit = raise_fd_limit();
    let usable = limit.saturating_sub(RESERVED_FDS);
    let need = peak_connections(phases, load.watch_max, load.workers);
    if need <= usable {
        return Ok(());
    }
    let total = need * u64::from(load.workers);
    let workers = total.div_ceil(usable.max(1));
    Err(Invalid(format!(
        "this run may hold up to {need} connections in one process, but a process here may \
         open only {limit} file descriptors (the hard limit; {usable} usable for viewers). \
         Use --workers {workers} or more (up to 64), or lower the rate or --watch-max"
    )))
}
