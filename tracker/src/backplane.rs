//! The Redis backplane: the connections that join tracker instances into one fleet.
//!
//! Two links, each supervised here and retried forever with jittered exponential backoff
//! (redis-rs' own reconnect gives up after a few seconds, which would leave a subscriber dead
//! silently after a longer outage):
//! - the **command link** (a multiplexed connection, or a cluster connection) carries
//!   membership commands and publishes; concurrent callers are pipelined by redis-rs;
//! - the **subscriber link** (RESP3, pushes) is subscribed to this instance's relay channel,
//!   with SSUBSCRIBE on a Redis Cluster. A disconnection, `redis.health_failures` failed health
//!   PINGs in a row, or a sharded unsubscribe pushed by the server (its slot moved) is followed
//!   by a resubscribe.
//!
//! The command link is health-checked on a third connection of its own: a PING queued behind
//! a busy pipeline of publishes would time out under load, declare Redis down and make every
//! instance re-register its members (more load). It takes `redis.health_failures` failed PINGs
//! in a row to declare the link down; a command that finds the connection broken does at once.
//!
//! Every link may be TLS (`rediss://`, rustls, the CA of `redis.tls_ca_file` or the system's)
//! and log in as an ACL user. Every batch published is sealed with the fleet key and every batch
//! received opened before anything else reads it ([`crate::batch_seal`]): refusals are counted
//! by reason in `tracker_remote_batches_refused_total`.
//!
//! Pushes are handed to a bounded queue with `try_send` from redis-rs' reader: the subscriber
//! connection never waits for us, so Redis never drops it for a full output buffer; what
//! doesn't fit (in count or in `redis.inbound_queue_bytes`) is dropped and counted. One task
//! opens the envelopes and hands the batches on to the relay. While the command link is down,
//! `is_up` is false and callers skip Redis (local pairing and relay go on).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline,
    ProtocolVersion, PushInfo, PushKind, RedisFuture, TlsCertificates, Value,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::batch_seal::{Opener, SIGNED_HEADER, Sealer, unix_ms};
use crate::config::{RedisConfig, Secret};
use crate::fleet_key::FleetKeys;
use crate::metrics::{Metrics, RemoteDrop};
use crate::relay::codec::batch_len;
use swarmtrack_protocol::InstanceId;

mod health;
mod inbound;

use health::{Health, health_ping, is_broken};
pub use inbound::InboundBatch;
use inbound::{QueueBytes, Sealed, open_batches};

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
    /// A configured URL doesn't parse (the URL isn't shown: it may hold a password).
    #[error("invalid redis URL: {source}")]
    Url {
        /// What is wrong with it.
        #[source]
        source: redis::RedisError,
    },
    /// A TLS file named in the configuration can't be read.
    #[error("redis TLS file {path:?}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why it can't be read.
        #[source]
        source: std::io::Error,
    },
}

/// Who this tracker is to Redis and to the other trackers.
#[derive(Debug, Default)]
pub struct Access<'a> {
    /// ACL user; overrides the URL's.
    pub username: Option<&'a str>,
    /// Password; overrides the URL's.
    pub password: Option<&'a Secret>,
    /// The fleet keys batches are sealed and opened with; `None` only with
    /// `redis.allow_unsigned`.
    pub keys: Option<FleetKeys>,
}

/// Where Redis is.
#[derive(Clone)]
enum Target {
    // Boxed: with TLS, a ConnectionInfo is ten times a Vec.
    Single(Box<ConnectionInfo>),
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

/// The Redis links of one tracker instance.
#[derive(Clone)]
pub struct Backplane {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// Certificates for `rediss://` (a private CA, a client certificate); `None`: plain TCP or
    /// the system's trust store.
    tls: Option<TlsCertificates>,
    /// Seals published batches.
    sealer: Sealer,
    /// What received batches are opened with.
    keys: Option<FleetKeys>,
    config: RedisConfig,
    cmd: RwLock<Option<Conn>>,
    up: AtomicBool,
    /// True while the relay channel is subscribed (the instance can receive).
    subscribed: AtomicBool,
    /// Bumped at every (re)connection of the command link, so membership re-registers.
    epoch: watch::Sender<u64>,
    /// Asks the supervisor to reconnect now.
    broken: Notify,
    metrics: Arc<Metrics>,
}

impl Backplane {
    /// Validates the configured URLs and reads the TLS files; nothing connects until
    /// [`Backplane::start`].
    ///
    /// # Errors
    /// A URL that doesn't parse, a TLS file that can't be read.
    pub fn new(
        config: &RedisConfig,
        access: Access<'_>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BackplaneError> {
        let parse = |url: &String| -> Result<ConnectionInfo, BackplaneError> {
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|source| BackplaneError::Url { source })?;
            // No CLIENT SETINFO at connection: one command fewer for the ACL user to allow (and
            // for a Redis 7.0 to refuse).
            let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
            if let Some(user) = access.username {
                settings = settings.set_username(user);
            }
            if let Some(p) = access.password {
                settings = settings.set_password(p.expose());
            }
            Ok(info.set_redis_settings(settings))
        };
        let target = match &config.url {
            Some(url) => Target::Single(Box::new(parse(url)?)),
            None => Target::Cluster(config.cluster.iter().map(parse).collect::<Result<_, _>>()?),
        };
        if config
            .url
            .iter()
            .chain(&config.cluster)
            .any(|u| u.starts_with("rediss://"))
        {
            // rustls needs a process-wide crypto provider; an error means one is set already.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let (epoch, _) = watch::channel(0);
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                tls: tls_certificates(config)?,
                sealer: Sealer::new(access.keys.clone()),
                keys: access.keys,
                config: config.clone(),
                cmd: RwLock::new(None),
                up: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
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
    /// batches are opened and go to `inbound` (dropped and counted when it is full, refused
    /// and counted when they don't open).
    pub fn start(
        &self,
        tasks: &TaskTracker,
        cancel: CancellationToken,
        channel: String,
        inbound: mpsc::Sender<InboundBatch>,
    ) {
        let (sealed_tx, sealed_rx) = mpsc::channel(self.inner.config.inbound_queue);
        let opener = Opener::new(
            self.inner.keys.clone(),
            channel.clone(),
            self.inner.config.replay_window_ms,
        );
        tasks.spawn(supervise_commands(Arc::clone(&self.inner), cancel.clone()));
        tasks.spawn(open_batches(
            Arc::clone(&self.inner),
            cancel.clone(),
            opener,
            sealed_rx,
            inbound,
        ));
        tasks.spawn(subscribe(
            Arc::clone(&self.inner),
            cancel,
            channel,
            sealed_tx,
        ));
    }

    /// True while the command link is connected.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// True while subscribed to this instance's relay channel: it can receive signals.
    pub fn is_subscribed(&self) -> bool {
        self.inner.subscribed.load(Ordering::Acquire)
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
                if is_broken(&e) {
                    self.inner.mark_broken();
                }
                Err(e.into())
            }
            Err(_) => Err(BackplaneError::Timeout),
        }
    }

    /// Publishes one batch on a relay channel, sealed with the fleet key: PUBLISH, or
    /// SPUBLISH on a cluster. Returns how many subscribers received it (0: nobody is
    /// subscribed to that channel now).
    ///
    /// # Errors
    /// As [`Backplane::query`].
    pub async fn publish(&self, channel: &str, batch: &[u8]) -> Result<i64, BackplaneError> {
        let verb = if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let sealed = self.inner.sealer.seal(channel, batch, unix_ms());
        let mut pipe = redis::pipe();
        pipe.cmd(verb).arg(channel).arg(sealed);
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
                    let client = self.client((**info).clone())?;
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
                    let client = self.cluster_builder(nodes, connect, response).build()?;
                    Ok(Conn::Cluster(client.get_async_connection().await?))
                }
            }
        };
        within_connect_deadline(connect, attempt).await
    }
}

impl Inner {
    /// A single-server client, with the configured certificates on `rediss://`.
    fn client(&self, info: ConnectionInfo) -> redis::RedisResult<Client> {
        match &self.tls {
            Some(certs) => Client::build_with_tls(info, certs.clone()),
            None => Client::open(info),
        }
    }

    /// A cluster client with the link timeouts and certificates; few retries inside redis-rs,
    /// because the supervisors here retry forever themselves.
    fn cluster_builder(
        &self,
        nodes: &[ConnectionInfo],
        connect: Duration,
        response: Duration,
    ) -> redis::cluster::ClusterClientBuilder {
        let builder = ClusterClient::builder(nodes.to_vec())
            .connection_timeout(connect)
            .response_timeout(response)
            .retries(2);
        match &self.tls {
            Some(certs) => builder.certs(certs.clone()),
            None => builder,
        }
    }
}

/// The certificates of `redis.tls_*`, read once at start; `None` when none is configured
/// (plain TCP, or `rediss://` checked against the system's trust store).
fn tls_certificates(config: &RedisConfig) -> Result<Option<TlsCertificates>, BackplaneError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| BackplaneError::TlsFile {
            path: path.to_path_buf(),
            source,
        })
    };
    let root_cert = config.tls_ca_file.as_deref().map(read).transpose()?;
    let client_tls = match (&config.tls_client_cert_file, &config.tls_client_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        _ => None,
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
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
    let mut checks = Health::new(inner.config.health_failures);
    // The health PINGs' own connection: never queued behind the command link's publishes.
    let mut checker: Option<Conn> = None;
    let mut failures: u64 = 0;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let connected = inner
            .cmd
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !connected {
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
                    checks = Health::new(inner.config.health_failures);
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
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = inner.broken.notified() => checker = None,
            () = tokio::time::sleep(health) => {
                // A check may have to connect first: never hold a shutdown up for it.
                let ok = tokio::select! {
                    () = cancel.cancelled() => return,
                    ok = health_ping(&inner, &mut checker) => ok,
                };
                if checks.record(ok) {
                    warn!(
                        failures = inner.config.health_failures,
                        "redis health checks failed in a row"
                    );
                    checker = None;
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
    inbound: mpsc::Sender<Sealed>,
) {
    let mut backoff = Backoff::new(&inner.config);
    let health = Duration::from_millis(inner.config.health_check_ms);
    let mut subscribed_before = false;
    let queued = QueueBytes {
        used: Arc::new(AtomicUsize::new(0)),
        max: inner.config.inbound_queue_bytes,
    };
    // No batch larger than this can decode (its inflated form is bounded by it); refused
    // before it takes any room in the queues.
    let largest = inner.config.max_inbound_batch_bytes + SIGNED_HEADER;
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
            let queued = queued.clone();
            move |push: PushInfo| -> Result<(), ()> {
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        let Some(Value::BulkString(bytes)) = push.data.into_iter().nth(1) else {
                            return Ok(());
                        };
                        if bytes.len() > largest {
                            metrics.shared().remote_dropped(RemoteDrop::BadBatch, 1);
                            return Ok(());
                        }
                        let bytes = Bytes::from(bytes);
                        let queued = match queued.take(bytes.len()) {
                            Some(budget) => inbound
                                .try_send(Sealed { bytes, budget })
                                .map_err(|e| e.into_inner().bytes),
                            None => Err(bytes),
                        };
                        if let Err(bytes) = queued {
                            // Counted in batches and, read from the batch's header, signals.
                            let signals = crate::batch_seal::unverified_batch(&bytes)
                                .and_then(batch_len)
                                .unwrap_or(1);
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
        inner.subscribed.store(true, Ordering::Release);
        if subscribed_before {
            // Whatever was published meanwhile is lost: count the gap.
            inner.metrics.shared().redis_resubscribe();
            info!(channel, "redis relay channel resubscribed");
        } else {
            info!(channel, "redis relay channel subscribed");
        }
        subscribed_before = true;
        backoff.reset();
        let mut checks = Health::new(inner.config.health_failures);
        let ping_timeout = Duration::from_millis(inner.config.command_timeout_ms);

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
                    let (ok, broken) = match tokio::time::timeout(ping_timeout, link.ping()).await {
                        Ok(Ok(())) => (true, false),
                        Ok(Err(e)) => (false, is_broken(&e)),
                        Err(_) => (false, false),
                    };
                    if broken || checks.record(ok) {
                        break;
                    }
                }
            }
        }
        inner.subscribed.store(false, Ordering::Release);
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
                let client = inner.client((**info).clone().set_redis_settings(settings))?;
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
                let client = inner
                    .cluster_builder(nodes, connect, response)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(sender)
                    .build()?;
                Ok(SubLink::Cluster(client.get_async_connection().await?))
            }
        }
    };
    within_connect_deadline(connect, attempt).await
}
