//! Global swarm membership in Redis, so a viewer on one instance is paired with viewers on
//! others.
//!
//! Layout: one sorted set per swarm, `{prefix}:swarm:{<swarm id>}`, member = peer id, score =
//! the time (Unix ms) until which the member counts. The swarm id is the key's hash tag, so on
//! a Redis Cluster a swarm lives in one slot and a join stays ONE round trip: a pipeline of
//! ZADD (register), ZREMRANGEBYSCORE (forget the expired), PEXPIRE (forget abandoned swarms)
//! and ZRANDMEMBER (sample). Every instance refreshes its members' scores every
//! `refresh_interval_secs`, in pipelines; a dead instance stops refreshing, so its members
//! expire after `membership_ttl_secs` and are filtered out (and removed) from then on.
//! Instances' clocks must agree to well within the TTL (NTP).
//!
//! Leaves and registrations that don't need an answer are queued and written in pipelines by
//! one writer task; when the queue is full they are dropped, which only delays their effect
//! until the next refresh or expiry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::SwarmIndex;
use crate::backplane::{Backplane, instance_key};
use crate::config::RedisConfig;
use crate::metrics::{MembershipDrop, Shard};
use swarmtrack_protocol::{InstanceId, PeerId};

/// Most queued membership writes.
const WRITE_QUEUE: usize = 65_536;
/// Most commands in one pipeline.
const PIPELINE_MAX: usize = 512;
/// Most members asked of Redis in one join.
const SAMPLE_MAX: usize = 128;

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
    ops: mpsc::Sender<Op>,
    metrics: Arc<Shard>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn key(prefix: &str, swarm: &str) -> String {
    format!("{prefix}:swarm:{{{swarm}}}")
}

impl Directory {
    /// Starts the writer (queued writes, and the periodic refresh of `index`'s members and of
    /// the instance id's claim, held with `token`).
    pub fn start(
        tasks: &TaskTracker,
        cancel: CancellationToken,
        backplane: Backplane,
        config: &RedisConfig,
        (instance, token): (InstanceId, String),
        index: Arc<SwarmIndex>,
        metrics: Arc<Shard>,
    ) -> Self {
        let (ops, rx) = mpsc::channel(WRITE_QUEUE);
        let directory = Self {
            backplane: backplane.clone(),
            prefix: config.key_prefix.clone(),
            ttl: Duration::from_secs(config.membership_ttl_secs),
            instance,
            ops,
            metrics: Arc::clone(&metrics),
        };
        let writer = Writer {
            backplane,
            claim: (instance_key(&config.key_prefix, instance), token),
            prefix: config.key_prefix.clone(),
            ttl: directory.ttl,
            refresh: Duration::from_secs(config.refresh_interval_secs),
            index,
            metrics,
        };
        tasks.spawn(writer.run(rx, cancel));
        directory
    }

    /// Registers `peer` in `swarm` and samples up to `want` members of other instances, in one
    /// round trip (with `want` 0 it only registers, and returns once Redis has the member).
    /// Redis down or slow: no remote peers (counted), never an error.
    pub async fn join(&self, swarm: &str, peer: PeerId, want: usize) -> Vec<PeerId> {
        if !self.backplane.is_up() {
            self.metrics.redis_error();
            self.metrics.membership_dropped(MembershipDrop::Failed, 1);
            return Vec::new();
        }
        let now = now_ms();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let key = key(&self.prefix, swarm);
        let ask = (want * 2 + 8).min(SAMPLE_MAX);
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(&key)
            .arg(now + ttl_ms)
            .arg(peer.to_string())
            .ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now)
            .ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms * 2).ignore();
        if want == 0 {
            if let Err(e) = self.backplane.query::<()>(&pipe).await {
                debug!(error = %e, "registering a member failed; the refresh will retry");
                self.metrics.redis_error();
                self.metrics.membership_dropped(MembershipDrop::Failed, 1);
            }
            return Vec::new();
        }
        pipe.cmd("ZRANDMEMBER").arg(&key).arg(ask).arg("WITHSCORES");
        let sampled: Vec<(String, f64)> =
            match self.backplane.query::<(Vec<(String, f64)>,)>(&pipe).await {
                Ok((v,)) => v,
                Err(e) => {
                    debug!(error = %e, "remote pairing failed; local peers only");
                    self.metrics.redis_error();
                    self.metrics.membership_dropped(MembershipDrop::Failed, 1);
                    return Vec::new();
                }
            };
        sampled
            .into_iter()
            // A score in the past is a member whose instance stopped refreshing it.
            .filter(|(_, expires)| *expires > now as f64)
            .filter_map(|(id, _)| PeerId::parse(&id))
            // This instance's members come from the local index, fresher and first.
            .filter(|id| *id != peer && id.instance() != self.instance)
            .take(want)
            .collect()
    }

    /// Registers `peer` in `swarm` without waiting.
    pub fn add(&self, swarm: Arc<str>, peer: PeerId) {
        if self.ops.try_send(Op::Add(swarm, peer)).is_err() {
            self.metrics
                .membership_dropped(MembershipDrop::QueueFull, 1);
        }
    }

    /// Removes `peer` from `swarm` without waiting.
    pub fn remove(&self, swarm: Arc<str>, peer: PeerId) {
        if self.ops.try_send(Op::Remove(swarm, peer)).is_err() {
            self.metrics
                .membership_dropped(MembershipDrop::QueueFull, 1);
        }
    }
}

impl Writer {
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

struct Writer {
    backplane: Backplane,
    /// The instance id's key and this process's token in it.
    claim: (String, String),
    prefix: String,
    ttl: Duration,
    refresh: Duration,
    index: Arc<SwarmIndex>,
    metrics: Arc<Shard>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Op>, cancel: CancellationToken) {
        let mut epoch = self.backplane.epoch();
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                op = rx.recv() => {
                    let Some(op) = op else { return };
                    let mut ops = vec![op];
                    while ops.len() < PIPELINE_MAX {
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
                        return;
                    }
                    self.refresh_all().await;
                }
            }
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    async fn write(&self, ops: Vec<Op>) {
        if !self.backplane.is_up() {
            self.metrics
                .membership_dropped(MembershipDrop::Failed, ops.len() as u64);
            return;
        }
        let expires = now_ms() + self.ttl_ms();
        let mut pipe = redis::pipe();
        for op in &ops {
            match op {
                Op::Add(swarm, peer) => {
                    let key = key(&self.prefix, swarm);
                    pipe.cmd("ZADD")
                        .arg(&key)
                        .arg(expires)
                        .arg(peer.to_string())
                        .ignore();
                    pipe.cmd("PEXPIRE")
                        .arg(&key)
                        .arg(self.ttl_ms() * 2)
                        .ignore();
                }
                Op::Remove(swarm, peer) => {
                    pipe.cmd("ZREM")
                        .arg(key(&self.prefix, swarm))
                        .arg(peer.to_string())
                        .ignore();
                }
            }
        }
        if self.backplane.query::<()>(&pipe).await.is_err() {
            self.metrics.redis_error();
            self.metrics
                .membership_dropped(MembershipDrop::Failed, ops.len() as u64);
        }
    }

    async fn refresh_all(&self) {
        if !self.backplane.is_up() {
            return;
        }
        self.refresh_claim().await;
        let members = self.index.memberships();
        for chunk in members.chunks(PIPELINE_MAX / 2) {
            let ops = chunk
                .iter()
                .map(|(swarm, peer)| Op::Add(Arc::clone(swarm), *peer))
                .collect();
            self.write(ops).await;
        }
    }
}
