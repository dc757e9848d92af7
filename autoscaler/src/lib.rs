//! swarmtrack autoscaler: keeps the tracker fleet the right size on the trackers' own figures
//! (connections/sec, messages/sec, live connections), scaling out fast and in slowly through
//! HAProxy drains so no viewer is dropped.
//!
//! Each tick ([`reconcile`]) rebuilds its view from the [`provider`] and [`haproxy`]
//! ([`observe`]), asks the pure [`policy`], and acts; [`status`] shows what it does. It keeps
//! no state of its own that matters: a restarted autoscaler carries on from the provider's
//! records and HAProxy.

pub mod config;
pub mod haproxy;
pub mod observe;
pub mod policy;
pub mod provider;
pub mod reconcile;
pub mod status;
pub mod tracker;

use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ProviderKind};
use crate::haproxy::Haproxy;
use crate::provider::Provider;
use crate::reconcile::{LoopMetrics, Reconciler};
use crate::status::Board;
use crate::tracker::TrackerClient;

/// Runs the autoscaler until `shutdown`: the reconcile loop and the status listener on
/// `status_listener`. The trackers' admin token is `admin_token` (from the environment).
///
/// # Errors
/// No admin token outside a dry run, the provider can't be set up or the status listener
/// fails.
pub async fn run(
    config: Config,
    status_listener: TcpListener,
    admin_token: Option<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Without the token every drain request is refused, and each drained instance would lose
    // its viewers at the drain deadline instead of telling them to reconnect.
    if admin_token.is_none() && !config.dry_run {
        anyhow::bail!(
            "TRACKER_ADMIN_TOKEN is not set: the trackers would refuse every drain and scale-in \
             would cut viewers off; set it (the trackers' admin token) or run with --dry-run"
        );
    }
    match config.provider {
        ProviderKind::Local => {
            let provider = provider::local::LocalProvider::new(config.local.clone())
                .context("local provider")?;
            run_with(config, provider, status_listener, admin_token, shutdown).await
        }
        #[cfg(feature = "ec2")]
        ProviderKind::Ec2 => {
            let provider = provider::ec2::Ec2Provider::new(&config)
                .await
                .context("ec2 provider")?;
            run_with(config, provider, status_listener, admin_token, shutdown).await
        }
        #[cfg(not(feature = "ec2"))]
        ProviderKind::Ec2 => anyhow::bail!("this build has no ec2 feature"),
    }
}

async fn run_with<P: Provider>(
    config: Config,
    provider: P,
    status_listener: TcpListener,
    admin_token: Option<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Its own recorder (not the process-global one), as the tracker does.
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let metrics = metrics::with_local_recorder(&recorder, LoopMetrics::register);
    let board = Board::new(&config);
    let client = TrackerClient::new(
        Duration::from_millis(config.tracker.http_timeout_ms),
        admin_token,
    );
    let haproxy = Haproxy::new(&config.haproxy);
    tracing::info!(
        fleet = %config.fleet,
        provider = ?config.provider,
        backend = %config.haproxy.backend,
        dry_run = config.dry_run,
        status = %status_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        "autoscaler started"
    );
    let reconciler = Reconciler::new(config, provider, haproxy, client, board.clone(), metrics);
    let app = status::router(board, handle);
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(status_listener, app)
            .with_graceful_shutdown(async move { server_shutdown.cancelled().await })
            .await
    });
    reconciler.run(shutdown.clone()).await;
    shutdown.cancel();
    server
        .await
        .context("status server task")?
        .context("status server")?;
    tracing::info!("autoscaler stopped");
    Ok(())
}
