//! What a run measures: counters, latency histograms, and the snapshots that carry them.
//!
//! Viewer tasks record into one [`Stats`] (atomics for counters; a mutex per histogram set,
//! held for one `record`). Once a second the engine takes a [`Snapshot`]: the interval's
//! deltas, which then add up into steps and the whole run, and travel as JSON from worker
//! processes to the parent.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The three relayed message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// A batch of ICE candidates.
    Cands,
}

impl Kind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Offer => "offer",
            Kind::Answer => "answer",
            Kind::Cands => "cands",
        }
    }

    /// The kind a `ref` in an error names, if it is a relayed one.
    pub fn from_ref(r: &str) -> Option<Kind> {
        match r {
            "offer" => Some(Kind::Offer),
            "answer" => Some(Kind::Answer),
            "cands" => Some(Kind::Cands),
            _ => None,
        }
    }
}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Event counts over an interval.
        #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
        pub struct Counters {
            $($(#[doc = $doc])* #[serde(default)] pub $name: u64,)*
        }

        #[derive(Default)]
        struct LiveCounters {
            $($name: AtomicU64,)*
        }

        impl LiveCounters {
            fn take(&self) -> Counters {
                Counters { $($name: self.$name.swap(0, Relaxed),)* }
            }
        }

        impl Counters {
            /// Adds `other` into `self`.
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }
        }

        /// Names a counter for [`Stats::count`].
        #[derive(Debug, Clone, Copy)]
        #[allow(non_camel_case_types, missing_docs)]
        pub enum C { $($name,)* }

        impl Stats {
            /// Adds `n` to counter `c`.
            pub fn count(&self, c: C, n: u64) {
                match c { $(C::$name => self.counters.$name.fetch_add(n, Relaxed),)* };
            }
        }
    };
}

counters! {
    /// WebSocket upgrades that succeeded.
    connects,
    /// Connection attempts that failed (TCP, upgrade, or no `welcome`).
    connect_failures,
    /// `join` messages sent.
    joins,
    /// `peers` replies received.
    peers,
    /// Negotiations started as offerer.
    negotiations,
    /// Extra negotiations the pacer asked for (renegotiations).
    renegotiations,
    /// Renegotiations skipped because the chosen viewer was busy.
    renegotiations_skipped,
    /// Offers sent.
    sent_offer,
    /// Answers sent.
    sent_answer,
    /// `cands` messages sent.
    sent_cands,
    /// Offers received.
    delivered_offer,
    /// Answers received.
    delivered_answer,
    /// `cands` messages received.
    delivered_cands,
    /// Sent messages the tracker refused with an error naming them.
    refused,
    /// Sent messages never delivered nor refused within the lost-after bound.
    lost,
    /// Messages that arrived after they had been counted lost.
    late,
    /// Received relayed messages whose kind didn't match what was sent in that position.
    misordered,
    /// Received relayed messages no viewer of this process sent.
    unmatched,
    /// `reconnect` messages followed.
    reconnects,
    /// Connections the tracker closed or broke while the viewer was watching.
    disconnects,
    /// Frames sent.
    frames_out,
    /// Frames received.
    frames_in,
    /// Payload bytes sent.
    bytes_out,
    /// Payload bytes received.
    bytes_in,
    /// Frames from the tracker that didn't decode.
    bad_frames,
}

impl Counters {
    /// Relayed messages sent, all kinds.
    pub fn sent(&self) -> u64 {
        self.sent_offer + self.sent_answer + self.sent_cands
    }

    /// Relayed messages delivered, all kinds.
    pub fn delivered(&self) -> u64 {
        self.delivered_offer + self.delivered_answer + self.delivered_cands
    }
}

/// Lowest and highest latency recorded, in microseconds.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 120_000_000;

fn histogram() -> Histogram<u64> {
    // 3 significant figures over 1 µs..120 s; the bounds are constants, so this can't fail.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

#[derive(Clone)]
struct Hists {
    connect: Histogram<u64>,
    join: Histogram<u64>,
    relay: [Histogram<u64>; 3],
}

impl Default for Hists {
    fn default() -> Self {
        Self {
            connect: histogram(),
            join: histogram(),
            relay: [histogram(), histogram(), histogram()],
        }
    }
}

/// A histogram as `[value, count]` pairs, for JSON between processes.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistData(pub Vec<[u64; 2]>);

impl HistData {
    fn from_hist(h: &Histogram<u64>) -> Self {
        Self(
            h.iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect(),
        )
    }

    /// The histogram again.
    pub fn to_hist(&self) -> Histogram<u64> {
        let mut h = histogram();
        for [v, n] in &self.0 {
            h.saturating_record_n(*v, *n);
        }
        h
    }

    /// Adds `other`'s values.
    pub fn add(&mut self, other: &HistData) {
        if other.0.is_empty() {
            return;
        }
        let mut h = self.to_hist();
        for [v, n] in &other.0 {
            h.saturating_record_n(*v, *n);
        }
        *self = Self::from_hist(&h);
    }
}

/// Latency histograms of an interval.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    /// TCP connect + upgrade + `welcome`, µs.
    pub connect: HistData,
    /// `join` sent to `peers` received, µs.
    pub join: HistData,
    /// Offer sent to offer received, µs.
    pub offer: HistData,
    /// Answer sent to answer received, µs.
    pub answer: HistData,
    /// `cands` sent to `cands` received, µs.
    pub cands: HistData,
}

impl Latencies {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Latencies) {
        self.connect.add(&other.connect);
        self.join.add(&other.join);
        self.offer.add(&other.offer);
        self.answer.add(&other.answer);
        self.cands.add(&other.cands);
    }

    /// All relayed kinds in one histogram.
    pub fn relay(&self) -> Histogram<u64> {
        let mut h = self.offer.to_hist();
        for d in [&self.answer, &self.cands] {
            for [v, n] in &d.0 {
                h.saturating_record_n(*v, *n);
            }
        }
        h
    }
}

/// Everything measured over an interval (a tick, a step or a run).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Event counts.
    pub counters: Counters,
    /// `error` messages received, by code.
    pub errors: BTreeMap<String, u64>,
    /// Closes initiated by the tracker, by close code (`eof` for a broken connection).
    pub closes: BTreeMap<String, u64>,
    /// Failed connection attempts, by cause.
    pub connect_failures: BTreeMap<String, u64>,
    /// Latency histograms.
    pub latencies: Latencies,
    /// Viewers connected at the end of the interval (the most seen, once added over time).
    pub viewers: u64,
    /// CPU time the simulator process used in the interval, ms.
    pub cpu_ms: u64,
    /// How far the arrival schedule fell behind at worst, ms (the simulator's own saturation).
    pub lag_ms: u64,
    /// Length of the interval, ms (the longest, when adding parallel workers).
    pub wall_ms: u64,
}

/// Adds the counts of `from` into `into`, key by key.
pub(crate) fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl Snapshot {
    fn add_common(&mut self, other: &Snapshot) {
        self.counters.add(&other.counters);
        add_map(&mut self.errors, &other.errors);
        add_map(&mut self.closes, &other.closes);
        add_map(&mut self.connect_failures, &other.connect_failures);
        self.latencies.add(&other.latencies);
        self.cpu_ms += other.cpu_ms;
        self.lag_ms = self.lag_ms.max(other.lag_ms);
    }

    /// Adds the next interval of the same process (gauges take the highest value).
    pub fn then(&mut self, next: &Snapshot) {
        self.add_common(next);
        self.viewers = self.viewers.max(next.viewers);
        self.wall_ms += next.wall_ms;
    }

    /// Adds the same interval of another worker process (gauges add up).
    pub fn beside(&mut self, other: &Snapshot) {
        self.add_common(other);
        self.viewers += other.viewers;
        self.wall_ms = self.wall_ms.max(other.wall_ms);
    }

    /// Errors received, all codes.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The live measurements of one process.
#[derive(Default)]
pub struct Stats {
    counters: LiveCounters,
    maps: Mutex<Maps>,
    hists: Mutex<Hists>,
    viewers: AtomicU64,
    lag_ms: AtomicU64,
}

#[derive(Default)]
struct Maps {
    errors: BTreeMap<String, u64>,
    closes: BTreeMap<String, u64>,
    connect_failures: BTreeMap<String, u64>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Stats {
    /// Records a relayed message's latency.
    pub fn relay(&self, kind: Kind, latency: Duration) {
        let i = kind as usize;
        if let Ok(mut h) = self.hists.lock() {
            h.relay[i].saturating_record(micros(latency));
        }
    }

    /// Records a join latency.
    pub fn join(&self, latency: Duration) {
        if let Ok(mut h) = self.hists.lock() {
            h.join.saturating_record(micros(latency));
        }
    }

    /// Records a connection's setup time.
    pub fn connected(&self, latency: Duration) {
        self.count(C::connects, 1);
        if let Ok(mut h) = self.hists.lock() {
            h.connect.saturating_record(micros(latency));
        }
    }

    fn bump(&self, pick: impl FnOnce(&mut Maps) -> &mut BTreeMap<String, u64>, key: &str) {
        if let Ok(mut m) = self.maps.lock() {
            *pick(&mut m).entry(key.to_string()).or_default() += 1;
        }
    }

    /// Counts an `error` from the tracker.
    pub fn error(&self, code: &str) {
        self.bump(|m| &mut m.errors, code);
    }

    /// Counts a close by the tracker.
    pub fn close(&self, code: &str) {
        self.count(C::disconnects, 1);
        self.bump(|m| &mut m.closes, code);
    }

    /// Counts a failed connection attempt.
    pub fn connect_failed(&self, cause: &str) {
        self.count(C::connect_failures, 1);
        self.bump(|m| &mut m.connect_failures, cause);
    }

    /// Counts a sent relayed message.
    pub fn sent(&self, kind: Kind, bytes: usize) {
        let c = match kind {
            Kind::Offer => C::sent_offer,
            Kind::Answer => C::sent_answer,
            Kind::Cands => C::sent_cands,
        };
        self.count(c, 1);
        self.frame_out(bytes);
    }

    /// Counts a sent frame.
    pub fn frame_out(&self, bytes: usize) {
        self.count(C::frames_out, 1);
        self.count(C::bytes_out, bytes as u64);
    }

    /// Counts a delivered relayed message.
    pub fn delivered(&self, kind: Kind) {
        let c = match kind {
            Kind::Offer => C::delivered_offer,
            Kind::Answer => C::delivered_answer,
            Kind::Cands => C::delivered_cands,
        };
        self.count(c, 1);
    }

    /// A viewer connected (+1) or went away (-1).
    pub fn viewers_add(&self, up: bool) {
        if up {
            self.viewers.fetch_add(1, Relaxed);
        } else {
            self.viewers.fetch_sub(1, Relaxed);
        }
    }

    /// Viewers connected now.
    pub fn viewers(&self) -> u64 {
        self.viewers.load(Relaxed)
    }

    /// Notes how far behind its schedule the arrival loop is.
    pub fn lag(&self, behind: Duration) {
        let ms = u64::try_from(behind.as_millis()).unwrap_or(u64::MAX);
        self.lag_ms.fetch_max(ms, Relaxed);
    }

    /// Takes the interval's measurements and starts a new interval.
    pub fn take(&self, wall: Duration, cpu_ms: u64) -> Snapshot {
        let counters = self.counters.take();
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
            counters,
            errors: maps.errors,
            closes: maps.closes,
            connect_failures: maps.connect_failures,
            latencies: Latencies {
                connect: HistData::from_hist(&hists.connect),
                join: HistData::from_hist(&hists.join),
                offer: HistData::from_hist(&hists.relay[0]),
                answer: HistData::from_hist(&hists.relay[1]),
                cands: HistData::from_hist(&hists.relay[2]),
            },
            viewers: self.viewers(),
            cpu_ms,
            lag_ms: self.lag_ms.swap(0, Relaxed),
            wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

impl Summary {
    /// Summarises `h` (µs values).
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// CPU time (user + system) this process has used so far, ms; 0 where `/proc` can't tell.
pub fn process_cpu_ms() -> u64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0, |s| parse_cpu_ms(&s))
}

/// utime + stime of a `/proc/<pid>/stat` line, in ms (clock ticks are 10 ms on Linux).
fn parse_cpu_ms(stat: &str) -> u64 {
    // The name (field 2) may hold spaces; fields are counted after its closing parenthesis,
    // where the state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) * 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_add_up() {
        let s = Stats::default();
        s.sent(Kind::Offer, 100);
        s.delivered(Kind::Offer);
        s.relay(Kind::Offer, Duration::from_millis(2));
        s.error("unknown_peer");
        let a = s.take(Duration::from_secs(1), 5);
        assert_eq!(a.counters.sent(), 1);
        assert_eq!(a.counters.bytes_out, 100);
        let b = s.take(Duration::from_secs(1), 5);
        assert_eq!(b.counters.sent(), 0, "take starts a new interval");
        let mut total = a.clone();
        total.then(&b);
        total.beside(&a);
        assert_eq!(total.counters.sent(), 2);
        assert_eq!(total.errors["unknown_peer"], 2);
        let relay = Summary::of(&total.latencies.relay());
        assert_eq!(relay.count, 2);
        assert!((relay.p50_ms - 2.0).abs() < 0.01);
        let json = serde_json::to_string(&total).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, total);
    }

    #[test]
    fn cpu_time_parses() {
        let line = "4242 (sim ulator) S 1 2 3 4 5 6 7 8 9 10 250 125 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ms(line), 3750);
        assert_eq!(parse_cpu_ms("garbage"), 0);
    }
}
