//! The `autoscaler` binary: CLI, config, logging and signals around [`autoscaler::run`].

use std::path::PathBuf;

use anyhow::Context as _;
use autoscaler::config::Config;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// swarmtrack autoscaler: keeps the tracker fleet the right size.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file (see config/autoscaler.example.toml).
    #[arg(long, env = "AUTOSCALER_CONFIG")]
    config: Option<PathBuf>,
    /// Log decisions without acting.
    #[arg(long)]
    dry_run: bool,
    /// Address of the status page, /status and /metrics (overrides the config).
    #[arg(long)]
    status_listen: Option<std::net::SocketAddr>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration and exit.
    PrintConfig,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    if cli.log_json {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    match start(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoscaler: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    config.dry_run |= cli.dry_run;
    if let Some(addr) = cli.status_listen {
        config.status_listen = addr;
    }
    if let Some(Command::PrintConfig) = cli.command {
        println!(
            "{}",
            toml::to_string_pretty(&config).context("print config")?
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.status_listen)
        .await
        .with_context(|| format!("bind status listener {}", config.status_listen))?;
    let token = std::env::var("TRACKER_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    autoscaler::run(config, listener, token, shutdown).await
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
