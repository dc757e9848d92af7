//! The `tracker` binary: command line, logging, listeners, signals; everything else is in the
//! library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracker::config::{Config, Overrides};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// swarmtrack tracker: WebRTC signaling for browser P2P video.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML config file (see config/tracker.example.toml).
    #[arg(long, env = "TRACKER_CONFIG")]
    config: Option<PathBuf>,
    /// Address for viewers and health checks [default: 0.0.0.0:8000].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address for /metrics and /admin (loopback only by default) [default: 127.0.0.1:8001].
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// A single Redis server for scale-out, e.g. redis://127.0.0.1:6379.
    #[arg(long)]
    redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated (sharded pub/sub).
    #[arg(long, value_delimiter = ',')]
    redis_cluster: Option<Vec<String>>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration (secrets left out) and exit.
    PrintConfig,
}

// The viewers are served by the worker threads `run` starts; this runtime only runs the Redis
// side, the admin listener and the drain.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init()
    } else {
        logs.init()
    }
    match main_inner(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: cli.listen,
        admin_listen: cli.admin_listen,
        redis_url: cli.redis_url,
        redis_cluster: cli.redis_cluster,
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    if let Some(Command::PrintConfig) = cli.command {
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    let listeners = tracker::Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signals(shutdown.clone()));
    tracker::run(config, listeners, shutdown).await
}

/// The first SIGTERM or SIGINT drains; a second one exits at once.
async fn on_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    for round in 0..2 {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        if round == 0 {
            shutdown.cancel()
        } else {
            std::process::exit(130)
        }
    }
}
