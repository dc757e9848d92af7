//! The `simulator` binary: parses the command line and runs it (see `simulator::cli`).

use std::process::ExitCode;

use clap::Parser;
use simulator::cli::{self, Cli, Plan};
use simulator::native::report::Native;
use simulator::webtorrent::report::Webtorrent;

fn main() -> ExitCode {
    // clap exits with code 2 on a malformed command line.
    let plan = match Cli::parse().command.plan() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread per process: the load is thousands of small sockets, and a second thread on
    // the same core only adds wake-ups between threads; more cores are more processes
    // (`--workers`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match plan {
            Plan::Native(run, output) => cli::simulate::<Native>(run, &output).await,
            Plan::Webtorrent(run, output) => cli::simulate::<Webtorrent>(run, &output).await,
            Plan::Pairs(args) => simulator::pairs::run(args).await,
            Plan::Worker(args) => cli::worker(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
