//! A fixed-bucket histogram for one shard: a count per bucket and the sum of the values.

use std::sync::atomic::{AtomicU64, Ordering};

/// Latency buckets for `_seconds` histograms: 50 µs to 5 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Signals per published batch.
pub const BATCH_MESSAGES_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Bytes per published batch.
pub const BATCH_BYTES_BUCKETS: [f64; 7] = [
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
];

/// Counts per bucket (not cumulative; the last one is `+Inf`) and the sum, as `f64` bits.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Adds one value; `single_writer` as in [`super::Shard`].
    pub fn record(&self, v: f64, single_writer: bool) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        let Some(count) = self.counts.get(i) else {
            return;
        };
        if single_writer {
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + v;
            self.sum.store(sum.to_bits(), Ordering::Relaxed);
        } else {
            count.fetch_add(1, Ordering::Relaxed);
            let _ = self
                .sum
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                    Some((f64::from_bits(bits) + v).to_bits())
                });
        }
    }

    /// The upper bounds.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// The count of bucket `i` (`bounds().len()` is `+Inf`).
    pub fn count(&self, i: usize) -> u64 {
        self.counts.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The sum of the values.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}
