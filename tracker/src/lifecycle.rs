//! Drain and shutdown: who may connect, and how viewers are let go.
//!
//! Two phases order the end of an instance. The drain starts first (SIGTERM or
//! `POST /admin/drain`): readiness turns 503, new viewers are refused, and every session tells
//! its viewer to `reconnect` after a jittered delay, then closes with 1012. The stop comes when
//! no session is left or at the drain deadline: remaining sessions close at once. Sessions
//! learn of either by a flag they read when woken, and every session is woken when a phase
//! starts: no session polls a shared token or lock on each wake-up. Sessions run on a
//! [`TaskTracker`] because the HTTP server does not wait for upgraded connections.
//!
//! An autoscaler that drains this instance may choose how long its viewers' reconnects are
//! spread over (`POST /admin/drain?reconnect_window_ms=`), sized to what the instances that
//! receive them can take; the window is set once, before the drain starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connections::Connections;
use crate::metrics::{Metrics, Shard};

/// `reconnect_window_ms` while no drain chose its own: the configured one applies.
const CONFIGURED_WINDOW: u64 = u64::MAX;

/// Shared shutdown state of one tracker.
pub struct Lifecycle {
    /// Cancelled when the drain starts.
    pub draining: CancellationToken,
    /// Cancelled when every remaining session must close now.
    pub stop: CancellationToken,
    /// Every session task, so the tracker can wait for them.
    pub sessions: TaskTracker,
    drain_flag: AtomicBool,
    stop_flag: AtomicBool,
    connections: AtomicUsize,
    max_connections: usize,
    /// The window this drain spreads reconnects over, in ms, when the admin API chose one;
    /// [`CONFIGURED_WINDOW`]: `drain.reconnect_window_ms`.
    reconnect_window_ms: AtomicU64,
    metrics: Arc<Metrics>,
    registry: Arc<Connections>,
}

impl Lifecycle {
    /// A lifecycle admitting at most `max_connections` viewers at once; `registry` holds the
    /// wakers of their sessions.
    pub fn new(max_connections: usize, metrics: Arc<Metrics>, registry: Arc<Connections>) -> Self {
        Self {
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            sessions: TaskTracker::new(),
            drain_flag: AtomicBool::new(false),
            stop_flag: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            max_connections,
            reconnect_window_ms: AtomicU64::new(CONFIGURED_WINDOW),
            metrics,
            registry,
        }
    }

    /// Starts the drain with its viewers' reconnects spread over `window_ms`; a drain already
    /// started keeps its window.
    pub fn start_drain_within(&self, window_ms: u64) {
        if !self.is_draining() {
            // Stored before the flag: a session that sees the drain sees its window.
            self.reconnect_window_ms
                .store(window_ms.min(CONFIGURED_WINDOW - 1), Ordering::Release);
            self.start_drain();
        }
    }

    /// The window this drain spreads reconnects over, in ms: the one
    /// [`start_drain_within`](Self::start_drain_within) set, else `configured`.
    pub fn reconnect_window_ms(&self, configured: u64) -> u64 {
        match self.reconnect_window_ms.load(Ordering::Acquire) {
            CONFIGURED_WINDOW => configured,
            chosen => chosen,
        }
    }

    /// Starts the drain and wakes every session to see it; idempotent.
    pub fn start_drain(&self) {
        if !self.drain_flag.swap(true, Ordering::AcqRel) {
            self.metrics.set_draining(true);
            self.draining.cancel();
            self.registry.wake_all();
        }
    }

    /// Closes every remaining session now; idempotent.
    pub fn stop_sessions(&self) {
        if !self.stop_flag.swap(true, Ordering::AcqRel) {
            self.stop.cancel();
            self.registry.wake_all();
        }
    }

    /// True while draining.
    pub fn is_draining(&self) -> bool {
        // A flag written once and read by every session: it stays in every core's cache.
        self.drain_flag.load(Ordering::Acquire)
    }

    /// True once sessions must close now.
    pub fn is_stopping(&self) -> bool {
        self.stop_flag.load(Ordering::Acquire)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// True when this instance should get new viewers: not draining and not full.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.connections() < self.max_connections
    }

    /// Takes a connection slot, or `None` at the limit; `metrics` is the shard of the thread
    /// that will drop the guard. The slot is freed when the guard drops.
    pub fn try_admit(self: &Arc<Self>, metrics: &Arc<Shard>) -> Option<ConnectionGuard> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .ok()?;
        metrics.connections(1);
        Some(ConnectionGuard {
            lifecycle: Arc::clone(self),
            metrics: Arc::clone(metrics),
        })
    }
}

/// One admitted connection; dropping it frees the slot.
pub struct ConnectionGuard {
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Shard>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.lifecycle.connections.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::{AwaitLimits, OutboxLimits};
    use swarmtrack_protocol::InstanceId;

    fn registry() -> Arc<Connections> {
        Arc::new(Connections::new(
            InstanceId(1),
            1,
            OutboxLimits {
                signals: 1,
                bytes: 1,
            },
            AwaitLimits {
                ttl_secs: 1,
                max: 1,
            },
        ))
    }

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let metrics = Arc::new(Metrics::new());
        let l = Arc::new(Lifecycle::new(2, Arc::clone(&metrics), registry()));
        let shard = metrics.worker_shard();
        let a = l.try_admit(&shard);
        let b = l.try_admit(&shard);
        assert!(a.is_some() && b.is_some());
        assert!(l.try_admit(&shard).is_none());
        assert!(!l.is_ready());
        assert_eq!(metrics.open_connections(), 2);
        drop(a);
        assert!(l.is_ready());
        assert!(l.try_admit(&shard).is_some());
        assert_eq!(l.reconnect_window_ms(10_000), 10_000);
        l.start_drain_within(2_500);
        assert!(!l.is_ready() && l.is_draining() && !l.is_stopping());
        assert_eq!(l.reconnect_window_ms(10_000), 2_500);
        // Already draining: the first window stays.
        l.start_drain_within(9_000);
        l.start_drain();
        assert_eq!(l.reconnect_window_ms(10_000), 2_500);
        l.stop_sessions();
        assert!(l.is_stopping() && l.stop.is_cancelled());
    }

    #[test]
    fn a_drain_without_a_window_keeps_the_configured_one() {
        let metrics = Arc::new(Metrics::new());
        let l = Lifecycle::new(1, metrics, registry());
        l.start_drain();
        l.start_drain_within(1);
        assert_eq!(l.reconnect_window_ms(7_000), 7_000);
    }
}
