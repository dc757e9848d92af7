//! The tracker's configuration tree and its loader.
//!
//! Precedence: defaults < TOML file < environment (`TRACKER__SECTION__KEY`) < command line.
//! Secrets never come from the file: the admin token (`TRACKER_ADMIN_TOKEN`), the Redis
//! password (`TRACKER_REDIS_PASSWORD`) and the fleet keys (`TRACKER_FLEET_KEY`,
//! `TRACKER_FLEET_KEY_PREVIOUS`) are read from the environment and redacted from `Debug` and
//! `print-config`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::fleet_key::FleetKeys;
use swarmtrack_protocol::{DecodeLimits, MAX_SWARM_ID_BYTES};

/// The environment variable that holds the admin bearer token.
pub const ADMIN_TOKEN_ENV: &str = "TRACKER_ADMIN_TOKEN";

/// The whole tracker configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listeners.
    pub server: ServerConfig,
    /// Per-connection and per-instance limits.
    pub limits: LimitsConfig,
    /// WebSocket buffers, queues and timers.
    pub websocket: WebSocketConfig,
    /// Graceful drain.
    pub drain: DrainConfig,
    /// Local swarm index.
    pub swarm: SwarmConfig,
    /// Redis, for scale-out across instances; without it the tracker runs alone.
    pub redis: RedisConfig,
    /// The WebTorrent tracker protocol on `/announce` and `/`.
    pub webtorrent: WebTorrentConfig,
    /// Admin bearer token, from the environment only.
    #[serde(skip)]
    pub admin_token: Option<Secret>,
    /// Redis password, from the environment only (`TRACKER_REDIS_PASSWORD`); overrides one in
    /// the URL.
    #[serde(skip)]
    pub redis_password: Option<Secret>,
    /// Redis ACL user, from the environment (`TRACKER_REDIS_USERNAME`); overrides one in the
    /// URL. Without either, Redis' `default` user.
    #[serde(skip)]
    pub redis_username: Option<String>,
    /// The fleet key every relay batch is signed with, from the environment only
    /// (`TRACKER_FLEET_KEY`, at least 32 bytes, e.g. `openssl rand -hex 32`). Required with
    /// Redis unless `redis.allow_unsigned` is set.
    #[serde(skip)]
    pub fleet_key: Option<Secret>,
    /// The fleet key before a rotation, still accepted (`TRACKER_FLEET_KEY_PREVIOUS`).
    #[serde(skip)]
    pub fleet_key_previous: Option<Secret>,
}

/// The environment variable that holds the Redis password.
pub const REDIS_PASSWORD_ENV: &str = "TRACKER_REDIS_PASSWORD";
/// The environment variable that holds the Redis ACL user name.
pub const REDIS_USERNAME_ENV: &str = "TRACKER_REDIS_USERNAME";
/// The environment variable that holds the fleet key.
pub const FLEET_KEY_ENV: &str = "TRACKER_FLEET_KEY";
/// The environment variable that holds the previous fleet key, during a rotation.
pub const FLEET_KEY_PREVIOUS_ENV: &str = "TRACKER_FLEET_KEY_PREVIOUS";

/// Redis: the cross-instance relay and the global swarm membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// A single Redis server, `redis://[user:password@]host:port[/db]`, or `rediss://...` for
    /// TLS; user and password are better given as `TRACKER_REDIS_USERNAME` and
    /// `TRACKER_REDIS_PASSWORD`, which override the URL's.
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://host:port` or `rediss://host:port` each);
    /// instance channels then use sharded pub/sub. Exclusive with `url`.
    pub cluster: Vec<String>,
    /// PEM file of the CA(s) that sign the Redis server's certificate (`rediss://` only);
    /// without it, the system's trust store.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM certificate this tracker presents to Redis (`tls-auth-clients yes`); with
    /// `tls_client_key_file`.
    pub tls_client_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_client_cert_file`.
    pub tls_client_key_file: Option<PathBuf>,
    /// A relay batch whose signed time is further than this from ours (either way) is refused
    /// as stale, milliseconds, 100..=60000; the trackers' clocks must agree better than this
    /// (NTP). Also how long a replayed batch could be taken for new if its sequence were
    /// forgotten, which it isn't within twice this.
    pub replay_window_ms: u64,
    /// INSECURE: with no `TRACKER_FLEET_KEY`, run anyway, sending unsigned batches and
    /// accepting any; only for a Redis nothing but this fleet can reach (a loopback bench).
    /// Without it, a tracker with Redis and no key refuses to start.
    pub allow_unsigned: bool,
    /// Prefix of every key and channel, so fleets can share a Redis.
    pub key_prefix: String,
    /// A member not refreshed for this long is no longer handed out, seconds.
    pub membership_ttl_secs: u64,
    /// How often each instance refreshes its members' expiry, seconds (well below the TTL).
    pub refresh_interval_secs: u64,
    /// Most signals in one publish.
    pub batch_max_messages: usize,
    /// A batch is published once it holds this many payload bytes.
    pub batch_max_bytes: usize,
    /// A batch waits at most this long for more signals, microseconds; 0 publishes at once
    /// (signals that arrive while the previous publish to that instance awaits its answer
    /// still go together).
    pub batch_window_us: u64,
    /// Batches whose MessagePack form is at least this long are deflated, bytes.
    pub compress_threshold_bytes: usize,
    /// Largest batch accepted from Redis after inflating, bytes.
    pub max_inbound_batch_bytes: usize,
    /// Signals waiting to be batched; beyond it remote sends are dropped (counted).
    pub outbound_queue: usize,
    /// Received batches waiting to be delivered; beyond it they are dropped (counted), so the
    /// subscriber connection is never slowed (Redis drops subscribers that fall behind).
    pub inbound_queue: usize,
    /// Bytes of received batches waiting to be opened and decoded, at most (at least
    /// `max_inbound_batch_bytes`); beyond it they are dropped (counted) like a full queue.
    pub inbound_queue_bytes: usize,
    /// Publishes in flight at once, over all target instances; to any one instance there is
    /// at most one, so its signals leave in the order they arrived.
    pub max_inflight_publishes: usize,
    /// A signal still waiting for its publish after this long is dropped (counted as
    /// `stale`) and its sender gets `overloaded`, milliseconds; keep it above
    /// `command_timeout_ms`, the longest one publish can hold up the next.
    pub max_signal_age_ms: u64,
    /// Timeout of every Redis command, milliseconds.
    pub command_timeout_ms: u64,
    /// Timeout of a connection attempt, milliseconds.
    pub connect_timeout_ms: u64,
    /// Reconnect backoff starts here and doubles up to `reconnect_max_backoff_ms`, ms.
    pub reconnect_min_backoff_ms: u64,
    /// Longest wait between reconnect attempts (retried forever), milliseconds.
    pub reconnect_max_backoff_ms: u64,
    /// How often each link is checked with PING, milliseconds (the command link's on a
    /// connection of its own, so a busy pipeline doesn't delay it).
    pub health_check_ms: u64,
    /// Consecutive failed health PINGs (error or no answer within `command_timeout_ms`) before
    /// a link is declared down, 1..=100; a broken connection counts at once.
    pub health_failures: u32,
    /// How often an instance says it is alive (a signed heartbeat in `{prefix}:live`), ms.
    pub liveness_interval_ms: u64,
    /// An instance whose last heartbeat is older than this is dead: none of its members is
    /// handed out and no signal to it is queued, ms (more than twice `liveness_interval_ms`).
    pub liveness_ttl_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            cluster: Vec::new(),
            tls_ca_file: None,
            tls_client_cert_file: None,
            tls_client_key_file: None,
            replay_window_ms: 5_000,
            allow_unsigned: false,
            key_prefix: "st".into(),
            membership_ttl_secs: 30,
            refresh_interval_secs: 10,
            batch_max_messages: 64,
            batch_max_bytes: 64 * 1024,
            batch_window_us: 500,
            compress_threshold_bytes: 128,
            max_inbound_batch_bytes: 1 << 20,
            outbound_queue: 65_536,
            inbound_queue: 4_096,
            inbound_queue_bytes: 32 << 20,
            max_inflight_publishes: 64,
            max_signal_age_ms: 3_000,
            command_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
            reconnect_min_backoff_ms: 100,
            reconnect_max_backoff_ms: 5_000,
            health_check_ms: 1_000,
            health_failures: 3,
            liveness_interval_ms: 500,
            liveness_ttl_ms: 1_500,
        }
    }
}

impl RedisConfig {
    /// True when a single server or a cluster is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some() || !self.cluster.is_empty()
    }
}

/// The admin listener's default port, on 127.0.0.1.
pub const DEFAULT_ADMIN_PORT: u16 = 8001;

/// Where the tracker listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address for viewers (`/v1/ws`) and health checks.
    pub listen: SocketAddr,
    /// Address for `/metrics` and `/admin/*` (and `/healthz`, `/readyz` again), never served on
    /// `listen`. Loopback by default: give a private address for a Prometheus or autoscaler on
    /// another host; port 0 picks a free port (logged).
    pub admin_listen: Option<SocketAddr>,
    /// Worker threads serving viewers, each with its own runtime and accept queue
    /// (`SO_REUSEPORT`); 0 means one per CPU the process may run on.
    pub workers: usize,
    /// Length of each listener's queue of connections not yet accepted.
    pub listen_backlog: u32,
    /// A connection must have sent a whole request head within this long of starting to
    /// wait for it (after the accept, or after the previous response), seconds.
    pub http_header_timeout_secs: u64,
    /// A connection not upgraded yet that moves no byte either way for this long is closed
    /// (an idle keep-alive), seconds.
    pub http_idle_timeout_secs: u64,
    /// Connections served past `limits.max_connections`, only to answer health checks
    /// (`/readyz` says 503) and refuse upgrades with 503; past these, connections are closed
    /// at accept (counted in `tracker_connections_refused_total{reason="full"}`).
    pub reserve_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT))),
            workers: 0,
            listen_backlog: 4096,
            http_header_timeout_secs: 10,
            http_idle_timeout_secs: 5,
            reserve_connections: 64,
        }
    }
}

impl ServerConfig {
    /// Worker threads to run: `workers`, or one per CPU this process may use.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Limits on what viewers may do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most connections at once, WebSockets and HTTP connections not upgraded yet together;
    /// beyond it upgrades get 503. Keep it a few hundred below the process's file descriptor
    /// limit (`LimitNOFILE` in deploy/systemd; a test checks they agree).
    pub max_connections: usize,
    /// A connection in no swarm for this long is closed (`no_join`): one that never joined
    /// (native) or announced (WebTorrent), or left every swarm and stayed, seconds.
    pub join_timeout_secs: u64,
    /// Largest message accepted, in bytes; larger frames get `too_large` and are discarded.
    pub max_message_bytes: usize,
    /// Largest frame read at all, in bytes; larger frames close the connection with 1009.
    /// At least `max_message_bytes`.
    pub max_frame_bytes: usize,
    /// Messages per second per connection, on average (token bucket refill rate).
    pub messages_per_sec: u32,
    /// Messages a connection may send in a burst (token bucket size).
    pub burst: u32,
    /// Swarms one connection may be in at once.
    pub max_swarms_per_connection: usize,
    /// Largest `want` in `join`, and so the most peers returned.
    pub max_want: u32,
    /// Longest swarm id, in bytes, 1..=256.
    pub max_swarm_id_bytes: usize,
    /// Most messages in one client `batch`.
    pub max_batch: usize,
    /// Most ICE candidates in one `cands` (the SDK sends at most 32; browsers gather 2-12 per
    /// session). Over it: `bad_message`.
    pub max_cands: usize,
    /// Longest ICE candidate, in bytes (real ones are 80-250). Over it: `bad_message`.
    pub max_cand_bytes: usize,
    /// Allowed `Origin` header values; empty allows every origin.
    pub allowed_origins: Vec<String>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 18_000,
            join_timeout_secs: 30,
            max_message_bytes: 16 * 1024,
            max_frame_bytes: 64 * 1024,
            messages_per_sec: 50,
            burst: 200,
            max_swarms_per_connection: 16,
            max_want: 16,
            max_swarm_id_bytes: MAX_SWARM_ID_BYTES,
            max_batch: 64,
            max_cands: 32,
            max_cand_bytes: 1024,
            allowed_origins: Vec::new(),
        }
    }
}

impl LimitsConfig {
    /// The part of the limits the protocol decoder enforces.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_want: self.max_want,
            max_swarm_id_bytes: self.max_swarm_id_bytes,
            max_batch: self.max_batch,
            max_cands: self.max_cands,
            max_cand_bytes: self.max_cand_bytes,
        }
    }
}

/// WebSocket buffers, queues and timers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Messages queued for one viewer before further ones are dropped.
    pub outbox_capacity: usize,
    /// Bytes queued for one viewer (signals and what they relay) before further ones are
    /// dropped.
    pub outbox_bytes: usize,
    /// Bytes written to a viewer that its socket hasn't taken yet, at most; past it the
    /// viewer is closed as a slow consumer.
    pub max_unsent_bytes: usize,
    /// Most queued messages coalesced into one `batch` frame.
    pub max_coalesce: usize,
    /// Coalescing stops once a frame holds this many payload bytes (SDP, candidates).
    pub max_coalesce_bytes: usize,
    /// A write that takes longer than this closes the connection as a slow consumer, seconds.
    pub write_timeout_secs: u64,
    /// Interval between server WebSocket pings, seconds.
    pub ping_interval_secs: u64,
    /// A connection that sends nothing (not even a pong) for this long is closed, seconds; it is
    /// checked at each ping, so the close comes up to one ping interval later.
    pub idle_timeout_secs: u64,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            outbox_capacity: 64,
            outbox_bytes: 256 * 1024,
            max_unsent_bytes: 256 * 1024,
            max_coalesce: 64,
            max_coalesce_bytes: 32 * 1024,
            write_timeout_secs: 10,
            ping_interval_secs: 30,
            idle_timeout_secs: 90,
        }
    }
}

/// The WebTorrent tracker protocol (bittorrent-tracker, p2p-media-loader and WebTorrent
/// clients), served on `/announce` and `/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebTorrentConfig {
    /// Serve it at all.
    pub enabled: bool,
    /// The announce `interval` told to clients, seconds.
    pub interval_secs: u32,
    /// Most offers in one announce; more is refused with a `failure reason`.
    pub max_offers: usize,
    /// An offer may be answered for this long after it was sent, seconds.
    pub offer_ttl_secs: u64,
    /// A peer that hasn't announced in a swarm for this long leaves it, seconds; checked at
    /// each server ping, so it takes effect up to one ping interval later.
    pub peer_ttl_secs: u64,
    /// Peers one connection's offers may await answers from at once (peers it sent offers to
    /// that are unanswered and unexpired); past it, its offers to further peers are dropped
    /// until some are answered or expire.
    pub max_awaited_peers: usize,
    /// Most info hashes in one scrape.
    pub max_scrape_hashes: usize,
    /// Swarms one WebTorrent connection may announce in: a client shares one socket per
    /// tracker across all its torrents, so this is much larger than the native limit. Each
    /// membership costs ~250 bytes (the viewer's list and index, the swarm's peer table, the
    /// connection's swarm set), so the default bounds a connection at ~2.5 MB; relaying
    /// costs the same whatever the count (hashed lookups).
    pub max_swarms_per_connection: usize,
    /// Largest message processed, bytes (announces carry several complete SDPs); larger
    /// frames get a `failure reason`, and frames over `limits.max_frame_bytes` close the
    /// connection.
    pub max_message_bytes: usize,
}

impl Default for WebTorrentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 120,
            max_offers: 10,
            offer_ttl_secs: 120,
            peer_ttl_secs: 300,
            max_awaited_peers: 1024,
            max_scrape_hashes: 255,
            // aquatic_ws_load_test's connections announce in thousands of its 10,000
            // torrents; aquatic_ws has no limit. Issue 13: the load test runs without
            // failures on the defaults.
            max_swarms_per_connection: 10_000,
            max_message_bytes: 48 * 1024,
        }
    }
}

/// Graceful drain, on SIGTERM or `POST /admin/drain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// Viewers are told to reconnect after a delay drawn uniformly from 0..=this, milliseconds,
    /// so they don't all arrive at the other instances at once.
    pub reconnect_window_ms: u64,
    /// After its `reconnect` delay, a viewer gets this long to leave before it is closed with
    /// 1012, milliseconds.
    pub close_grace_ms: u64,
    /// The process exits at this deadline even with viewers left, seconds.
    pub deadline_secs: u64,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            reconnect_window_ms: 10_000,
            close_grace_ms: 5_000,
            deadline_secs: 30,
        }
    }
}

/// The local swarm index.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmConfig {
    /// Shards of the swarm index and connection table; a power of two spreads best.
    pub shards: usize,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        Self { shards: 64 }
    }
}

/// A secret string whose `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret value; use only to compare or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Values given on the command line, applied last.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `--redis-cluster`, split at commas.
    pub redis_cluster: Option<Vec<String>>,
}

impl Config {
    /// Loads defaults, then the TOML file (if given), then `TRACKER__*` variables, then the
    /// command-line overrides, and validates the result.
    ///
    /// # Errors
    /// A missing or malformed file, an unknown key, a bad value, or an invalid combination.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(Env::prefixed("TRACKER__").split("__"));
        let mut config: Config = fig.extract().context("invalid configuration")?;
        if let Some(listen) = overrides.listen {
            config.server.listen = listen;
        }
        if let Some(admin) = overrides.admin_listen {
            config.server.admin_listen = Some(admin);
        }
        if let Some(url) = &overrides.redis_url {
            config.redis.url = Some(url.clone());
        }
        if let Some(nodes) = &overrides.redis_cluster {
            config.redis.cluster = nodes.clone();
        }
        let env = |name: &str| std::env::var(name).ok().filter(|t| !t.is_empty());
        config.redis_password = env(REDIS_PASSWORD_ENV).map(Secret::new);
        config.redis_username = env(REDIS_USERNAME_ENV);
        config.fleet_key = env(FLEET_KEY_ENV).map(Secret::new);
        config.fleet_key_previous = env(FLEET_KEY_PREVIOUS_ENV).map(Secret::new);
        config.admin_token = std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        config.validate()?;
        config.fleet_keys()?;
        Ok(config)
    }

    /// The keys relay batches are signed and checked with: `None` without Redis, or with
    /// `redis.allow_unsigned` and no key.
    ///
    /// # Errors
    /// Redis configured without a key (and without `allow_unsigned`), a previous key without
    /// a current one, or a key shorter than 32 bytes.
    pub(crate) fn fleet_keys(&self) -> anyhow::Result<Option<FleetKeys>> {
        if !self.redis.enabled() {
            return Ok(None);
        }
        match (&self.fleet_key, &self.fleet_key_previous) {
            (Some(current), previous) => Ok(Some(
                FleetKeys::new(current.expose(), previous.as_ref().map(Secret::expose))
                    .with_context(|| format!("{FLEET_KEY_ENV} or {FLEET_KEY_PREVIOUS_ENV}"))?,
            )),
            (None, Some(_)) => bail!("{FLEET_KEY_PREVIOUS_ENV} is set but {FLEET_KEY_ENV} is not"),
            (None, None) if self.redis.allow_unsigned => Ok(None),
            (None, None) => bail!(
                "redis is configured but {FLEET_KEY_ENV} is not set: every tracker of a fleet \
                 needs the same key (e.g. `openssl rand -hex 32`) so that nothing published \
                 into Redis by anyone else is relayed; redis.allow_unsigned = true runs \
                 without one (INSECURE: only for a Redis nothing else can reach)"
            ),
        }
    }

    /// Parses a TOML document on top of the defaults, without environment or overrides.
    ///
    /// # Errors
    /// A malformed document, an unknown key, a bad value, or an invalid combination.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and combinations that serde can't.
    ///
    /// # Errors
    /// The first invalid value found, with what is expected.
    pub fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        let w = &self.websocket;
        let wt = &self.webtorrent;
        let checks: [(bool, &str); 26] = [
            (l.max_connections > 0, "limits.max_connections must be > 0"),
            (
                l.join_timeout_secs > 0,
                "limits.join_timeout_secs must be > 0",
            ),
            (
                self.server.http_header_timeout_secs > 0 && self.server.http_idle_timeout_secs > 0,
                "server.http_header_timeout_secs and http_idle_timeout_secs must be > 0",
            ),
            (
                l.max_message_bytes >= 256,
                "limits.max_message_bytes must be >= 256",
            ),
            (
                l.max_frame_bytes >= l.max_message_bytes,
                "limits.max_frame_bytes must be >= limits.max_message_bytes",
            ),
            (
                l.messages_per_sec > 0,
                "limits.messages_per_sec must be > 0",
            ),
            (l.burst > 0, "limits.burst must be > 0"),
            (
                l.max_swarms_per_connection > 0,
                "limits.max_swarms_per_connection must be > 0",
            ),
            (l.max_want > 0, "limits.max_want must be > 0"),
            (
                (1..=MAX_SWARM_ID_BYTES).contains(&l.max_swarm_id_bytes),
                "limits.max_swarm_id_bytes must be 1..=256",
            ),
            (l.max_batch > 0, "limits.max_batch must be > 0"),
            (l.max_cands > 0, "limits.max_cands must be > 0"),
            (l.max_cand_bytes > 0, "limits.max_cand_bytes must be > 0"),
            (
                w.outbox_capacity > 0,
                "websocket.outbox_capacity must be > 0",
            ),
            (w.max_coalesce > 0, "websocket.max_coalesce must be > 0"),
            (
                w.write_timeout_secs > 0,
                "websocket.write_timeout_secs must be > 0",
            ),
            (
                w.ping_interval_secs > 0 && w.idle_timeout_secs > w.ping_interval_secs,
                "websocket.idle_timeout_secs must be > websocket.ping_interval_secs > 0",
            ),
            (
                (1..=65_536).contains(&self.swarm.shards),
                "swarm.shards must be 1..=65536",
            ),
            (
                w.outbox_bytes >= 64 * 1024 && w.max_unsent_bytes >= 64 * 1024,
                "websocket.outbox_bytes and max_unsent_bytes must be >= 65536 (a frame fits)",
            ),
            (
                self.server.listen_backlog > 0 && self.server.workers <= 1024,
                "server.listen_backlog must be > 0 and server.workers at most 1024",
            ),
            (wt.interval_secs > 0, "webtorrent.interval_secs must be > 0"),
            (
                (1..=100).contains(&wt.max_offers),
                "webtorrent.max_offers must be 1..=100",
            ),
            (
                wt.offer_ttl_secs > 0,
                "webtorrent.offer_ttl_secs must be > 0",
            ),
            (wt.peer_ttl_secs > 0, "webtorrent.peer_ttl_secs must be > 0"),
            (
                wt.max_awaited_peers > 0
                    && wt.max_scrape_hashes > 0
                    && wt.max_swarms_per_connection > 0,
                "webtorrent.max_awaited_peers, max_scrape_hashes and max_swarms_per_connection must be > 0",
            ),
            (
                (256..=l.max_frame_bytes).contains(&wt.max_message_bytes),
                "webtorrent.max_message_bytes must be 256..=limits.max_frame_bytes",
            ),
        ];
        for (ok, msg) in checks {
            if !ok {
                bail!("{msg}");
            }
        }
        let r = &self.redis;
        let redis_checks: [(bool, &str); 13] = [
            (
                r.url.is_none() || r.cluster.is_empty(),
                "redis.url and redis.cluster are exclusive",
            ),
            (
                r.refresh_interval_secs > 0 && r.membership_ttl_secs > r.refresh_interval_secs,
                "redis.membership_ttl_secs must be > redis.refresh_interval_secs > 0",
            ),
            (
                r.liveness_interval_ms > 0 && r.liveness_ttl_ms > 2 * r.liveness_interval_ms,
                "redis.liveness_ttl_ms must be > 2 * redis.liveness_interval_ms > 0",
            ),
            (
                r.batch_max_messages > 0,
                "redis.batch_max_messages must be > 0",
            ),
            (
                r.outbound_queue > 0 && r.inbound_queue > 0,
                "redis queues must be > 0",
            ),
            (
                r.max_inflight_publishes > 0,
                "redis.max_inflight_publishes must be > 0",
            ),
            (
                r.max_signal_age_ms > 0,
                "redis.max_signal_age_ms must be > 0",
            ),
            (
                r.command_timeout_ms > 0 && r.connect_timeout_ms > 0 && r.health_check_ms > 0,
                "redis timeouts must be > 0",
            ),
            (
                r.reconnect_min_backoff_ms > 0
                    && r.reconnect_max_backoff_ms >= r.reconnect_min_backoff_ms,
                "redis.reconnect_max_backoff_ms must be >= reconnect_min_backoff_ms > 0",
            ),
            (
                (100..=60_000).contains(&r.replay_window_ms),
                "redis.replay_window_ms must be 100..=60000",
            ),
            (
                (1..=100).contains(&r.health_failures),
                "redis.health_failures must be 1..=100",
            ),
            (
                r.inbound_queue_bytes >= r.max_inbound_batch_bytes,
                "redis.inbound_queue_bytes must be >= redis.max_inbound_batch_bytes",
            ),
            (
                r.tls_client_cert_file.is_some() == r.tls_client_key_file.is_some(),
                "redis.tls_client_cert_file and redis.tls_client_key_file go together",
            ),
        ];
        for (ok, msg) in redis_checks {
            if !ok {
                bail!("{msg}");
            }
        }
        let tls_files = r.tls_ca_file.is_some() || r.tls_client_cert_file.is_some();
        for url in r.url.iter().chain(&r.cluster) {
            // Fail at start rather than retry a connection that can never succeed. URLs may
            // hold a password: never echo one.
            let tls = url.starts_with("rediss://");
            if !tls && !url.starts_with("redis://") {
                bail!("redis URLs must start with redis:// or rediss://");
            }
            if tls && url.contains("#insecure") {
                bail!(
                    "rediss:// URLs with #insecure are refused: the server's certificate is always checked (redis.tls_ca_file names a private CA)"
                );
            }
            if tls_files && !tls {
                bail!("redis.tls_* files are set but a redis URL is not rediss://");
            }
        }
        Ok(())
    }

    /// The configuration as TOML, secrets left out.
    ///
    /// # Errors
    /// Only if serialization fails.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("serializing config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn unknown_keys_and_bad_values_fail_fast() {
        assert!(Config::from_toml("[limits]\nmax_wnat = 3\n").is_err());
        assert!(Config::from_toml("[limits]\nmax_want = 0\n").is_err());
        assert!(Config::from_toml("[limits]\nmax_swarm_id_bytes = 300\n").is_err());
        assert!(Config::from_toml("[server]\nlisten = \"nope\"\n").is_err());
        assert!(Config::from_toml("[redis]\nurl = \"rediss://h:6380\"\n").is_ok());
        assert!(Config::from_toml("[redis]\nurl = \"rediss://h:6380/#insecure\"\n").is_err());
        assert!(
            Config::from_toml("[redis]\nurl = \"redis://h:6379\"\ntls_ca_file = \"/ca.pem\"\n")
                .is_err()
        );
        assert!(Config::from_toml("[redis]\nurl = \"http://h\"\n").is_err());
        assert!(
            Config::from_toml("[redis]\nurl = \"redis://a:1\"\ncluster = [\"redis://b:1\"]\n")
                .is_err()
        );
        assert!(Config::from_toml("[redis]\nurl = \"redis://127.0.0.1:6379\"\n").is_ok());
        let c = Config::from_toml("[limits]\nmax_want = 4\n").expect("valid");
        assert_eq!(c.limits.max_want, 4);
        assert_eq!(c.limits.burst, LimitsConfig::default().burst);
    }

    #[test]
    fn print_config_output_parses_back() {
        let mut c = Config::default();
        c.server.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 9000)));
        c.limits.allowed_origins = vec!["https://a.example".into()];
        c.admin_token = Some(Secret::new("hunter2"));
        let text = c.to_toml().expect("toml");
        assert!(!text.contains("hunter2"));
        let back = Config::from_toml(&text).expect("parses back");
        assert_eq!(back.server.admin_listen, c.server.admin_listen);
        assert_eq!(back.limits.allowed_origins, c.limits.allowed_origins);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn redis_without_a_fleet_key_refuses_unless_explicitly_insecure() {
        const KEY: &str = "0123456789abcdef0123456789abcdef";
        let mut c = Config::default();
        assert!(c.fleet_keys().expect("no redis, no key needed").is_none());
        c.redis.url = Some("redis://127.0.0.1:6379".into());
        let refused = c.fleet_keys().expect_err("redis without a key");
        assert!(format!("{refused:#}").contains(FLEET_KEY_ENV));
        c.redis.allow_unsigned = true;
        assert!(c.fleet_keys().expect("insecure on request").is_none());
        c.fleet_key_previous = Some(Secret::new(KEY));
        assert!(c.fleet_keys().is_err(), "a previous key alone");
        c.fleet_key = Some(Secret::new("short"));
        assert!(c.fleet_keys().is_err(), "a short key");
        c.fleet_key = Some(Secret::new(KEY));
        assert!(c.fleet_keys().expect("keyed").is_some());
        let shown = format!("{c:?}");
        assert!(!shown.contains(KEY) && !c.to_toml().expect("toml").contains(KEY));
    }

    #[test]
    fn example_configs_in_the_repo_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = 0;
        for dir in ["config", "tracker"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                // The tracker's examples; config/ also holds the autoscaler's.
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                if name.ends_with(".toml") && name.starts_with("tracker") {
                    let text = std::fs::read_to_string(&path).expect("read");
                    Config::from_toml(&text)
                        .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                    found += 1;
                }
            }
        }
        assert!(found > 0, "no example config found under config/");
    }
}
