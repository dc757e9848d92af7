//! Global swarm membership in Redis, so a viewer on one instance is paired with viewers on
//! others.
//!
//! Layout: one sorted set per swarm, `{prefix}:swarm:{<swarm id>}`, member
//! `<peer id>.<tag>`, score the time (Unix ms) until which the member counts. The tag is the
//! fleet key's HMAC over the set's key and the peer id ([`FleetKeys`]): without the key nobody
//! can add a member that a tracker hands out, and a member can't be moved to another swarm.
//! Members drawn from Redis that are unsigned or badly signed are skipped and counted
//! (`tracker_directory_skipped_total`), so are members of instances that are not live
//! ([`Liveness`]): a killed instance's members are never handed out once its heartbeat lapses,
//! long before they expire. The swarm id is the key's hash tag, so on a Redis Cluster a swarm
//! lives in one slot.
//!
//! Every write to a swarm's set is ONE command per key: a Lua script that adds any number of
//! members, forgets the expired, keeps the key alive and returns a random sample. What Redis
//! costs:
//! - a viewer's first join of a swarm that needs remote peers (or a WebTorrent announce, which
//!   must be findable fleet-wide once answered): one round trip, registering and sampling;
//! - a first join whose peers are all local: its registration is queued;
//! - a re-join of a swarm already joined: nothing. Its remote peers come from this instance's
//!   last sample of that swarm, which every join round trip and every refresh renews;
//! - leaves: queued; the writer task sends queued writes grouped per swarm key;
//! - the refresh, every `refresh_interval_secs`: one script call per swarm key with local
//!   members (not a command per member), which also renews the swarm's sample.
//!
//! An instance that drains withdraws its members at once and registers no new ones, so no
//! other instance pairs with viewers it is about to let go. Instances' clocks must agree to
//! well within the TTL (NTP).

mod member;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::liveness::{Heartbeat, Liveness, live_key};
use super::{BySwarm, SwarmIndex};
use crate::backplane::{Backplane, instance_key};
use crate::batch_seal::unix_ms;
use crate::config::RedisConfig;
use crate::fleet_key::FleetKeys;
use crate::metrics::{DirectorySkip, MembershipDrop, Shard};
use member::{member, verify_sample};
use swarmtrack_protocol::{InstanceId, PeerId};
use writer::{Writer, register};

/// Most queued membership writes.
const WRITE_QUEUE: usize = 65_536;
/// Most queued writes sent in one pipeline.
pub(super) const WRITES_MAX: usize = 4_096;
/// Swarm keys refreshed in one pipeline.
pub(super) const KEYS_PER_PIPELINE: usize = 128;
/// Most members added by one script call (its arguments stay far below Lua's stack limit).
pub(super) const MEMBERS_PER_CALL: usize = 1_000;
/// Longest a registration waits for this instance's first heartbeat after it subscribed.
const FIRST_HEARTBEAT_WAIT: Duration = Duration::from_millis(250);
/// Most members sampled per swarm, and so kept per swarm for re-joins.
pub(super) const SAMPLE_MAX: usize = 128;

/// Adds the members `ARGV[5..]` with score `ARGV[1]`, removes members whose score is below
/// `ARGV[3]` (expired), keeps the key `ARGV[2]` ms, and returns up to `ARGV[4]` members at
/// random. One command per key, whatever the number of members.
pub(super) const REGISTER: &str = r"
local n = #ARGV
local i = 5
while i <= n do
  local last = math.min(i + 499, n)
  local args = {}
  for j = i, last do
    args[#args + 1] = ARGV[1]
    args[#args + 1] = ARGV[j]
  end
  redis.call('ZADD', KEYS[1], unpack(args))
  i = last + 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local want = tonumber(ARGV[4])
if want > 0 then
  return redis.call('ZRANDMEMBER', KEYS[1], want)
end
return {}
";

/// A re-join draws from a sample this old at most; past it, the writer samples the swarm
/// again in the background (one command), so a swarm's re-joins cost Redis at most one
/// command per this interval, however many there are, and see newcomers on other instances
/// within it.
pub(super) const SAMPLE_MAX_AGE: Duration = Duration::from_secs(1);

/// A queued membership write, or a sample to renew.
pub(super) enum Op {
    Add(Arc<str>, PeerId),
    Remove(Arc<str>, PeerId),
    /// The swarm's sample is older than [`SAMPLE_MAX_AGE`] and a re-join drew from it.
    Resample(Arc<str>),
}

/// The last verified sample of a swarm's remote members.
pub(super) struct Sample {
    pub(super) peers: Vec<PeerId>,
    /// When it was read from Redis.
    pub(super) at: Instant,
    /// A renewal is queued.
    pub(super) renewing: bool,
}

impl Sample {
    pub(super) fn new(peers: Vec<PeerId>) -> Self {
        Self {
            peers,
            at: Instant::now(),
            renewing: false,
        }
    }
}

/// Per swarm with local members: the last verified sample of its remote members.
pub(super) type Samples = BySwarm<HashMap<Arc<str>, Sample>>;

/// The Redis side of swarm membership.
pub struct Directory {
    backplane: Backplane,
    prefix: String,
    ttl: Duration,
    instance: InstanceId,
    keys: Option<FleetKeys>,
    live: Arc<Liveness>,
    ops: mpsc::Sender<Op>,
    /// Per swarm with local members: the last verified sample of its remote members.
    samples: Arc<Samples>,
    /// Set when the drain starts: members are withdrawn and no new one is registered.
    withdrawn: Arc<AtomicBool>,
    metrics: Arc<Shard>,
}

/// The sorted set of swarm `swarm`.
pub(super) fn key(prefix: &str, swarm: &str) -> String {
    format!("{prefix}:swarm:{{{swarm}}}")
}

/// What [`Directory::start`] needs besides the Redis links.
pub struct DirectoryParts {
    /// The live instances, kept by the heartbeat task.
    pub live: Arc<Liveness>,
    /// This instance's id and the token its claim on it holds.
    pub claim: (InstanceId, String),
    /// Signs and verifies members and heartbeats; `None` only with `redis.allow_unsigned`.
    pub keys: Option<FleetKeys>,
    /// The local members, refreshed in Redis.
    pub index: Arc<SwarmIndex>,
    /// Cancelled when the drain starts: members are withdrawn then.
    pub draining: CancellationToken,
    /// Where skips and failures are counted.
    pub metrics: Arc<Shard>,
}

impl Directory {
    /// Starts the writer (queued writes, the periodic refresh of `index`'s members and of the
    /// instance id's claim, the withdrawal at the drain) and the heartbeat; both stop at
    /// `cancel`, the heartbeat removing this instance's.
    pub fn start(
        tasks: &TaskTracker,
        cancel: CancellationToken,
        backplane: Backplane,
        config: &RedisConfig,
        parts: DirectoryParts,
    ) -> Self {
        let (instance, token) = parts.claim;
        let (ops, rx) = mpsc::channel(WRITE_QUEUE);
        let live = parts.live;
        let directory = Self {
            backplane: backplane.clone(),
            prefix: config.key_prefix.clone(),
            ttl: Duration::from_secs(config.membership_ttl_secs),
            instance,
            keys: parts.keys.clone(),
            live: Arc::clone(&live),
            ops,
            samples: Arc::new(BySwarm::new(64)),
            withdrawn: Arc::new(AtomicBool::new(false)),
            metrics: Arc::clone(&parts.metrics),
        };
        let writer = Writer {
            backplane: backplane.clone(),
            claim: (instance_key(&config.key_prefix, instance), token),
            prefix: config.key_prefix.clone(),
            ttl: directory.ttl,
            instance,
            refresh: Duration::from_secs(config.refresh_interval_secs),
            keys: parts.keys.clone(),
            index: parts.index,
            samples: Arc::clone(&directory.samples),
            withdrawn: Arc::clone(&directory.withdrawn),
            metrics: Arc::clone(&parts.metrics),
        };
        tasks.spawn(writer.run(rx, parts.draining, cancel.clone()));
        let heartbeat = Heartbeat {
            live,
            backplane,
            keys: parts.keys,
            key: live_key(&config.key_prefix),
            interval: Duration::from_millis(config.liveness_interval_ms),
            metrics: parts.metrics,
        };
        tasks.spawn(heartbeat.run(cancel));
        directory
    }

    /// The live instances, for the relay's check before it queues a signal.
    pub fn liveness(&self) -> Arc<Liveness> {
        Arc::clone(&self.live)
    }

    /// Registers the new member `peer` of `swarm` and samples up to `want` live members of
    /// other instances, in one round trip (with `want` 0 it only registers, and returns once
    /// Redis has the member). The sample is kept for re-joins. Redis down or slow: the last
    /// sample (counted), never an error.
    pub async fn join(&self, swarm: &Arc<str>, peer: PeerId, want: usize) -> Vec<PeerId> {
        if self.withdrawn.load(Ordering::Acquire) {
            return self.cached(swarm, peer, want);
        }
        if !self.backplane.is_up() {
            self.metrics.redis_error();
            // Registered again by the refresh after the reconnect.
            self.metrics.membership_dropped(MembershipDrop::Failed, 1);
            return self.cached(swarm, peer, want);
        }
        // Just subscribed: its heartbeat comes within a few ms; registered before it, the
        // member would be skipped by others as one of an unknown instance.
        if self.backplane.is_subscribed() {
            self.live.advertised_within(FIRST_HEARTBEAT_WAIT).await;
        }
        let key = key(&self.prefix, swarm);
        let mut pipe = redis::pipe();
        // Sampled even when no peer is wanted now: the swarm's re-joins draw from it.
        register(
            &mut pipe,
            &key,
            unix_ms(),
            self.ttl_ms(),
            SAMPLE_MAX,
            &[member(self.keys.as_ref(), &key, peer)],
        );
        match self.backplane.query::<(Vec<String>,)>(&pipe).await {
            Ok((sampled,)) => {
                let verified = verify_sample(
                    self.keys.as_ref(),
                    &key,
                    self.instance,
                    &sampled,
                    &self.metrics,
                );
                // An instance not live as last read may have started (or heartbeated late)
                // since: read again before drawing.
                if want > 0 && verified.iter().any(|p| !self.live.is_live(p.instance())) {
                    self.live
                        .read_now(
                            &self.backplane,
                            self.keys.as_ref(),
                            &live_key(&self.prefix),
                            &self.metrics,
                        )
                        .await;
                }
                self.samples
                    .lock(swarm)
                    .insert(Arc::clone(swarm), Sample::new(verified));
            }
            Err(e) => {
                debug!(error = %e, "registering a member failed; the refresh will retry");
                self.metrics.redis_error();
                self.metrics.membership_dropped(MembershipDrop::Failed, 1);
            }
        }
        self.cached(swarm, peer, want)
    }

    /// Up to `want` live members of other instances from the last sample of `swarm`, at
    /// random, without a Redis command.
    pub fn cached(&self, swarm: &str, peer: PeerId, want: usize) -> Vec<PeerId> {
        if want == 0 {
            return Vec::new();
        }
        let now = unix_ms();
        let mut dead = 0;
        let candidates: Vec<PeerId> = {
            let mut samples = self.samples.lock(swarm);
            let Some((name, sample)) = samples.get_key_value(swarm) else {
                return Vec::new();
            };
            if !sample.renewing && sample.at.elapsed() > SAMPLE_MAX_AGE {
                // Renewed in the background: this re-join waits for no Redis command. A full
                // queue only delays the renewal to the next re-join or refresh.
                let name = Arc::clone(name);
                if self.ops.try_send(Op::Resample(Arc::clone(&name))).is_ok()
                    && let Some(s) = samples.get_mut(&name)
                {
                    s.renewing = true;
                }
            }
            let Some(sample) = samples.get(swarm) else {
                return Vec::new();
            };
            sample
                .peers
                .iter()
                .filter(|p| **p != peer)
                .filter(|p| {
                    let live = self.live.is_live_at(p.instance(), now);
                    dead += usize::from(!live);
                    live
                })
                .copied()
                .collect()
        };
        if dead > 0 {
            self.metrics
                .directory_skipped(DirectorySkip::DeadInstance, dead as u64);
        }
        let mut rng = rand::rng();
        rand::seq::index::sample(&mut rng, candidates.len(), want.min(candidates.len()))
            .into_iter()
            .map(|i| candidates[i])
            .collect()
    }

    /// Registers `peer` in `swarm` without waiting (not while withdrawn).
    pub fn add(&self, swarm: Arc<str>, peer: PeerId) {
        if !self.withdrawn.load(Ordering::Acquire)
            && self.ops.try_send(Op::Add(swarm, peer)).is_err()
        {
            self.metrics
                .membership_dropped(MembershipDrop::QueueFull, 1);
        }
    }

    /// Removes `peer` from `swarm` without waiting; `gone`: it was the swarm's last local
    /// member, so its sample is forgotten.
    pub fn remove(&self, swarm: Arc<str>, peer: PeerId, gone: bool) {
        if gone {
            self.samples.lock(&swarm).remove(&swarm);
        }
        if self.withdrawn.load(Ordering::Acquire) {
            // Withdrawn already, with every member.
            return;
        }
        if self.ops.try_send(Op::Remove(swarm, peer)).is_err() {
            self.metrics
                .membership_dropped(MembershipDrop::QueueFull, 1);
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }
}
