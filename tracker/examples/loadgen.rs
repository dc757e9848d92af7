//! `loadgen`: a load generator for the tracker's native protocol v1, run as its own process.
//!
//! - `loadgen idle`: N joined, silent viewers held open, to measure memory per connection.
//! - `loadgen relay`: P pairs of viewers relaying real browser SDP and candidates through the
//!   tracker, closed or open loop, reporting throughput and relay latency as one JSON line.
//!
//! It speaks the protocol with the tracker's own wire types (`tracker::protocol`), so it breaks
//! at compile time when the contract changes. It only targets loopback addresses, and spreads
//! its connections over several 127.0.0.x source addresses. `scripts/bench` drives it.
//!
//! Usage: `cargo run --release -p tracker --example loadgen -- relay --url ws://127.0.0.1:PORT/v1/ws`

// A crate root's modules live beside it; these live in `loadgen/` so the example stays one
// target (`--example loadgen`) while each module keeps to one concept.
#[path = "loadgen/conn.rs"]
mod conn;
#[path = "loadgen/idle.rs"]
mod idle;
#[path = "loadgen/payload.rs"]
mod payload;
#[path = "loadgen/relay.rs"]
mod relay;
#[path = "loadgen/signals.rs"]
mod signals;

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

/// Load generator for the swarmtrack tracker (native protocol v1, loopback only).
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open N viewers that join and stay silent; print `READY <n>` when all have joined.
    Idle(idle::IdleArgs),
    /// Relay signals between P pairs of viewers; print a JSON report.
    Relay(relay::RelayArgs),
}

fn main() -> ExitCode {
    // First thing: relay timestamps (`sid`) count nanoseconds from here.
    let started = Instant::now();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Idle(args) => idle::run(args).await,
            Command::Relay(args) => relay::run(args, started).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
