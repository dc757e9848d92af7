//! [`run`]: one tracker instance, from its listeners to the end of its drain.
//!
//! Viewers are served by worker threads, one per CPU by default, each with a single-threaded
//! runtime and its own accept queue (`SO_REUSEPORT` listeners, or one listener they share).
//! A connection stays on the worker that accepted it for its whole life: its session, its
//! metrics shard and its buffers are that thread's. Workers share only the instance's sharded
//! tables ([`Instance`]). The Redis side, the admin listener and the drain run on the caller's
//! runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::LocalSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::accept;
use crate::backplane::{Access, Backplane};
use crate::config::Config;
use crate::connections::{AwaitLimits, Connections, OutboxLimits};
use crate::http;
use crate::instance::Instance;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::relay::{Relay, remote};
use crate::swarm::{Directory, DirectoryParts, Liveness, Membership, SwarmIndex};
use crate::worker::Worker;
use swarmtrack_protocol::InstanceId;

/// Descriptors a tracker uses besides its connections' (listeners, epoll and wake-ups per
/// worker, Redis links, the accept loops' reserves, logs), allowed for in the startup check.
const DESCRIPTOR_OVERHEAD: u64 = 200;

/// The sockets a tracker serves on, bound by the caller.
pub struct Listeners {
    /// Viewers and health checks.
    pub main: TcpListener,
    /// `/metrics` and `/admin/*`, if separate.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses of `config.server`; the main one with `SO_REUSEPORT`, so each
    /// worker can have a listener of its own on the same address.
    ///
    /// # Errors
    /// When an address can't be bound.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let server = &config.server;
        let main = bind_reuseport(server.listen, server.listen_backlog)
            .with_context(|| format!("binding {}", server.listen))?;
        let admin = match server.admin_listen {
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

fn bind_reuseport(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// One listener per worker: new `SO_REUSEPORT` sockets on `main`'s address when `main` was
/// bound with it (the kernel then spreads connections), else copies of `main` that the workers
/// share.
fn worker_listeners(
    main: TcpListener,
    workers: usize,
    backlog: u32,
) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let addr = main.local_addr().context("main listener address")?;
    let main = main.into_std().context("main listener")?;
    let mut out = Vec::with_capacity(workers);
    for _ in 1..workers {
        let own = bind_reuseport(addr, backlog)
            .ok()
            .and_then(|l| l.into_std().ok());
        match own {
            Some(l) => out.push(l),
            None => out.push(main.try_clone().context("sharing the main listener")?),
        }
    }
    out.insert(0, main);
    Ok(out)
}

/// Runs one tracker until `shutdown` is cancelled (or a drain is requested over the admin
/// API), then drains: viewers are told to reconnect, and the function returns once they are
/// gone or at the drain deadline.
///
/// # Errors
/// When a listener fails or a worker thread can't start.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    check_descriptor_limit(&config);
    let metrics = Arc::new(Metrics::new());
    let keys = config.fleet_keys()?;
    if config.redis.enabled() && keys.is_none() {
        warn!(
            "INSECURE: redis.allow_unsigned without TRACKER_FLEET_KEY; anyone who can publish \
             on this Redis can hand signals to any viewer"
        );
    }
    let backplane = match config.redis.enabled() {
        true => Some(
            Backplane::new(
                &config.redis,
                Access {
                    username: config.redis_username.as_deref(),
                    password: config.redis_password.as_ref(),
                    keys: keys.clone(),
                },
                Arc::clone(&metrics),
            )
            .context("redis configuration")?,
        ),
        false => None,
    };
    // Peer ids route by instance id, so instances sharing a Redis must not share an id.
    let instance_token = format!("{:016x}", rand::random::<u64>());
    let id = match &backplane {
        Some(b) => {
            let ttl = Duration::from_secs(config.redis.membership_ttl_secs);
            b.claim_instance_id(&instance_token, ttl).await
        }
        None => InstanceId::random(),
    };
    let connections = Arc::new(Connections::new(
        id,
        config.swarm.shards,
        OutboxLimits {
            signals: config.websocket.outbox_capacity,
            bytes: config.websocket.outbox_bytes,
        },
        AwaitLimits {
            ttl_secs: u32::try_from(config.webtorrent.offer_ttl_secs).unwrap_or(u32::MAX),
            max: config.webtorrent.max_awaited_peers,
        },
    ));
    let index = Arc::new(SwarmIndex::new(config.swarm.shards));
    let lifecycle = Arc::new(Lifecycle::new(
        (
            config.limits.max_connections,
            config.server.reserve_connections,
        ),
        Arc::clone(&metrics),
        Arc::clone(&connections),
    ));

    // The Redis side: started before viewers arrive, stopped after they are gone.
    let background = TaskTracker::new();
    let stop_background = CancellationToken::new();
    let (remote, directory) = match backplane {
        Some(backplane) => {
            let (inbound_tx, inbound_rx) = mpsc::channel(config.redis.inbound_queue);
            let channel = remote::channel_name(&config.redis.key_prefix, id);
            info!(%channel, cluster = backplane.is_cluster(), "scale-out through redis");
            backplane.start(&background, stop_background.clone(), channel, inbound_tx);
            let live = Arc::new(Liveness::new(id, &config.redis));
            let remote = remote::start(
                &background,
                stop_background.clone(),
                backplane.clone(),
                &config.redis,
                remote::Local {
                    index: Arc::clone(&index),
                    connections: Arc::clone(&connections),
                    live: Arc::clone(&live),
                },
                Arc::clone(metrics.shared()),
                inbound_rx,
            );
            let directory = Directory::start(
                &background,
                stop_background.clone(),
                backplane,
                &config.redis,
                DirectoryParts {
                    live,
                    claim: (id, instance_token),
                    keys,
                    index: Arc::clone(&index),
                    draining: lifecycle.draining.clone(),
                    metrics: Arc::clone(metrics.shared()),
                },
            );
            (Some(remote), Some(directory))
        }
        None => (None, None),
    };
    let mut relay = Relay::new(Arc::clone(&connections), remote);
    if let Some(d) = &directory {
        relay = relay.with_liveness(d.liveness());
    }
    let instance = Arc::new(Instance {
        membership: Membership::new(index, Arc::clone(&connections), directory),
        relay,
        connections,
        lifecycle: Arc::clone(&lifecycle),
        metrics,
        id,
        config,
    });

    let stop_http = CancellationToken::new();
    let main_addr = listeners
        .main
        .local_addr()
        .context("main listener address")?;
    let worker_count = instance.config.server.worker_count();
    let router = http::router(Arc::clone(&instance), listeners.admin.is_none());
    let mut workers = Vec::with_capacity(worker_count);
    let per_worker = worker_listeners(
        listeners.main,
        worker_count,
        instance.config.server.listen_backlog,
    )?;
    for (i, listener) in per_worker.into_iter().enumerate() {
        workers.push(spawn_worker(
            i,
            Arc::clone(&instance),
            listener,
            router.clone(),
            stop_http.clone(),
        )?);
    }
    let tasks = TaskTracker::new();
    let admin_server = match listeners.admin {
        Some(admin) => {
            let addr = admin.local_addr().context("admin listener address")?;
            info!(%addr, "admin listener");
            Some(
                tasks.spawn(
                    axum::serve(admin, http::admin_router(Arc::clone(&instance)))
                        .with_graceful_shutdown(stop_http.clone().cancelled_owned())
                        .into_future(),
                ),
            )
        }
        None => None,
    };
    info!(instance = %id, addr = %main_addr, workers = worker_count, "tracker started");

    drain(&instance, &shutdown).await;
    stop_http.cancel();
    for worker in workers {
        // Each worker ends once its accept loop stops and its connections are gone.
        let _ = worker.await;
    }
    tasks.close();
    tasks.wait().await;
    // Every Redis call has a timeout, so this wait is bounded.
    stop_background.cancel();
    background.close();
    background.wait().await;
    if let Some(admin) = admin_server {
        admin
            .await
            .context("admin server task")?
            .context("admin server")?;
    }
    info!("tracker stopped");
    Ok(())
}

/// Warns at start when the process may open fewer descriptors than `limits.max_connections`
/// needs: accepts would then fail (counted) before the limit is reached. Read from
/// `/proc/self/limits` (Linux); elsewhere nothing is checked.
fn check_descriptor_limit(config: &Config) {
    let Ok(text) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    // "Max open files            1024                 524288               files"
    let soft = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    let need = (config.limits.max_connections as u64)
        .saturating_add(config.server.reserve_connections as u64)
        .saturating_add(DESCRIPTOR_OVERHEAD);
    if let Some(soft) = soft
        && soft < need
    {
        warn!(
            limit = soft,
            need,
            "the descriptor limit is below limits.max_connections + server.reserve_connections + {DESCRIPTOR_OVERHEAD}: accepts will fail (tracker_accept_errors_total) before max_connections is reached; raise LimitNOFILE or lower max_connections"
        );
    }
}

/// Waits for the shutdown or a drain request, then drains the sessions.
async fn drain(instance: &Instance, shutdown: &CancellationToken) {
    let lifecycle = &instance.lifecycle;
    tokio::select! {
        () = shutdown.cancelled() => info!("shutdown requested: draining"),
        () = lifecycle.draining.cancelled() => {}
    }
    lifecycle.start_drain();
    lifecycle.sessions.close();
    let deadline = Duration::from_secs(instance.config.drain.deadline_secs);
    info!(
        connections = lifecycle.connections(),
        deadline_secs = deadline.as_secs(),
        "draining"
    );
    if tokio::time::timeout(deadline, lifecycle.sessions.wait())
        .await
        .is_err()
    {
        warn!(
            connections = lifecycle.connections(),
            "drain deadline reached: closing the rest"
        );
    }
    lifecycle.stop_sessions();
    // Bounded: a session sees the stop when woken, at worst after a write times out
    // (websocket.write_timeout_secs), then its close handshake has a 1 s timeout.
    lifecycle.sessions.wait().await;
}

/// Starts worker thread `i`; the receiver resolves when it has finished.
fn spawn_worker(
    i: usize,
    instance: Arc<Instance>,
    listener: std::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) -> anyhow::Result<oneshot::Receiver<()>> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("tracker-worker-{i}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "a worker's runtime failed to start");
                    return;
                }
            };
            let local = LocalSet::new();
            local.block_on(&runtime, async {
                let worker = Worker::enter(instance);
                accept::run(&worker, listener, router, stop).await;
            });
            // Connections still open (draining ones) run to their end.
            runtime.block_on(local);
            let _ = done_tx.send(());
        })
        .context("starting a worker thread")?;
    Ok(done_rx)
}
