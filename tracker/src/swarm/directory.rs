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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::liveness::{Heartbeat, Liveness, live_key};
use super::{BySwarm, SwarmIndex};
use crate::backplane::{Backplane, instance_key};
use crate::config::RedisConfig;
use crate::fleet_key::{FleetKeys, TAG_LEN};
use crate::metrics::{DirectorySkip, Shard};
use swarmtrack_protocol::{InstanceId, PeerId};

/// Most queued membership writes.
const WRITE_QUEUE: usize = 65_536;
/// Most queued writes sent in one pipeline.
const WRITES_MAX: usize = 4_096;
/// Swarm keys refreshed in one pipeline.
const KEYS_PER_PIPELINE: usize = 128;
/// Most members added by one script call (its arguments stay far below Lua's stack limit).
const MEMBERS_PER_CALL: usize = 1_000;
/// Most members sampled per swarm, and so kept per swarm for re-joins.
const SAMPLE_MAX: usize = 128;

/// Adds the members `ARGV[5..]` with score `ARGV[1]`, removes members whose score is below
/// `ARGV[3]` (expired), keeps the key `ARGV[2]` ms, and returns up to `ARGV[4]` members at
/// random. One command per key, whatever the number of members.
const REGISTER: &str = r"
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

enum Op {
    Add(Arc<str>, PeerId),
    Remove(Arc<str>, PeerId),
}

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
    samples: Arc<BySwarm<HashMap<Arc<str>, Vec<PeerId>>>>,
    /// Set when the drain starts: members are withdrawn and no new one is registered.
    withdrawn: Arc<AtomicBool>,
    metrics: Arc<Shard>,
}

/// The Unix time, ms.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn key(prefix: &str, swarm: &str) -> String {
    format!("{prefix}:swarm:{{{swarm}}}")
}

/// A tag as text (22 characters of base64url).
pub(super) fn encode_tag(tag: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(tag)
}

/// A tag from its text, if it is one.
pub(super) fn decode_tag(text: &str) -> Option<[u8; TAG_LEN]> {
    let mut tag = [0u8; TAG_LEN];
    match URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut tag) {
        Ok(TAG_LEN) => Some(tag),
        _ => None,
    }
}

/// The signed member of `peer` in the set `key` (its bare id without keys:
/// `redis.allow_unsigned`).
fn member(keys: Option<&FleetKeys>, key: &str, peer: PeerId) -> String {
    let id = peer.to_string();
    match keys {
        Some(keys) => {
            let tag = keys.sign(&[b"member", key.as_bytes(), id.as_bytes()]);
            format!("{id}.{}", encode_tag(&tag))
        }
        None => id,
    }
}

/// What a member read from the set `key` is (without keys, any peer id is taken).
fn verify_member(keys: Option<&FleetKeys>, key: &str, text: &str) -> Result<PeerId, DirectorySkip> {
    let Some(keys) = keys else {
        let id = text.split_once('.').map_or(text, |(id, _)| id);
        return PeerId::parse(id).ok_or(DirectorySkip::Unsigned);
    };
    let (id, tag) = text.split_once('.').ok_or(DirectorySkip::Unsigned)?;
    let peer = PeerId::parse(id).ok_or(DirectorySkip::Unsigned)?;
    let tag = decode_tag(tag).ok_or(DirectorySkip::BadSignature)?;
    if keys.verify(&[b"member", key.as_bytes(), id.as_bytes()], &tag) {
        Ok(peer)
    } else {
        Err(DirectorySkip::BadSignature)
    }
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
            return self.cached(swarm, peer, want);
        }
        let key = key(&self.prefix, swarm);
        let mut pipe = redis::pipe();
        // Sampled even when no peer is wanted now: the swarm's re-joins draw from it.
        register(
            &mut pipe,
            &key,
            now_ms(),
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
                // An instance never seen may have started since the last read of heartbeats.
                if want > 0 && verified.iter().any(|p| self.live.is_unknown(p.instance())) {
                    self.live
                        .read_now(
                            &self.backplane,
                            self.keys.as_ref(),
                            &live_key(&self.prefix),
                            &self.metrics,
                        )
                        .await;
                }
                self.samples.lock(swarm).insert(Arc::clone(swarm), verified);
            }
            Err(e) => {
                debug!(error = %e, "registering a member failed; the refresh will retry");
                self.metrics.redis_error();
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
        let now = now_ms();
        let mut dead = 0;
        let candidates: Vec<PeerId> = {
            let samples = self.samples.lock(swarm);
            let Some(sample) = samples.get(swarm) else {
                return Vec::new();
            };
            sample
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
            self.metrics.membership_write_dropped();
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
            self.metrics.membership_write_dropped();
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Adds one call of [`REGISTER`] to `pipe`: `members` of the set `key` count until
/// `now + ttl_ms`; returns up to `sample` members.
fn register(
    pipe: &mut redis::Pipeline,
    key: &str,
    now: u64,
    ttl_ms: u64,
    sample: usize,
    members: &[String],
) {
    let cmd = pipe
        .cmd("EVAL")
        .arg(REGISTER)
        .arg(1)
        .arg(key)
        .arg(now.saturating_add(ttl_ms))
        .arg(ttl_ms.saturating_mul(2))
        .arg(now)
        .arg(sample);
    for m in members {
        cmd.arg(m);
    }
}

/// The members of another instance in a sample read from `key`, verified; the rest skipped
/// and counted.
fn verify_sample(
    keys: Option<&FleetKeys>,
    key: &str,
    instance: InstanceId,
    sampled: &[String],
    metrics: &Shard,
) -> Vec<PeerId> {
    let mut out: Vec<PeerId> = Vec::with_capacity(sampled.len());
    for text in sampled {
        match verify_member(keys, key, text) {
            // This instance's members come from the local index, fresher and first. The same
            // peer may be there twice during a key rotation (signed under each key).
            Ok(peer) if peer.instance() == instance || out.contains(&peer) => {}
            Ok(peer) => out.push(peer),
            Err(reason) => metrics.directory_skipped(reason, 1),
        }
    }
    out
}

struct Writer {
    backplane: Backplane,
    /// The instance id's key and this process's token in it.
    claim: (String, String),
    prefix: String,
    ttl: Duration,
    instance: InstanceId,
    refresh: Duration,
    keys: Option<FleetKeys>,
    index: Arc<SwarmIndex>,
    samples: Arc<BySwarm<HashMap<Arc<str>, Vec<PeerId>>>>,
    withdrawn: Arc<AtomicBool>,
    metrics: Arc<Shard>,
}

impl Writer {
    async fn run(
        self,
        mut rx: mpsc::Receiver<Op>,
        draining: CancellationToken,
        cancel: CancellationToken,
    ) {
        let mut epoch = self.backplane.epoch();
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = draining.cancelled(), if !self.withdrawn.load(Ordering::Acquire) => {
                    self.withdraw().await;
                }
                op = rx.recv() => {
                    let Some(op) = op else { break };
                    let mut ops = vec![op];
                    while ops.len() < WRITES_MAX {
                        match rx.try_recv() {
                            Ok(op) => ops.push(op),
                            Err(_) => break,
                        }
                    }
                    self.write(ops).await;
                }
                _ = tick.tick() => self.refresh_all().await,
                // Reconnected: Redis may have lost everything; register every member again.
                changed = epoch.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.refresh_all().await;
                }
            }
        }
        // Exiting without a drain (it always comes first in `run`, but be sure).
        if !self.withdrawn.load(Ordering::Acquire) {
            self.withdraw().await;
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Sends queued writes: per swarm key, one call adding its new members and one ZREM of
    /// those that left; the last write of a member wins.
    async fn write(&self, ops: Vec<Op>) {
        if !self.backplane.is_up() {
            // The refresh after the reconnect registers the members there are then.
            self.metrics.redis_error();
            return;
        }
        let mut by_key: HashMap<Arc<str>, HashMap<PeerId, bool>> = HashMap::new();
        for op in ops {
            let (swarm, peer, add) = match op {
                Op::Add(s, p) => (s, p, true),
                Op::Remove(s, p) => (s, p, false),
            };
            by_key.entry(swarm).or_default().insert(peer, add);
        }
        let withdrawn = self.withdrawn.load(Ordering::Acquire);
        let now = now_ms();
        let mut pipe = redis::pipe();
        // The swarms whose registration also samples (none kept yet), in answer order.
        let mut sampling: Vec<&Arc<str>> = Vec::new();
        for (swarm, members) in &by_key {
            let key = key(&self.prefix, swarm);
            let (adds, removes): (Vec<_>, Vec<_>) = members.iter().partition(|(_, add)| **add);
            if !adds.is_empty() && !withdrawn {
                let adds: Vec<String> = adds
                    .iter()
                    .map(|(p, _)| member(self.keys.as_ref(), &key, **p))
                    .collect();
                let unsampled = !self.samples.lock(swarm).contains_key(&**swarm);
                for (i, chunk) in adds.chunks(MEMBERS_PER_CALL).enumerate() {
                    if unsampled && i == 0 {
                        register(&mut pipe, &key, now, self.ttl_ms(), SAMPLE_MAX, chunk);
                        sampling.push(swarm);
                    } else {
                        register(&mut pipe, &key, now, self.ttl_ms(), 0, chunk);
                        pipe.ignore();
                    }
                }
            }
            if !removes.is_empty() {
                let zrem = pipe.cmd("ZREM").arg(&key);
                for (p, _) in removes {
                    zrem.arg(member(self.keys.as_ref(), &key, *p));
                }
                pipe.ignore();
            }
        }
        match self.backplane.query::<Vec<Vec<String>>>(&pipe).await {
            Ok(answers) => {
                for (swarm, sampled) in sampling.into_iter().zip(answers) {
                    self.keep_sample(swarm, &sampled);
                }
            }
            Err(e) => {
                debug!(error = %e, "membership writes failed; the refresh will retry");
                self.metrics.redis_error();
            }
        }
    }

    /// Keeps a sample of `swarm` read from Redis, verified, if the swarm still has local
    /// members.
    fn keep_sample(&self, swarm: &Arc<str>, sampled: &[String]) {
        let key = key(&self.prefix, swarm);
        let verified = verify_sample(
            self.keys.as_ref(),
            &key,
            self.instance,
            sampled,
            &self.metrics,
        );
        let mut samples = self.samples.lock(swarm);
        if let Some(s) = samples.get_mut(&**swarm) {
            *s = verified;
        } else if self.index.id_of(swarm).is_some() {
            samples.insert(Arc::clone(swarm), verified);
        }
    }

    /// The local members, grouped by swarm.
    fn members_by_swarm(&self) -> Vec<(Arc<str>, Vec<PeerId>)> {
        let mut by_swarm: HashMap<Arc<str>, Vec<PeerId>> = HashMap::new();
        for (swarm, peer) in self.index.memberships() {
            by_swarm.entry(swarm).or_default().push(peer);
        }
        by_swarm.into_iter().collect()
    }

    /// Re-registers every local member: one script call per swarm key, which also renews the
    /// swarm's sample for re-joins.
    async fn refresh_all(&self) {
        if !self.backplane.is_up() {
            return;
        }
        self.refresh_claim().await;
        if self.withdrawn.load(Ordering::Acquire) {
            return;
        }
        let swarms = self.members_by_swarm();
        for chunk in swarms.chunks(KEYS_PER_PIPELINE) {
            let now = now_ms();
            let mut pipe = redis::pipe();
            // Which swarm each call's answer belongs to; only the last call of a swarm samples.
            let mut calls: Vec<Option<&Arc<str>>> = Vec::new();
            for (swarm, peers) in chunk {
                let key = key(&self.prefix, swarm);
                let members: Vec<String> = peers
                    .iter()
                    .map(|p| member(self.keys.as_ref(), &key, *p))
                    .collect();
                let groups: Vec<&[String]> = members.chunks(MEMBERS_PER_CALL).collect();
                for (i, group) in groups.iter().enumerate() {
                    let last = i + 1 == groups.len();
                    let sample = if last { SAMPLE_MAX } else { 0 };
                    register(&mut pipe, &key, now, self.ttl_ms(), sample, group);
                    calls.push(last.then_some(swarm));
                }
            }
            match self.backplane.query::<Vec<Vec<String>>>(&pipe).await {
                Ok(answers) => {
                    for (swarm, sampled) in calls.iter().zip(answers) {
                        if let Some(swarm) = swarm {
                            self.keep_sample(swarm, &sampled);
                        }
                    }
                }
                Err(e) => {
                    debug!(error = %e, "refreshing members failed");
                    self.metrics.redis_error();
                }
            }
        }
    }

    /// Removes every local member from Redis and stops registering: the drain has started, or
    /// the instance is exiting. Other instances stop pairing with its viewers at once.
    async fn withdraw(&self) {
        self.withdrawn.store(true, Ordering::Release);
        if !self.backplane.is_up() {
            return;
        }
        let swarms = self.members_by_swarm();
        let mut removed = 0usize;
        for chunk in swarms.chunks(KEYS_PER_PIPELINE) {
            let mut pipe = redis::pipe();
            for (swarm, peers) in chunk {
                let key = key(&self.prefix, swarm);
                let zrem = pipe.cmd("ZREM").arg(&key);
                for p in peers {
                    zrem.arg(member(self.keys.as_ref(), &key, *p));
                }
                pipe.ignore();
                removed += peers.len();
            }
            if let Err(e) = self.backplane.query::<()>(&pipe).await {
                debug!(error = %e, "withdrawing members failed; they lapse with the heartbeat");
                self.metrics.redis_error();
            }
        }
        info!(
            members = removed,
            "members withdrawn from the fleet's directory"
        );
    }

    /// Keeps the instance id claimed: re-claims it if Redis lost it, extends it if it is ours,
    /// and says so loudly if another tracker holds it (signals would be misrouted).
    async fn refresh_claim(&self) {
        let (key, token) = &self.claim;
        let ttl_ms = self.ttl_ms() * 3;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        pipe.cmd("GET").arg(key);
        match self.backplane.query::<(Option<String>,)>(&pipe).await {
            Ok((Some(holder),)) if holder == *token => {
                let mut extend = redis::pipe();
                extend.cmd("PEXPIRE").arg(key).arg(ttl_ms).ignore();
                let _ = self.backplane.query::<()>(&extend).await;
            }
            Ok(_) => {
                self.metrics.instance_id_conflict();
                tracing::error!(%key, "another tracker holds this instance id: restart this one");
            }
            Err(_) => self.metrics.redis_error(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn members_verify_in_their_own_set_only() {
        let keys = FleetKeys::new(KEY, None).unwrap();
        let peer = PeerId::new(InstanceId(7), 3, 99);
        let m = member(Some(&keys), "st:swarm:{v}", peer);
        assert_eq!(m.len(), 22 + 1 + 22);
        assert_eq!(verify_member(Some(&keys), "st:swarm:{v}", &m), Ok(peer));
        assert_eq!(
            verify_member(Some(&keys), "st:swarm:{w}", &m),
            Err(DirectorySkip::BadSignature),
            "moved to another swarm"
        );
        assert_eq!(
            verify_member(Some(&keys), "st:swarm:{v}", &peer.to_string()),
            Err(DirectorySkip::Unsigned)
        );
        let other = PeerId::new(InstanceId(7), 4, 99).to_string();
        let forged = format!("{other}.{}", &m[23..]);
        assert_eq!(
            verify_member(Some(&keys), "st:swarm:{v}", &forged),
            Err(DirectorySkip::BadSignature)
        );
        assert_eq!(
            verify_member(Some(&keys), "st:swarm:{v}", &format!("{peer}.short")),
            Err(DirectorySkip::BadSignature)
        );
        let stranger = FleetKeys::new("fedcba9876543210fedcba9876543210", None).unwrap();
        assert_eq!(
            verify_member(Some(&stranger), "st:swarm:{v}", &m),
            Err(DirectorySkip::BadSignature)
        );
    }

    #[test]
    fn a_sample_keeps_verified_members_of_other_instances_once() {
        let keys = FleetKeys::new(KEY, None).unwrap();
        let metrics = crate::metrics::Metrics::new();
        let key = "st:swarm:{v}";
        let mine = PeerId::new(InstanceId(1), 1, 1);
        let theirs = PeerId::new(InstanceId(2), 1, 1);
        let sampled = vec![
            member(Some(&keys), key, mine),
            member(Some(&keys), key, theirs),
            member(Some(&keys), key, theirs),
            theirs.to_string(),
            "junk".to_string(),
            format!(
                "{}.AAAAAAAAAAAAAAAAAAAAAA",
                PeerId::new(InstanceId(3), 1, 1)
            ),
        ];
        let got = verify_sample(Some(&keys), key, InstanceId(1), &sampled, metrics.shared());
        assert_eq!(got, vec![theirs]);
        let text = metrics.render();
        assert!(text.contains(r#"tracker_directory_skipped_total{reason="unsigned"} 2"#));
        assert!(text.contains(r#"tracker_directory_skipped_total{reason="bad_signature"} 1"#));
    }
}
