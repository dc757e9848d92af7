//! What a WebTorrent run measures: counters, a few maps by reason, latency histograms, and the
//! snapshots (interval deltas) that add up into steps and the run.
//!
//! Connection tasks record into one [`Stats`]: atomics for the counters, a mutex for the maps
//! and one for the histograms, each held for one update. The histograms have the native mode's
//! bounds (1 µs .. 120 s, 3 significant figures).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::stats::{HistData, add_map};

/// Distinct failure reasons kept by name; more are counted under `other`. Reasons are the
/// tracker's text, which could carry ids: the bound keeps the report small.
const MAX_REASONS: usize = 32;

macro_rules! counts {
    ($($(#[doc = $doc:literal])* $name:ident = $wire:literal,)*) => {
        /// Names a counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Count { $($(#[doc = $doc])* $name,)* }

        impl Count {
            /// Every counter, in report order.
            pub const ALL: &[Count] = &[$(Count::$name,)*];

            /// Its name in the JSON report.
            pub fn name(self) -> &'static str {
                match self { $(Count::$name => $wire,)* }
            }
        }
    };
}

counts! {
    /// WebSocket upgrades that succeeded.
    Connects = "connects",
    /// Connection attempts that failed.
    ConnectFailures = "connect_failures",
    /// Reconnections after the tracker closed with 1012 (draining).
    Reconnects = "reconnects",
    /// Other closes and broken connections (each is followed by a reconnection with backoff).
    Disconnects = "disconnects",
    /// Announces sent.
    Announces = "announces",
    /// Scrapes sent.
    Scrapes = "scrapes",
    /// Announce responses received.
    AnnounceResponses = "announce_responses",
    /// Scrape responses received.
    ScrapeResponses = "scrape_responses",
    /// Announce responses that answered no request in flight (should be 0: answers get no
    /// reply; or the response of a request that had timed out).
    UnexpectedResponses = "unexpected_responses",
    /// Requests without a response within the lost-after bound (refused or dropped).
    RequestTimeouts = "request_timeouts",
    /// `failure reason` frames received.
    Failures = "failures",
    /// Offers sent (in announces).
    OffersSent = "offers_sent",
    /// Offers received from other peers.
    OffersReceived = "offers_received",
    /// Offers the swarm had no other peer for.
    OffersUndeliverable = "offers_undeliverable",
    /// Offers not received within the lost-after bound although the swarm had a peer for them.
    OffersLost = "offers_lost",
    /// Offers sent while the ledger was full.
    OffersUntracked = "offers_untracked",
    /// Answers sent.
    AnswersSent = "answers_sent",
    /// Answers received.
    AnswersReceived = "answers_received",
    /// Answers not received within the lost-after bound.
    AnswersLost = "answers_lost",
    /// Answers sent while the ledger was full.
    AnswersUntracked = "answers_untracked",
    /// Offers received and deliberately left unanswered (`--answer-probability`).
    OffersIgnored = "offers_ignored",
    /// Offers or answers received after they had been settled lost, or never tracked.
    Late = "late",
    /// An offer or answer received twice (should be 0).
    Duplicates = "duplicates",
    /// Two offers of one announce at the same peer (should be 0: peers are distinct).
    DuplicateTargets = "duplicate_targets",
    /// An offer relayed back to its own offerer (should be 0).
    SelfOffers = "self_offers",
    /// An answer delivered to a connection that didn't make the offer (should be 0).
    Misrouted = "misrouted",
    /// Offers and answers whose `offer_id` isn't this run's.
    Unmatched = "unmatched",
    /// Frames that weren't JSON of a known shape.
    BadFrames = "bad_frames",
    /// Frames sent.
    FramesOut = "frames_out",
    /// Frames received.
    FramesIn = "frames_in",
    /// Payload bytes sent.
    BytesOut = "bytes_out",
    /// Payload bytes received.
    BytesIn = "bytes_in",
}

const N: usize = Count::ALL.len();

/// Counter values of an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts([u64; N]);

impl Default for Counts {
    fn default() -> Self {
        Self([0; N])
    }
}

impl Counts {
    /// One counter.
    pub fn get(&self, c: Count) -> u64 {
        self.0[c as usize]
    }

    fn add(&mut self, other: &Counts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(N))?;
        for c in Count::ALL {
            m.serialize_entry(c.name(), &self.get(*c))?;
        }
        m.end()
    }
}

/// The latencies measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// TCP connect + WebSocket upgrade.
    Connect,
    /// Announce sent to its response received.
    Announce,
    /// Offer sent (in the announce) to received by the target peer.
    Offer,
    /// Answer sent to received by the offerer.
    Answer,
}

/// Latency histograms, µs.
#[derive(Debug, Clone)]
pub struct Hists([Histogram<u64>; 4]);

impl Default for Hists {
    fn default() -> Self {
        // An empty native histogram: the same bounds in both modes.
        Self(std::array::from_fn(|_| HistData::default().to_hist()))
    }
}

impl Hists {
    /// The histogram of `l`.
    pub fn get(&self, l: Latency) -> &Histogram<u64> {
        &self.0[l as usize]
    }

    fn add(&mut self, other: &Hists) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            // Same bounds on both sides: adding can't fail.
            let _ = a.add(b);
        }
    }
}

/// Everything measured over an interval.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Counters.
    pub counts: Counts,
    /// `failure reason`s received, by reason.
    pub failures: BTreeMap<String, u64>,
    /// Closes by the tracker, by close code (`eof` for a broken connection).
    pub closes: BTreeMap<String, u64>,
    /// Failed connection attempts, by cause.
    pub connect_failures: BTreeMap<String, u64>,
    /// Latency histograms.
    pub hists: Hists,
    /// Connections open at the end of the interval (the most, once added over time).
    pub connections: u64,
    /// CPU time the simulator used, ms.
    pub cpu_ms: u64,
    /// Length, ms.
    pub wall_ms: u64,
}

impl Snapshot {
    /// Adds the next interval.
    pub fn then(&mut self, next: &Snapshot) {
        self.counts.add(&next.counts);
        add_map(&mut self.failures, &next.failures);
        add_map(&mut self.closes, &next.closes);
        add_map(&mut self.connect_failures, &next.connect_failures);
        self.hists.add(&next.hists);
        self.connections = self.connections.max(next.connections);
        self.cpu_ms += next.cpu_ms;
        self.wall_ms += next.wall_ms;
    }
}

#[derive(Default)]
struct Maps {
    failures: BTreeMap<String, u64>,
    closes: BTreeMap<String, u64>,
    connect_failures: BTreeMap<String, u64>,
}

/// The live measurements of a run.
pub struct Stats {
    counts: [AtomicU64; N],
    maps: Mutex<Maps>,
    hists: Mutex<Hists>,
    connections: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            maps: Mutex::default(),
            hists: Mutex::default(),
            connections: AtomicU64::new(0),
        }
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_REASONS {
        map.insert(key.to_string(), 1);
    } else {
        *map.entry("other".to_string()).or_default() += 1;
    }
}

impl Stats {
    /// Adds `n` to `c`.
    pub fn count(&self, c: Count, n: u64) {
        self.counts[c as usize].fetch_add(n, Relaxed);
    }

    /// Records a latency.
    pub fn latency(&self, l: Latency, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Ok(mut h) = self.hists.lock() {
            h.0[l as usize].saturating_record(us);
        }
    }

    /// Counts a `failure reason`.
    pub fn failure(&self, reason: &str) {
        self.count(Count::Failures, 1);
        if let Ok(mut m) = self.maps.lock() {
            bump(&mut m.failures, reason);
        }
    }

    /// Counts a close by the tracker with `code` (not 1012, which is a reconnect).
    pub fn close(&self, code: &str) {
        self.count(Count::Disconnects, 1);
        if let Ok(mut m) = self.maps.lock() {
            bump(&mut m.closes, code);
        }
    }

    /// Counts a failed connection attempt.
    pub fn connect_failed(&self, cause: &str) {
        self.count(Count::ConnectFailures, 1);
        if let Ok(mut m) = self.maps.lock() {
            bump(&mut m.connect_failures, cause);
        }
    }

    /// A frame of `bytes` sent.
    pub fn frame_out(&self, bytes: usize) {
        self.count(Count::FramesOut, 1);
        self.count(Count::BytesOut, bytes as u64);
    }

    /// A connection opened (+1) or closed (-1).
    pub fn connection(&self, up: bool) {
        if up {
            self.connections.fetch_add(1, Relaxed);
        } else {
            self.connections.fetch_sub(1, Relaxed);
        }
    }

    /// Takes the interval's measurements and starts a new interval.
    pub fn take(&self, wall: Duration, cpu_ms: u64) -> Snapshot {
        let mut counts = Counts::default();
        for (v, a) in counts.0.iter_mut().zip(&self.counts) {
            *v = a.swap(0, Relaxed);
        }
        let maps = self
            .maps
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default();
        let hists = self
            .hists
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default();
        Snapshot {
            counts,
            failures: maps.failures,
            closes: maps.closes,
            connect_failures: maps.connect_failures,
            hists,
            connections: self.connections.load(Relaxed),
            cpu_ms,
            wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_add_up_and_reasons_are_bounded() {
        let s = Stats::default();
        s.count(Count::OffersSent, 10);
        s.latency(Latency::Offer, Duration::from_millis(3));
        for i in 0..40 {
            s.failure(&format!("reason {i}"));
        }
        let a = s.take(Duration::from_secs(1), 7);
        assert_eq!(a.counts.get(Count::OffersSent), 10);
        assert_eq!(a.counts.get(Count::Failures), 40);
        assert_eq!(a.failures.len(), MAX_REASONS + 1);
        assert_eq!(a.failures["other"], 40 - MAX_REASONS as u64);
        let b = s.take(Duration::from_secs(1), 7);
        assert_eq!(b.counts.get(Count::OffersSent), 0);
        let mut t = a.clone();
        t.then(&b);
        t.then(&a);
        assert_eq!(t.counts.get(Count::OffersSent), 20);
        assert_eq!(t.hists.get(Latency::Offer).len(), 2);
        assert_eq!(t.wall_ms, 3000);
        let json = serde_json::to_value(t.counts).unwrap();
        assert_eq!(json["offers_sent"], 20);
    }
}
