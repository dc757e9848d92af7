//! Which tracker instances are alive, so no peer of a dead one is handed out and no signal to a
//! dead or invented one is queued.
//!
//! Every instance signs a heartbeat into one sorted set, `{prefix}:live`, every
//! `liveness_interval_ms`: member `<instance>.<unix ms>.<tag>` (the tag is the fleet key's HMAC
//! over the instance and the time), score the same time. The same pipeline removes its previous
//! heartbeat, trims entries long dead and reads the recent ones, so each instance holds a local
//! map instance -> last signed heartbeat, and [`Liveness::is_live`] is a lookup with no Redis
//! command. An instance is live while its last heartbeat is younger than `liveness_ttl_ms`,
//! measured from the signed time, not from when this instance read it: a killed instance is
//! dead for everyone `liveness_ttl_ms` after its last heartbeat, whatever the readers' phase.
//! Heartbeats compare clocks of different hosts, so they must agree (NTP) to well within
//! `liveness_ttl_ms - liveness_interval_ms`; a time ahead of this host's clock counts as now.
//!
//! Forgery needs the fleet key: a heartbeat that doesn't verify is skipped and counted, and one
//! replayed later carries its old signed time, so it is dead on arrival whatever its score.
//! An instance stops heartbeating (and removes its heartbeat) while its relay subscription is
//! down, since it can't receive what others would send it, and when it exits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::backplane::Backplane;
use crate::batch_seal::unix_ms;
use crate::config::RedisConfig;
use crate::fleet_key::FleetKeys;
use crate::fleet_key::{decode_tag, encode_tag};
use crate::metrics::Shard;
use swarmtrack_protocol::InstanceId;

/// How many TTLs an instance stays reachable for signals after its last heartbeat (see
/// [`Liveness::is_reachable`]).
pub const REACHABLE_TTLS: u64 = 3;

/// Heartbeats read at most per refresh: a flood of junk in the set can't make a read unbounded.
const MAX_READ: usize = 4_096;
/// Heartbeats older than this many TTLs are trimmed from the set.
const TRIM_TTLS: u64 = 20;
/// Least time between two reads of the heartbeats out of turn, ms.
const EXTRA_READ_GAP_MS: u64 = 100;
/// While this instance isn't advertised yet but could be (just subscribed), it tries this
/// often rather than at the interval, ms: others find it as soon as it can receive.
const FIRST_BEAT_RETRY_MS: u64 = 20;

/// Adds the read of the heartbeats younger than `ttl_ms` at `now` to `pipe`.
fn read_cmd(pipe: &mut redis::Pipeline, key: &str, now: u64, ttl_ms: u64) {
    pipe.cmd("ZRANGEBYSCORE")
        .arg(key)
        .arg(now.saturating_sub(ttl_ms))
        .arg("+inf")
        .arg("LIMIT")
        .arg(0)
        .arg(MAX_READ);
}

/// Instance -> last heartbeat, from the members read at `now`; those that don't verify are
/// counted.
fn parse(
    keys: Option<&FleetKeys>,
    members: &[String],
    now: u64,
    metrics: &Shard,
) -> HashMap<InstanceId, u64> {
    let mut seen = HashMap::with_capacity(members.len());
    for m in members {
        match verify_heartbeat(keys, m) {
            Some((id, at)) => {
                // A clock ahead of ours counts as now, so it can't live on for longer.
                let at = at.min(now);
                let last = seen.entry(id).or_insert(at);
                *last = (*last).max(at);
            }
            None => metrics.liveness_refused(),
        }
    }
    seen
}

/// The live instances as last read from Redis.
pub struct Liveness {
    instance: InstanceId,
    ttl_ms: u64,
    interval_ms: u64,
    seen: RwLock<Seen>,
    /// When a join last read the heartbeats out of turn, Unix ms.
    last_extra_read: AtomicU64,
    /// True while this instance's own heartbeat is being written.
    advertised: watch::Sender<bool>,
}

/// What is known of other instances, Unix ms.
#[derive(Default)]
struct Seen {
    /// When the heartbeats were last read, Unix ms.
    read_at: u64,
    /// Instance -> its last verified heartbeat, as last read.
    read: HashMap<InstanceId, u64>,
    /// Instance -> when a batch it sealed last arrived, until the heartbeats read show it.
    heard: HashMap<InstanceId, u64>,
}

impl Seen {
    fn last(&self, instance: InstanceId) -> Option<u64> {
        match (self.read.get(&instance), self.heard.get(&instance)) {
            (Some(a), Some(b)) => Some(*a.max(b)),
            (a, b) => a.or(b).copied(),
        }
    }
}

impl Liveness {
    /// No instance known yet.
    pub fn new(instance: InstanceId, config: &RedisConfig) -> Self {
        Self {
            instance,
            ttl_ms: config.liveness_ttl_ms,
            interval_ms: config.liveness_interval_ms,
            seen: RwLock::new(Seen::default()),
            last_extra_read: AtomicU64::new(0),
            advertised: watch::Sender::new(false),
        }
    }

    /// True if `instance` heartbeated within the TTL (this instance always is): its members are
    /// handed out.
    pub fn is_live(&self, instance: InstanceId) -> bool {
        self.is_live_at(instance, unix_ms())
    }

    /// [`Liveness::is_live`] at Unix time `now` ms.
    pub fn is_live_at(&self, instance: InstanceId, now: u64) -> bool {
        self.heard_within(instance, now, self.ttl_ms)
    }

    /// True if `instance` heartbeated within [`REACHABLE_TTLS`] TTLs: a signal to it is queued
    /// (a dead one's publish finds no subscriber and its sender is told `unknown_peer`), while
    /// pairing keeps to [`Liveness::is_live`]. So an instance whose heartbeats run a little
    /// late on a loaded host isn't cut off from the answers its viewers wait for, and an
    /// invented or long-dead one is refused before anything is queued.
    pub fn is_reachable(&self, instance: InstanceId) -> bool {
        self.heard_within(
            instance,
            unix_ms(),
            self.ttl_ms.saturating_mul(REACHABLE_TTLS),
        )
    }

    fn heard_within(&self, instance: InstanceId, now: u64, ttl_ms: u64) -> bool {
        if instance == self.instance {
            return true;
        }
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        // Judged as of the last read plus one interval when this instance's own reads are late
        // (an overloaded host), for up to one TTL: its lateness isn't taken for the others'
        // death. Reads on time: judged as of now.
        let at = now
            .min(seen.read_at.saturating_add(self.interval_ms))
            .max(now.saturating_sub(ttl_ms));
        seen.last(instance)
            .is_some_and(|last| last.saturating_add(ttl_ms) > at)
    }

    /// Waits (at most `limit`) until this instance's own heartbeat is in Redis, so a member it
    /// registers right after it subscribed isn't skipped by others as one of an instance they
    /// don't know yet.
    pub async fn advertised_within(&self, limit: Duration) {
        let mut rx = self.advertised.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|on| *on)).await;
    }

    /// `instance` was heard from just now (a batch it sealed with the fleet key arrived): it
    /// can be answered before the next read of the heartbeats shows it.
    pub fn heard_from(&self, instance: InstanceId) {
        let now = unix_ms();
        // Most batches come from instances already known fresh: a read lock only.
        let fresh = |last: u64| last.saturating_add(self.ttl_ms / 2) > now;
        if self
            .seen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .last(instance)
            .is_some_and(fresh)
        {
            return;
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        let last = seen.heard.entry(instance).or_insert(now);
        *last = (*last).max(now);
    }

    /// Reads the heartbeats now, out of turn, when a join drew members of an instance not live
    /// as last read (one that just started, whose first heartbeat may be newer than the last
    /// read, or one whose heartbeat was late); at most one such read per
    /// [`EXTRA_READ_GAP_MS`], so the cost stays bounded (after a crash, until its members
    /// expire).
    pub async fn read_now(
        &self,
        backplane: &Backplane,
        keys: Option<&FleetKeys>,
        key: &str,
        metrics: &Shard,
    ) {
        let now = unix_ms();
        let last = self.last_extra_read.load(Ordering::Relaxed);
        if now.saturating_sub(last) < EXTRA_READ_GAP_MS
            || self
                .last_extra_read
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut pipe = redis::pipe();
        read_cmd(&mut pipe, key, now, self.ttl_ms);
        match backplane.query::<(Vec<String>,)>(&pipe).await {
            Ok((members,)) => {
                let fresh = parse(keys, &members, now, metrics);
                let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
                for (id, at) in fresh {
                    let last = seen.read.entry(id).or_insert(at);
                    *last = (*last).max(at);
                }
            }
            Err(e) => {
                debug!(error = %e, "reading heartbeats failed");
                metrics.redis_error();
            }
        }
    }

    /// The heartbeats just read at `now`: they replace the last read (a heartbeat removed by
    /// an exiting instance is gone at once); what was heard from instances is kept for its TTL.
    fn replace(&self, fresh: HashMap<InstanceId, u64>, now: u64) {
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        seen.read = fresh;
        seen.read_at = now;
        let ttl = self.ttl_ms;
        seen.heard.retain(|_, at| at.saturating_add(ttl) > now);
    }
}

/// The heartbeat member of `instance` at `ms` (unsigned without keys: `redis.allow_unsigned`).
fn heartbeat(keys: Option<&FleetKeys>, instance: InstanceId, ms: u64) -> String {
    let id = instance.to_string();
    let at = ms.to_string();
    let tag = keys.map_or_else(String::new, |k| {
        encode_tag(&k.sign(&[b"live", id.as_bytes(), at.as_bytes()]))
    });
    format!("{id}.{at}.{tag}")
}

/// A heartbeat member's instance and signed time, if its tag verifies (without keys, any).
fn verify_heartbeat(keys: Option<&FleetKeys>, member: &str) -> Option<(InstanceId, u64)> {
    let mut parts = member.splitn(3, '.');
    let (id, at, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if let Some(keys) = keys {
        let tag = decode_tag(tag)?;
        if !keys.verify(&[b"live", id.as_bytes(), at.as_bytes()], &tag) {
            return None;
        }
    }
    let instance = InstanceId(u32::from_str_radix(id, 16).ok()?);
    Some((instance, at.parse().ok()?))
}

/// The task that heartbeats and reads the others' heartbeats.
pub struct Heartbeat {
    /// Where liveness is published.
    pub live: Arc<Liveness>,
    /// The Redis links.
    pub backplane: Backplane,
    /// Signs and verifies heartbeats; `None` only with `redis.allow_unsigned`.
    pub keys: Option<FleetKeys>,
    /// The sorted set.
    pub key: String,
    /// Between heartbeats.
    pub interval: Duration,
    /// Counts refused heartbeats.
    pub metrics: Arc<Shard>,
}

/// The sorted set of heartbeats.
pub fn live_key(prefix: &str) -> String {
    format!("{prefix}:live")
}

impl Heartbeat {
    /// Heartbeats until `cancel`, then removes this instance's heartbeat (it is exiting).
    pub async fn run(self, cancel: CancellationToken) {
        let mut mine: Option<String> = None;
        let mut last_beat: Option<tokio::time::Instant> = None;
        let retry = Duration::from_millis(FIRST_BEAT_RETRY_MS);
        loop {
            let advertising = *self.live.advertised.borrow();
            let wake = match (advertising, last_beat) {
                (true, Some(t)) => t + self.interval,
                // Not advertised: look at the links again soon (a local look, no command).
                _ => tokio::time::Instant::now() + retry,
            };
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(wake) => {}
            }
            let now = tokio::time::Instant::now();
            let due = last_beat.is_none_or(|t| t + self.interval <= now);
            // Able to receive but not advertised yet: beat now rather than at the interval.
            let could = !advertising && self.backplane.is_up() && self.backplane.is_subscribed();
            if due || could {
                last_beat = Some(now);
                self.beat(&mut mine).await;
            }
        }
        if let Some(m) = mine {
            let mut pipe = redis::pipe();
            pipe.cmd("ZREM").arg(&self.key).arg(m).ignore();
            match self.backplane.query::<()>(&pipe).await {
                Ok(()) => info!("instance heartbeat removed: others see it gone at once"),
                Err(e) => debug!(error = %e, "removing the heartbeat failed; it lapses"),
            }
        }
    }

    /// One heartbeat (none while the subscription is down: this instance can't receive, so its
    /// last one lapses)
    /// and one read of everybody's.
    async fn beat(&self, mine: &mut Option<String>) {
        if !self.backplane.is_up() {
            return;
        }
        let instance = self.live.instance;
        let now = unix_ms();
        let ttl = self.live.ttl_ms;
        let mut pipe = redis::pipe();
        let fresh = self
            .backplane
            .is_subscribed()
            .then(|| heartbeat(self.keys.as_ref(), instance, now));
        if let Some(m) = &fresh {
            pipe.cmd("ZADD").arg(&self.key).arg(now).arg(m).ignore();
        }
        // While not subscribed, the last heartbeat stays and lapses after the TTL: a
        // resubscription of a moment doesn't make the others refuse this instance.
        if let (Some(old), Some(_)) = (mine.as_ref(), &fresh) {
            pipe.cmd("ZREM").arg(&self.key).arg(old).ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&self.key)
            .arg("-inf")
            .arg(now.saturating_sub(ttl * TRIM_TTLS))
            .ignore();
        read_cmd(&mut pipe, &self.key, now, ttl);
        let (members,): (Vec<String>,) = match self.backplane.query(&pipe).await {
            Ok(v) => v,
            Err(e) => {
                debug!(error = %e, "heartbeat failed");
                self.metrics.redis_error();
                return;
            }
        };
        let advertising = fresh.is_some();
        if advertising {
            *mine = fresh;
        }
        self.live.advertised.send_if_modified(|on| {
            let was = *on;
            *on = advertising;
            was != *on
        });
        let seen = parse(self.keys.as_ref(), &members, now, &self.metrics);
        self.live.replace(seen, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn heartbeats_verify_only_under_the_key_and_unchanged() {
        let keys = FleetKeys::new(KEY, None).unwrap();
        let m = heartbeat(Some(&keys), InstanceId(0xdead_beef), 1_700_000_000_123);
        assert_eq!(
            verify_heartbeat(Some(&keys), &m),
            Some((InstanceId(0xdead_beef), 1_700_000_000_123))
        );
        let later = m.replace("1700000000123", "1700000009123");
        assert_eq!(verify_heartbeat(Some(&keys), &later), None, "a time moved");
        let other = m.replace("deadbeef", "deadbeee");
        assert_eq!(
            verify_heartbeat(Some(&keys), &other),
            None,
            "another instance"
        );
        let stranger = FleetKeys::new("fedcba9876543210fedcba9876543210", None).unwrap();
        assert_eq!(verify_heartbeat(Some(&stranger), &m), None);
        assert_eq!(
            verify_heartbeat(Some(&keys), "deadbeef.1700000000123"),
            None
        );
        assert_eq!(verify_heartbeat(Some(&keys), ""), None);
    }

    #[test]
    fn an_instance_is_live_for_the_ttl_after_its_signed_heartbeat() {
        let config = RedisConfig {
            liveness_interval_ms: 500,
            liveness_ttl_ms: 1_500,
            ..RedisConfig::default()
        };
        let me = InstanceId(1);
        let live = Liveness::new(me, &config);
        let other = InstanceId(2);
        assert!(!live.is_live_at(other, 10_000), "unknown: not live");
        assert!(live.is_live_at(me, 10_000), "this instance always is");
        live.replace(HashMap::from([(other, 10_000)]), 10_000);
        // Reads on time (the next one shows nothing newer): dead at its heartbeat + TTL.
        live.replace(HashMap::from([(other, 10_000)]), 11_400);
        assert!(live.is_live_at(other, 11_499));
        assert!(!live.is_live_at(other, 11_500));
        assert!(!live.is_live_at(InstanceId(3), 10_000));
        // This instance's reads late: judged as of its last read plus one interval, for at
        // most one TTL more.
        live.replace(HashMap::from([(other, 10_000)]), 10_000);
        assert!(
            live.is_live_at(other, 12_000),
            "as of 10.5 s, our read being 2 s old"
        );
        assert!(live.is_live_at(other, 12_999));
        assert!(
            !live.is_live_at(other, 13_000),
            "a TTL later, judged as of now - TTL"
        );
        // Heard from before its heartbeat is read: live for the TTL from then.
        let newcomer = InstanceId(4);
        live.heard_from(newcomer);
        assert!(live.is_live(newcomer));
        // A read without `other`'s heartbeat (it exited and removed it): gone at once.
        live.replace(HashMap::new(), unix_ms());
        assert!(!live.is_live_at(other, 10_001));
        assert!(live.is_live(newcomer), "what was heard is kept for its TTL");
    }
}
