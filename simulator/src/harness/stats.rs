//! What a run measures, for either mode: named counters, latency histograms, counts by reason,
//! and the snapshots (interval deltas) that carry them.
//!
//! A mode names its counters, histograms and reason maps once (a [`Schema`], built with the
//! [`names!`](crate::names) macro); tasks record into one [`Stats`] per process (an atomic per
//! counter, a mutex for the histograms and one for the maps, each held for one update). Once a
//! second the engine takes a [`Snapshot`]: the interval's deltas, which add up over time into
//! steps and the run, and across worker processes, and travel between processes as JSON.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Distinct reasons a map keeps by name; more are counted under `other`. Reasons can be the
/// tracker's text, which could carry ids: the bound keeps snapshots small.
pub const MAX_REASONS: usize = 32;

/// Lowest and highest latency recorded, in microseconds.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 120_000_000;

/// What a mode measures: the names of its counters, histograms and reason maps, in index order.
#[derive(Debug)]
pub struct Schema {
    /// Counter names.
    pub counters: &'static [&'static str],
    /// Histogram names (latencies, µs).
    pub latencies: &'static [&'static str],
    /// Reason map names.
    pub maps: &'static [&'static str],
}

/// Declares an enum of names with `as usize` indexes and their list, for a [`Schema`].
#[macro_export]
macro_rules! names {
    ($(#[$meta:meta])* $vis:vis enum $ty:ident { $($(#[doc = $doc:literal])* $name:ident = $wire:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $ty { $($(#[doc = $doc])* $name,)* }

        impl $ty {
            /// Every name, in index order.
            pub const NAMES: &[&str] = &[$($wire,)*];

            /// The name in reports.
            pub fn name(self) -> &'static str {
                Self::NAMES[self as usize]
            }
        }

        impl From<$ty> for usize {
            fn from(v: $ty) -> usize {
                v as usize
            }
        }
    };
}

/// An empty histogram with the bounds every mode uses: 1 µs .. 120 s, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants, so this can't fail.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
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
        self.record_into(&mut h);
        h
    }

    fn record_into(&self, h: &mut Histogram<u64>) {
        for [v, n] in &self.0 {
            h.saturating_record_n(*v, *n);
        }
    }

    /// Adds `other`'s values.
    pub fn add(&mut self, other: &HistData) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        let mut h = self.to_hist();
        other.record_into(&mut h);
        *self = Self::from_hist(&h);
    }
}

/// Everything measured over an interval (a tick, a step or a run), by a [`Schema`]'s indexes.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Counter values.
    pub counters: Vec<u64>,
    /// Latency histograms, µs.
    pub latencies: Vec<HistData>,
    /// Counts by reason.
    pub maps: Vec<BTreeMap<String, u64>>,
    /// Connections open at the end of the interval (the most seen, once added over time).
    pub connected: u64,
    /// CPU time the simulator's processes used in the interval, ms.
    pub cpu_ms: u64,
    /// The highest CPU share one simulator process used in the interval, in cores (each
    /// process has one thread: near 1.0, that process ran out).
    pub cpu_max_cores: f64,
    /// How far the load's schedule fell behind at worst, ms (the simulator's own saturation).
    pub lag_ms: u64,
    /// Length of the interval, ms (the longest, when adding parallel workers).
    pub wall_ms: u64,
}

fn add_vec(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

fn add_maps(a: &mut Vec<BTreeMap<String, u64>>, b: &[BTreeMap<String, u64>]) {
    if a.len() < b.len() {
        a.resize(b.len(), BTreeMap::new());
    }
    for (into, from) in a.iter_mut().zip(b) {
        for (k, v) in from {
            *into.entry(k.clone()).or_default() += v;
        }
    }
}

impl Snapshot {
    fn add_common(&mut self, other: &Snapshot) {
        add_vec(&mut self.counters, &other.counters);
        if self.latencies.len() < other.latencies.len() {
            self.latencies
                .resize(other.latencies.len(), HistData::default());
        }
        for (a, b) in self.latencies.iter_mut().zip(&other.latencies) {
            a.add(b);
        }
        add_maps(&mut self.maps, &other.maps);
        self.cpu_ms += other.cpu_ms;
        self.lag_ms = self.lag_ms.max(other.lag_ms);
    }

    /// Adds the next interval of the same processes (gauges take the highest value).
    pub fn then(&mut self, next: &Snapshot) {
        self.add_common(next);
        self.connected = self.connected.max(next.connected);
        self.wall_ms += next.wall_ms;
        // A share of a longer interval: weighted by length.
        let wall = self.wall_ms.max(1) as f64;
        self.cpu_max_cores = (self.cpu_max_cores * (wall - next.wall_ms as f64)
            + next.cpu_max_cores * next.wall_ms as f64)
            / wall;
    }

    /// Adds the same interval of another worker process (gauges add up).
    pub fn beside(&mut self, other: &Snapshot) {
        self.add_common(other);
        self.connected += other.connected;
        self.wall_ms = self.wall_ms.max(other.wall_ms);
        self.cpu_max_cores = self.cpu_max_cores.max(other.cpu_max_cores);
    }

    /// Counter `c`.
    pub fn count(&self, c: impl Into<usize>) -> u64 {
        self.counters.get(c.into()).copied().unwrap_or(0)
    }

    /// Histogram `l`.
    pub fn hist(&self, l: impl Into<usize>) -> Histogram<u64> {
        self.latencies
            .get(l.into())
            .map_or_else(histogram, HistData::to_hist)
    }

    /// Map `m`.
    pub fn map(&self, m: impl Into<usize>) -> BTreeMap<String, u64> {
        self.maps.get(m.into()).cloned().unwrap_or_default()
    }

    /// Length in seconds (at least a millisecond).
    pub fn seconds(&self) -> f64 {
        (self.wall_ms as f64 / 1000.0).max(1e-3)
    }

    /// CPU the simulator used, in cores.
    pub fn cpu_cores(&self) -> f64 {
        self.cpu_ms as f64 / 1000.0 / self.seconds()
    }
}

/// The live measurements of one process.
pub struct Stats {
    schema: &'static Schema,
    counters: Box<[AtomicU64]>,
    hists: Mutex<Vec<Histogram<u64>>>,
    maps: Mutex<Vec<BTreeMap<String, u64>>>,
    connected: AtomicU64,
    lag_ms: AtomicU64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Stats {
    /// Empty measurements of `schema`.
    pub fn new(schema: &'static Schema) -> Self {
        Self {
            schema,
            counters: schema.counters.iter().map(|_| AtomicU64::new(0)).collect(),
            hists: Mutex::new(schema.latencies.iter().map(|_| histogram()).collect()),
            maps: Mutex::new(vec![BTreeMap::new(); schema.maps.len()]),
            connected: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
        }
    }

    /// Adds `n` to counter `c`.
    pub fn count(&self, c: impl Into<usize>, n: u64) {
        if let Some(a) = self.counters.get(c.into()) {
            a.fetch_add(n, Relaxed);
        }
    }

    /// Records a latency in histogram `l`.
    pub fn latency(&self, l: impl Into<usize>, d: Duration) {
        if let Ok(mut h) = self.hists.lock()
            && let Some(h) = h.get_mut(l.into())
        {
            h.saturating_record(micros(d));
        }
    }

    /// Counts one `reason` in map `m` (bounded: past [`MAX_REASONS`], under `other`).
    pub fn bump(&self, m: impl Into<usize>, reason: &str) {
        let Ok(mut maps) = self.maps.lock() else {
            return;
        };
        let Some(map) = maps.get_mut(m.into()) else {
            return;
        };
        if let Some(n) = map.get_mut(reason) {
            *n += 1;
        } else if map.len() < MAX_REASONS {
            map.insert(reason.to_string(), 1);
        } else {
            *map.entry("other".to_string()).or_default() += 1;
        }
    }

    /// A connection opened (`true`) or closed.
    pub fn connected(&self, up: bool) {
        if up {
            self.connected.fetch_add(1, Relaxed);
        } else {
            self.connected.fetch_sub(1, Relaxed);
        }
    }

    /// Notes how far behind its schedule the load is.
    pub fn lag(&self, behind: Duration) {
        let ms = u64::try_from(behind.as_millis()).unwrap_or(u64::MAX);
        self.lag_ms.fetch_max(ms, Relaxed);
    }

    /// Takes the interval's measurements and starts a new interval.
    pub fn take(&self, wall: Duration, cpu_ms: u64) -> Snapshot {
        let fresh = || self.schema.latencies.iter().map(|_| histogram()).collect();
        let hists: Vec<Histogram<u64>> = self
            .hists
            .lock()
            .map(|mut h| std::mem::replace(&mut *h, fresh()))
            .unwrap_or_default();
        let maps = self
            .maps
            .lock()
            .map(|mut m| std::mem::replace(&mut *m, vec![BTreeMap::new(); self.schema.maps.len()]))
            .unwrap_or_default();
        let wall_ms = u64::try_from(wall.as_millis()).unwrap_or(u64::MAX);
        Snapshot {
            counters: self.counters.iter().map(|a| a.swap(0, Relaxed)).collect(),
            latencies: hists.iter().map(HistData::from_hist).collect(),
            maps,
            connected: self.connected.load(Relaxed),
            cpu_ms,
            cpu_max_cores: cpu_ms as f64 / wall_ms.max(1) as f64,
            lag_ms: self.lag_ms.swap(0, Relaxed),
            wall_ms,
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

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::names! {
        /// Test counters.
        enum N { A = "a", B = "b", }
    }

    static SCHEMA: Schema = Schema {
        counters: N::NAMES,
        latencies: &["lat"],
        maps: &["why"],
    };

    #[test]
    fn snapshots_add_over_time_and_across_workers() {
        let s = Stats::new(&SCHEMA);
        s.count(N::A, 3);
        s.latency(0usize, Duration::from_millis(2));
        for i in 0..40 {
            s.bump(0usize, &format!("reason {i}"));
        }
        s.connected(true);
        let a = s.take(Duration::from_secs(1), 500);
        assert_eq!(a.count(N::A), 3);
        assert_eq!(a.map(0usize).len(), MAX_REASONS + 1);
        assert_eq!(a.map(0usize)["other"], 40 - MAX_REASONS as u64);
        assert!((a.cpu_max_cores - 0.5).abs() < 1e-9);
        let b = s.take(Duration::from_secs(1), 0);
        assert_eq!(b.count(N::A), 0, "take starts a new interval");
        assert_eq!(b.connected, 1, "the gauge stays");
        let mut t = a.clone();
        t.then(&b);
        assert!((t.cpu_max_cores - 0.25).abs() < 1e-9, "{}", t.cpu_max_cores);
        t.beside(&a);
        assert_eq!(t.count(N::A), 6);
        assert_eq!(t.connected, 2);
        assert_eq!(t.wall_ms, 2000);
        assert_eq!(t.cpu_max_cores, 0.5);
        let lat = Summary::of(&t.hist(0usize));
        assert_eq!(lat.count, 2);
        assert!((lat.p50_ms - 2.0).abs() < 0.01);
        let json = serde_json::to_string(&t).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(N::B.name(), "b");
        assert_eq!(back.count(N::B), 0);
    }
}
