//! The Redis backplane: the connections that join tracker instances into one fleet.
//!
//! Two links, each supervised here and retried forever with jittered exponential backoff
//! (redis-rs' own reconnect gives up after a few seconds, which would leave a subscriber dead
//! silently after a longer outage):
//! - the **command link** (a multiplexed connection, or a cluster connection) carries
//!   membership commands and publishes; concurrent callers are pipelined by redis-rs;
//! - the **subscriber link** (RESP3, pushes) is subscribed to this instance's relay channel,
//!   with SSUBSCRIBE on a Redis Cluster. A disconnection, a failed health PING, or a sharded
//!   unsubscribe pushed by the server (its slot moved) is followed by a resubscribe.
//!
//! Pushes are handed to a bounded queue with `try_send` from redis-rs' reader: the subscriber
//! connection never waits for us, so Redis never drops it for a full output buffer; what
//! doesn't fit is dropped and counted. While the command link is down, `is_up` is false and
//! callers skip Redis (local pairing and relay go on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline,
    ProtocolVersion, PushInfo, PushKind, RedisFuture, Value,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{RedisConfig, Secret};
use crate::metrics::{Metrics, RemoteDrop};
use crate::relay::codec::batch_len;
use swarmtrack_protocol::InstanceId;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    /// The command link is down (reconnecting).
    #[error("redis is unreachable")]
    Down,
    /// The command didn't answer within `command_timeout_ms`.
    #[error("redis command timed out")]
    Timeout,
    /// Redis answered with an error, or the link broke during the command.
    #[error("redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// A configured URL doesn't parse.
    #[error("invalid redis URL {url:?}: {source}")]
    Url {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        #[source]
        source: redis::RedisError,
    },
}

/// Where Redis is.
#[derive(Clone)]
enum Target {
    Single(ConnectionInfo),
    Cluster(Vec<ConnectionInfo>),
}

/// A command connection of either kind.
#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Draws of a new instance id before giving up on a unique one (each clash has odds ~n/2^32).
const MAX_ID_CLAIMS: usize = 8;

/// The key that records which tracker holds an instance id.
pub fn instance_key(prefix: &str, id: InstanceId) -> String {
    format!("{prefix}:instance:{id}")
}

/// A received batch, as published by another instance.
pub type InboundBatch = Vec<u8>;

/// The Redis links of one tracker instance.
#[derive(Clone)]
pub struct Backplane {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    config: RedisConfig,
    cmd: RwLock<Option<Conn>>,
    up: AtomicBool,
    /// Bumped at every (re)connection of the command link, so membership re-registers.
    epoch: watch::Sender<u64>,
    /// Asks the supervisor to reconnect now.
    broken: Notify,
    metrics: Arc<Metrics>,
}

impl Backplane {
    /// Validates the configured URLs; nothing connects until [`Backplane::start`].
    ///
    /// # Errors
    /// A URL that doesn't parse.
    pub fn new(
        config: &RedisConfig,
        password: Option<&Secret>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BackplaneError> {
        let parse = |url: &String| -> Result<ConnectionInfo, BackplaneError> {
            let info =
                url.as_str()
                    .into_connection_info()
                    .map_err(|source| BackplaneError::Url {
                        url: url.clone(),
                        source,
                    })?;
            Ok(match password {
                Some(p) => {
                    let settings = info.redis_settings().clone().set_password(p.expose());
                    info.set_redis_settings(settings)
                }
                None => info,
            })
        };
        let target = match &config.url {
            Some(url) => Target::Single(parse(url)?),
            None => Target::Cluster(config.cluster.iter().map(parse).collect::<Result<_, _>>()?),
        };
        let (epoch, _) = watch::channel(0);
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                config: config.clone(),
                cmd: RwLock::new(None),
                up: AtomicBool::new(false),
                epoch,
                broken: Notify::new(),
                metrics,
            }),
        })
    }

    /// True on a Redis Cluster (sharded pub/sub).
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.target, Target::Cluster(_))
    }

    /// Starts the supervisor of the command link and the subscriber of `channel`; received
    /// batches go to `inbound` (dropped and counted when it is full).
    pub fn start(
        &self,
        tasks: &TaskTracker,
        cancel: CancellationToken,
        channel: String,
        inbound: mpsc::Sender<InboundBatch>,
    ) {
        tasks.spawn(supervise_commands(Arc::clone(&self.inner), cancel.clone()));
        tasks.spawn(subscribe(Arc::clone(&self.inner), cancel, channel, inbound));
    }

    /// True while the command link is connected.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// Changes at every (re)connection of the command link.
    pub fn epoch(&self) -> watch::Receiver<u64> {
        self.inner.epoch.subscribe()
    }

    /// Runs a pipeline (atomic or not, as built) with the command timeout.
    ///
    /// # Errors
    /// [`BackplaneError`]; a broken link is handed to the supervisor to reconnect.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, BackplaneError> {
        let mut conn = self.conn()?;
        let timeout = Duration::from_millis(self.inner.config.command_timeout_ms);
        match tokio::time::timeout(timeout, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error() {
                    self.inner.mark_broken();
                }
                Err(e.into())
            }
            Err(_) => Err(BackplaneError::Timeout),
        }
    }

    /// Publishes one payload on a relay channel: PUBLISH, or SPUBLISH on a cluster. Returns
    /// how many subscribers received it (0: nobody is subscribed to that channel now).
    ///
    /// # Errors
    /// As [`Backplane::query`].
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<i64, BackplaneError> {
        let verb = if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let mut pipe = redis::pipe();
        pipe.cmd(verb).arg(channel).arg(payload);
        self.query::<(i64,)>(&pipe).await.map(|(n,)| n)
    }

    /// Claims a unique instance id before the links start: `SET {prefix}:instance:{id} token
    /// NX PX ttl` on a one-off connection, drawing a new random id while one is taken. With
    /// Redis unreachable, the random id is kept (a clash among 32-bit ids is unlikely) and the
    /// refresh claims it once Redis is back.
    pub async fn claim_instance_id(&self, token: &str, ttl: Duration) -> InstanceId {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut id = InstanceId::random();
        let Ok(mut conn) = self.inner.connect_commands().await else {
            warn!(instance = %id, "redis unreachable at start: instance id not claimed yet");
            return id;
        };
        for _ in 0..MAX_ID_CLAIMS {
            let mut cmd = redis::cmd("SET");
            cmd.arg(instance_key(&self.inner.config.key_prefix, id))
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms);
            let claim = cmd.query_async::<Option<String>>(&mut conn);
            let timeout = Duration::from_millis(self.inner.config.command_timeout_ms);
            match tokio::time::timeout(timeout, claim).await {
                Ok(Ok(Some(_))) => return id,
                Ok(Ok(None)) => {
                    warn!(instance = %id, "instance id taken by another tracker: drawing another");
                    id = InstanceId::random();
                }
                _ => {
                    warn!(instance = %id, "could not claim the instance id: keeping it");
                    return id;
                }
            }
        }
        id
    }

    fn conn(&self) -> Result<Conn, BackplaneError> {
        if !self.is_up() {
            return Err(BackplaneError::Down);
        }
        let guard = self.inner.cmd.read().unwrap_or_else(|p| p.into_inner());
        guard.clone().ok_or(BackplaneError::Down)
    }
}

impl Inner {
    fn mark_broken(&self) {
        if self.up.swap(false, Ordering::AcqRel) {
            warn!("redis command link lost: serving local viewers only until it is back");
            self.metrics.set_redis_up(false);
        }
        *self.cmd.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.broken.notify_one();
    }

    fn timeouts(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.config.connect_timeout_ms),
            Duration::from_millis(self.config.command_timeout_ms),
        )
    }

    async fn connect_commands(&self) -> Result<Conn, BackplaneError> {
        let (connect, response) = self.timeouts();
        let attempt = async {
            match &self.target {
                Target::Single(info) => {
                    let client = Client::open(info.clone())?;
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(connect))
                        .set_response_timeout(Some(response));
                    Ok(Conn::Single(
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?,
                    ))
                }
                Target::Cluster(nodes) => {
                    let client = cluster_builder(nodes, connect, response).build()?;
                    Ok(Conn::Cluster(client.get_async_connection().await?))
                }
            }
        };
        within_connect_deadline(connect, attempt).await
    }
}

/// A cluster client with the link timeouts; few retries inside redis-rs, because the
/// supervisors here retry forever themselves.
fn cluster_builder(
    nodes: &[ConnectionInfo],
    connect: Duration,
    response: Duration,
) -> redis::cluster::ClusterClientBuilder {
    ClusterClient::builder(nodes.to_vec())
        .connection_timeout(connect)
        .response_timeout(response)
        .retries(2)
}

/// A whole connection attempt (TCP, handshake, cluster discovery) gets twice the connect
/// timeout; redis-rs' own timeouts cover single steps only.
async fn within_connect_deadline<T>(
    connect: Duration,
    attempt: impl Future<Output = Result<T, BackplaneError>>,
) -> Result<T, BackplaneError> {
    match tokio::time::timeout(connect * 2, attempt).await {
        Ok(r) => r,
        Err(_) => Err(BackplaneError::Timeout),
    }
}

/// Jittered exponential backoff, retried forever.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(config: &RedisConfig) -> Self {
        let min = Duration::from_millis(config.reconnect_min_backoff_ms);
        Self {
            min,
            max: Duration::from_millis(config.reconnect_max_backoff_ms),
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// Waits the next delay (half of it random, so instances don't retry in step); false if
    /// cancelled meanwhile.
    async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let half = self.next / 2;
        let jitter = half.mul_f64(rand::random::<f64>());
        let delay = half + jitter;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

async fn supervise_commands(inner: Arc<Inner>, cancel: CancellationToken) {
    let mut backoff = Backoff::new(&inner.config);
    let health = Duration::from_millis(inner.config.health_check_ms);
    let mut failures: u64 = 0;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let connected = inner.cmd.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(mut conn) = connected else {
            match inner.connect_commands().await {
                Ok(conn) => {
                    *inner.cmd.write().unwrap_or_else(|p| p.into_inner()) = Some(conn);
                    inner.up.store(true, Ordering::Release);
                    inner.metrics.set_redis_up(true);
                    let epoch = *inner.epoch.borrow() + 1;
                    if epoch > 1 {
                        inner.metrics.shared().redis_reconnect();
                    }
                    inner.epoch.send_replace(epoch);
                    info!(epoch, after_failures = failures, "redis command link up");
                    failures = 0;
                    backoff.reset();
                }
                Err(e) => {
                    failures += 1;
                    // One line per outage, then every 30 attempts, so logs stay readable.
                    if failures == 1 || failures.is_multiple_of(30) {
                        warn!(error = %e, failures, "redis unreachable; retrying");
                    }
                    if !backoff.wait(&cancel).await {
                        return;
                    }
                }
            }
            continue;
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = inner.broken.notified() => {}
            () = tokio::time::sleep(health) => {
                let ping = redis::cmd("PING");
                let ok = matches!(
                    tokio::time::timeout(health.max(Duration::from_millis(100)), ping.query_async::<String>(&mut conn)).await,
                    Ok(Ok(_))
                );
                if !ok {
                    inner.mark_broken();
                }
            }
        }
    }
}

/// What the subscriber loop reacts to.
enum SubEvent {
    Push(PushInfo),
    Closed,
    HealthCheck,
    Cancelled,
}

async fn subscribe(
    inner: Arc<Inner>,
    cancel: CancellationToken,
    channel: String,
    inbound: mpsc::Sender<InboundBatch>,
) {
    let mut backoff = Backoff::new(&inner.config);
    let health = Duration::from_millis(inner.config.health_check_ms);
    let mut subscribed_before = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        // Control pushes (disconnection, sunsubscribe) go through their own small queue so a
        // flood of messages can't hide them.
        let (control_tx, mut control_rx) = mpsc::channel::<PushInfo>(64);
        let sender = {
            let inbound = inbound.clone();
            let metrics = Arc::clone(&inner.metrics);
            move |push: PushInfo| -> Result<(), ()> {
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        if let Some(Value::BulkString(bytes)) = push.data.into_iter().nth(1)
                            && let Err(e) = inbound.try_send(bytes)
                        {
                            // Counted in batches and, read from the batch's header, signals.
                            let signals = batch_len(&e.into_inner()).unwrap_or(1);
                            let shared = metrics.shared();
                            shared.remote_inbound_dropped();
                            shared.remote_dropped(RemoteDrop::InboundFull, signals);
                        }
                        Ok(())
                    }
                    // Always Ok: an error may read as "receiver gone" to a push sender's caller.
                    // A full control queue only delays a reconnect until the health PING.
                    _ => {
                        let _ = control_tx.try_send(push);
                        Ok(())
                    }
                }
            }
        };
        let link = match connect_subscriber(&inner, sender).await {
            Ok(mut link) => match link.subscribe(&channel).await {
                Ok(()) => Some(link),
                Err(e) => {
                    warn!(error = %e, "redis subscribe failed; retrying");
                    None
                }
            },
            Err(e) => {
                if !subscribed_before {
                    warn!(error = %e, "redis subscriber can't connect; retrying");
                }
                None
            }
        };
        let Some(mut link) = link else {
            if !backoff.wait(&cancel).await {
                return;
            }
            continue;
        };
        inner.metrics.set_redis_subscribed(true);
        if subscribed_before {
            // Whatever was published meanwhile is lost: count the gap.
            inner.metrics.shared().redis_resubscribe();
            info!(channel, "redis relay channel resubscribed");
        } else {
            info!(channel, "redis relay channel subscribed");
        }
        subscribed_before = true;
        backoff.reset();

        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => SubEvent::Cancelled,
                push = control_rx.recv() => push.map_or(SubEvent::Closed, SubEvent::Push),
                () = tokio::time::sleep(health) => SubEvent::HealthCheck,
            };
            match event {
                SubEvent::Cancelled => return,
                SubEvent::Closed => break,
                SubEvent::Push(push) if push.kind == PushKind::Disconnection => break,
                SubEvent::Push(push) if push.kind == PushKind::SUnsubscribe => {
                    // The server dropped our sharded subscription: its slot moved.
                    if link.subscribe(&channel).await.is_err() {
                        break;
                    }
                    inner.metrics.shared().redis_resubscribe();
                    info!(
                        channel,
                        "sharded subscription moved with its slot: resubscribed"
                    );
                }
                SubEvent::Push(_) => {}
                SubEvent::HealthCheck => {
                    let ping =
                        tokio::time::timeout(health.max(Duration::from_millis(100)), link.ping());
                    if !matches!(ping.await, Ok(Ok(()))) {
                        break;
                    }
                }
            }
        }
        inner.metrics.set_redis_subscribed(false);
        warn!(channel, "redis subscriber link lost; reconnecting");
    }
}

/// The subscriber's connection.
enum SubLink {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl SubLink {
    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            SubLink::Single(c) => c.subscribe(channel).await,
            SubLink::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        let cmd = redis::cmd("PING");
        match self {
            SubLink::Single(c) => cmd.query_async::<()>(c).await,
            SubLink::Cluster(c) => cmd.query_async::<()>(c).await,
        }
    }
}

async fn connect_subscriber(
    inner: &Inner,
    sender: impl Fn(PushInfo) -> Result<(), ()> + Send + Sync + 'static,
) -> Result<SubLink, BackplaneError> {
    let (connect, response) = inner.timeouts();
    let attempt = async {
        match &inner.target {
            Target::Single(info) => {
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                let client = Client::open(info.clone().set_redis_settings(settings))?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect))
                    .set_response_timeout(Some(response))
                    .set_push_sender(sender);
                Ok(SubLink::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Target::Cluster(nodes) => {
                let client = cluster_builder(nodes, connect, response)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .build()?;
                Ok(SubLink::Cluster(client.get_async_connection().await?))
            }
        }
    };
    within_connect_deadline(connect, attempt).await
}
