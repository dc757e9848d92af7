//! swarmtrack tracker: pairs viewers of the same video and relays their WebRTC signaling.
//!
//! `run` wires one instance together: the swarm index and peer table ([`swarm`], [`relay`]),
//! one task per WebSocket ([`session`]), the HTTP surface ([`http`]), metrics and the drain
//! ([`shutdown`]). The binary parses the command line, binds the listeners and calls `run`;
//! tests call `run` with listeners on `127.0.0.1:0`.

pub mod backplane;
pub mod config;
pub mod http;
pub mod metrics;
pub mod relay;
pub mod session;
pub mod shutdown;
pub mod state;
pub mod swarm;
pub mod webtorrent;

/// The native wire protocol, from its own crate so the simulator shares it.
pub use swarmtrack_protocol as protocol;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use tokio::sync::mpsc;

use crate::backplane::Backplane;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::InstanceId;
use crate::relay::{PeerTable, remote};
use crate::shutdown::Lifecycle;
use crate::state::AppState;
use crate::swarm::{Directory, SwarmIndex};

/// The sockets a tracker serves on, bound by the caller.
pub struct Listeners {
    /// Viewers and health checks.
    pub main: TcpListener,
    /// `/metrics` and `/admin/*`, if separate.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config.server`.
    ///
    /// # Errors
    /// When an address can't be bound.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let main = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let admin = match config.server.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding admin listener {addr}"))?,
            ),
            None => None,
        };
        Ok(Self { main, admin })
    }
}

/// Runs one tracker until `shutdown` is cancelled (or a drain is requested over the admin
/// API), then drains: viewers are told to reconnect, and the function returns once they are
/// gone or at the drain deadline.
///
/// # Errors
/// When a listener fails.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let backplane = match config.redis.enabled() {
        true => Some(
            Backplane::new(
                &config.redis,
                config.redis_password.as_ref(),
                Arc::clone(&metrics),
            )
            .context("redis configuration")?,
        ),
        false => None,
    };
    // Peer ids route by instance id, so instances sharing a Redis must not share an id.
    let instance_token = format!("{:016x}", rand::random::<u64>());
    let instance = match &backplane {
        Some(b) => {
            let ttl = Duration::from_secs(config.redis.membership_ttl_secs);
            b.claim_instance_id(&instance_token, ttl).await
        }
        None => InstanceId::random(),
    };
    let stop_sessions = CancellationToken::new();
    let lifecycle = Arc::new(Lifecycle::new(
        config.limits.max_connections,
        stop_sessions.clone(),
        Arc::clone(&metrics),
    ));
    let drain_deadline = Duration::from_secs(config.drain.deadline_secs);
    let shards = config.swarm.shards;
    let peers = Arc::new(PeerTable::new(
        instance,
        shards,
        config.websocket.outbox_capacity,
    ));
    let index = Arc::new(SwarmIndex::new(shards));

    // The Redis side: started before viewers arrive, stopped after they are gone.
    let background = TaskTracker::new();
    let stop_background = CancellationToken::new();
    let (remote, directory) = if let Some(backplane) = backplane {
        let (inbound_tx, inbound_rx) = mpsc::channel(config.redis.inbound_queue);
        let channel = remote::channel_name(&config.redis.key_prefix, instance);
        info!(%channel, cluster = backplane.is_cluster(), "scale-out through redis");
        backplane.start(&background, stop_background.clone(), channel, inbound_tx);
        let remote = remote::start(
            &background,
            stop_background.clone(),
            backplane.clone(),
            &config.redis,
            Arc::clone(&peers),
            Arc::clone(&metrics),
            inbound_rx,
        );
        let directory = Directory::start(
            &background,
            stop_background.clone(),
            backplane,
            &config.redis,
            (instance, instance_token),
            Arc::clone(&index),
            Arc::clone(&metrics),
        );
        (Some(remote), Some(directory))
    } else {
        (None, None)
    };
    let state = AppState::new(
        config,
        instance,
        Arc::clone(&lifecycle),
        Arc::clone(&metrics),
        peers,
        index,
        remote,
        directory,
    );

    let stop_http = CancellationToken::new();
    let tasks = TaskTracker::new();
    let main_addr = listeners
        .main
        .local_addr()
        .context("main listener address")?;
    let app = http::router(state.clone(), listeners.admin.is_none());
    // Signals are small frames that must leave at once: without TCP_NODELAY, Nagle's
    // algorithm holds a frame written while the previous one is unacknowledged until the
    // viewer's delayed ACK (40 ms on Linux). The simulator found this: answers took 40 ms.
    let main = listeners.main.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "TCP_NODELAY on an accepted connection");
        }
    });
    let main_server = tasks.spawn(
        axum::serve(main, app)
            .with_graceful_shutdown(stop_http.clone().cancelled_owned())
            .into_future(),
    );
    let admin_server = match listeners.admin {
        Some(admin) => {
            let addr = admin.local_addr().context("admin listener address")?;
            info!(%addr, "admin listener");
            Some(
                tasks.spawn(
                    axum::serve(admin, http::admin_router(state.clone()))
                        .with_graceful_shutdown(stop_http.clone().cancelled_owned())
                        .into_future(),
                ),
            )
        }
        None => None,
    };
    tasks.spawn({
        let metrics = Arc::clone(&metrics);
        let stop = stop_http.clone();
        async move {
            let mut tick = tokio::time::interval(Metrics::UPKEEP_INTERVAL);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => metrics.upkeep(),
                }
            }
        }
    });
    info!(%instance, addr = %main_addr, "tracker started");

    tokio::select! {
        () = shutdown.cancelled() => info!("shutdown requested: draining"),
        () = lifecycle.draining.cancelled() => {}
    }
    lifecycle.start_drain();
    lifecycle.sessions.close();
    let remaining = lifecycle.connections();
    info!(
        connections = remaining,
        deadline_secs = drain_deadline.as_secs(),
        "draining"
    );
    if tokio::time::timeout(drain_deadline, lifecycle.sessions.wait())
        .await
        .is_err()
    {
        warn!(
            connections = lifecycle.connections(),
            "drain deadline reached: closing the rest"
        );
    }
    stop_sessions.cancel();
    // Bounded: a session sees `stop` at its next await, at worst after a write times out
    // (websocket.write_timeout_secs), then its close handshake has a 1 s timeout.
    lifecycle.sessions.wait().await;
    stop_http.cancel();
    tasks.close();
    tasks.wait().await;
    // Every Redis call has a timeout, so this wait is bounded.
    stop_background.cancel();
    background.close();
    background.wait().await;

    main_server
        .await
        .context("main server task")?
        .context("main server")?;
    if let Some(admin) = admin_server {
        admin
            .await
            .context("admin server task")?
            .context("admin server")?;
    }
    info!("tracker stopped");
    Ok(())
}
