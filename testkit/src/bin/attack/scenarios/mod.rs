//! One module per hole of issue 14 (items 1-8), each a list of checks.

mod amplification;
mod bytes;
mod drops;
mod flood;
mod order;
mod targets;
mod trust;
mod upgrade;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::Scale;
use crate::fleet::Fleet;
use crate::table::Row;

/// A scenario's checks, run to completion.
pub type Checks = Pin<Box<dyn Future<Output = Vec<Row>> + Send>>;

/// An item of issue 14 and the scenario that attacks it.
pub struct Item {
    /// Its number in the issue.
    pub number: u8,
    /// What it attacks.
    pub name: &'static str,
    /// Runs its checks.
    pub run: fn(Arc<Fleet>, Scale) -> Checks,
}

/// Every item, in the order they run: the one that SIGKILLs a tracker (7) runs after the
/// simulator (8), last.
pub const ITEMS: &[Item] = &[
    Item {
        number: 1,
        name: "one host fills the fleet",
        run: flood::run,
    },
    Item {
        number: 2,
        name: "memory in bytes",
        run: bytes::run,
    },
    Item {
        number: 3,
        name: "Redis amplification",
        run: amplification::run,
    },
    Item {
        number: 4,
        name: "invented targets",
        run: targets::run,
    },
    Item {
        number: 5,
        name: "Redis trusted blindly",
        run: trust::run,
    },
    Item {
        number: 6,
        name: "before the upgrade",
        run: upgrade::run,
    },
    Item {
        number: 8,
        name: "silent drops",
        run: drops::run,
    },
    Item {
        number: 7,
        name: "order and ghosts",
        run: order::run,
    },
];

/// The `p`-th percentile (0..=100) of `samples` (sorted here), by nearest rank; `None` when
/// there are none.
pub fn percentile(samples: &mut [Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

/// Bytes as KiB with one decimal.
pub fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}
