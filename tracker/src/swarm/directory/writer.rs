//! The directory's writer task: queued membership writes grouped per swarm key, the periodic
//! refresh (one script call per swarm key), the instance id's claim, and the withdrawal of
//! every member when the drain starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::member::{member, verify_sample};
use super::{
    KEYS_PER_PIPELINE, MEMBERS_PER_CALL, Op, REGISTER, SAMPLE_MAX, Sample, Samples, WRITES_MAX, key,
};
use crate::backplane::Backplane;
use crate::batch_seal::unix_ms;
use crate::fleet_key::FleetKeys;
use crate::metrics::{MembershipDrop, Shard};
use crate::swarm::SwarmIndex;
use swarmtrack_protocol::{InstanceId, PeerId};

/// Adds one call of [`REGISTER`] to `pipe`: `members` of the set `key` count until
/// `now + ttl_ms`; returns up to `sample` members.
pub(super) fn register(
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

pub(super) struct Writer {
    pub(super) backplane: Backplane,
    /// The instance id's key and this process's token in it.
    pub(super) claim: (String, String),
    pub(super) prefix: String,
    pub(super) ttl: Duration,
    pub(super) instance: InstanceId,
    pub(super) refresh: Duration,
    pub(super) keys: Option<FleetKeys>,
    pub(super) index: Arc<SwarmIndex>,
    pub(super) samples: Arc<Samples>,
    pub(super) withdrawn: Arc<AtomicBool>,
    pub(super) metrics: Arc<Shard>,
}

impl Writer {
    pub(super) async fn run(
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
            self.metrics
                .membership_dropped(MembershipDrop::Failed, ops.len() as u64);
            return;
        }
        let mut by_key: HashMap<Arc<str>, HashMap<PeerId, bool>> = HashMap::new();
        let mut resample: Vec<Arc<str>> = Vec::new();
        for op in ops {
            let (swarm, peer, add) = match op {
                Op::Add(s, p) => (s, p, true),
                Op::Remove(s, p) => (s, p, false),
                Op::Resample(s) => {
                    resample.push(s);
                    continue;
                }
            };
            by_key.entry(swarm).or_default().insert(peer, add);
        }
        // A swarm to sample again: one call of the script with no member to add (it also
        // forgets the expired), unless this round registers members there and samples anyway.
        for swarm in resample {
            by_key.entry(swarm).or_default();
        }
        let withdrawn = self.withdrawn.load(Ordering::Acquire);
        let now = unix_ms();
        // One pipeline per swarm key (a Redis Cluster refuses a pipeline across slots); the
        // first answer of a swarm with no sample kept yet is its sample.
        let mut calls: Vec<(Arc<str>, bool, redis::Pipeline, u64)> = Vec::new();
        for (swarm, members) in by_key {
            let key = key(&self.prefix, &swarm);
            let writes = members.len() as u64;
            let (adds, removes): (Vec<_>, Vec<_>) = members.iter().partition(|(_, add)| **add);
            let mut pipe = redis::pipe();
            let mut sampling = false;
            if !adds.is_empty() && !withdrawn {
                let adds: Vec<String> = adds
                    .iter()
                    .map(|(p, _)| member(self.keys.as_ref(), &key, **p))
                    .collect();
                sampling = self
                    .samples
                    .lock(&swarm)
                    .get(&*swarm)
                    .is_none_or(|s| s.renewing);
                for (i, chunk) in adds.chunks(MEMBERS_PER_CALL).enumerate() {
                    let sample = if sampling && i == 0 { SAMPLE_MAX } else { 0 };
                    register(&mut pipe, &key, now, self.ttl_ms(), sample, chunk);
                }
            } else if members.is_empty() && !withdrawn {
                // Only a renewal of the sample.
                sampling = true;
                register(&mut pipe, &key, now, self.ttl_ms(), SAMPLE_MAX, &[]);
            }
            if !removes.is_empty() {
                let zrem = pipe.cmd("ZREM").arg(&key);
                for (p, _) in removes {
                    zrem.arg(member(self.keys.as_ref(), &key, *p));
                }
                pipe.ignore();
            }
            calls.push((swarm, sampling, pipe, writes));
        }
        for chunk in calls.chunks(KEYS_PER_PIPELINE) {
            let answers = join_all(
                chunk
                    .iter()
                    .map(|(_, _, pipe, _)| self.backplane.query::<Vec<Vec<String>>>(pipe)),
            )
            .await;
            for ((swarm, sampling, _, writes), answer) in chunk.iter().zip(answers) {
                match answer {
                    Ok(answers) => {
                        if let (true, Some(sampled)) = (*sampling, answers.first()) {
                            self.keep_sample(swarm, sampled);
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "membership writes failed; the refresh will retry");
                        self.metrics.redis_error();
                        self.metrics
                            .membership_dropped(MembershipDrop::Failed, *writes);
                    }
                }
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
            *s = Sample::new(verified);
        } else if self.index.id_of(swarm).is_some() {
            samples.insert(Arc::clone(swarm), Sample::new(verified));
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
            let now = unix_ms();
            // One pipeline per swarm key (a Redis Cluster refuses one across slots), run
            // together; only the last call of a swarm samples.
            let pipes: Vec<redis::Pipeline> = chunk
                .iter()
                .map(|(swarm, peers)| {
                    let key = key(&self.prefix, swarm);
                    let members: Vec<String> = peers
                        .iter()
                        .map(|p| member(self.keys.as_ref(), &key, *p))
                        .collect();
                    let mut pipe = redis::pipe();
                    let groups: Vec<&[String]> = members.chunks(MEMBERS_PER_CALL).collect();
                    for (i, group) in groups.iter().enumerate() {
                        let sample = if i + 1 == groups.len() { SAMPLE_MAX } else { 0 };
                        register(&mut pipe, &key, now, self.ttl_ms(), sample, group);
                    }
                    pipe
                })
                .collect();
            let answers = join_all(
                pipes
                    .iter()
                    .map(|p| self.backplane.query::<Vec<Vec<String>>>(p)),
            )
            .await;
            for ((swarm, _), answer) in chunk.iter().zip(answers) {
                match answer {
                    Ok(answers) => {
                        if let Some(sampled) = answers.last() {
                            self.keep_sample(swarm, sampled);
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "refreshing members failed");
                        self.metrics.redis_error();
                    }
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
            // One ZREM per swarm key, run together.
            let pipes: Vec<redis::Pipeline> = chunk
                .iter()
                .map(|(swarm, peers)| {
                    let key = key(&self.prefix, swarm);
                    let mut pipe = redis::pipe();
                    let zrem = pipe.cmd("ZREM").arg(&key);
                    for p in peers {
                        zrem.arg(member(self.keys.as_ref(), &key, *p));
                    }
                    pipe.ignore();
                    pipe
                })
                .collect();
            let answers = join_all(pipes.iter().map(|p| self.backplane.query::<()>(p))).await;
            for ((_, peers), answer) in chunk.iter().zip(answers) {
                match answer {
                    Ok(()) => removed += peers.len(),
                    Err(e) => {
                        debug!(error = %e, "withdrawing members failed; they lapse with the heartbeat");
                        self.metrics.redis_error();
                        self.metrics
                            .membership_dropped(MembershipDrop::Failed, peers.len() as u64);
                    }
                }
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
