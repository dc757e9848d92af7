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
//! Every accepted connection holds a slot from the moment it is accepted, before its HTTP
//! upgrade: `limits.max_connections` bounds HTTP connections and WebSockets together, so
//! connections that never upgrade can't pile up outside the bound. Past it, a small reserve
//! (`server.reserve_connections`) is still served, only to answer health checks (`/readyz`
//! says 503) and to refuse upgrades with 503; past the reserve a connection is closed at
//! accept.
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
    /// Connections served past `max_connections` (health checks, 503s), and their bound.
    reserve: AtomicUsize,
    max_reserve: usize,
    /// The window this drain spreads reconnects over, in ms, when the admin API chose one;
    /// [`CONFIGURED_WINDOW`]: `drain.reconnect_window_ms`.
    reconnect_window_ms: AtomicU64,
    metrics: Arc<Metrics>,
    registry: Arc<Connections>,
}

impl Lifecycle {
    /// A lifecycle admitting at most `max_connections` connections at once and `max_reserve`
    /// more to refuse; `registry` holds the wakers of their sessions.
    pub fn new(
        (max_connections, max_reserve): (usize, usize),
        metrics: Arc<Metrics>,
        registry: Arc<Connections>,
    ) -> Self {
        Self {
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            sessions: TaskTracker::new(),
            drain_flag: AtomicBool::new(false),
            stop_flag: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            max_connections,
            reserve: AtomicUsize::new(0),
            max_reserve,
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

    /// Open connections holding a slot: WebSockets and HTTP connections not upgraded yet.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// True when this instance should get new viewers: not draining and not full.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.connections() < self.max_connections
    }

    /// Takes a slot for a connection just accepted, from `max_connections` or else from the
    /// reserve; `None` when both are full (the connection is to be closed). `metrics` is the
    /// shard of the thread that will drop the guard. The slot is freed when the guard drops.
    pub fn try_accept(self: &Arc<Self>, metrics: &Arc<Shard>) -> Option<ConnectionGuard> {
        let kind = if take(&self.connections, self.max_connections) {
            Slot::Http
        } else if take(&self.reserve, self.max_reserve) {
            Slot::Reserve
        } else {
            return None;
        };
        metrics.http_connections(1);
        Some(ConnectionGuard {
            lifecycle: Arc::clone(self),
            metrics: Arc::clone(metrics),
            slot: kind,
        })
    }
}

/// Takes one of `max` from `count`, unless all are taken.
fn take(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

/// What a connection's slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// One of `max_connections`, before the upgrade.
    Http,
    /// One of `max_connections`, upgraded: a WebSocket.
    WebSocket,
    /// Past `max_connections`: health checks and refusals only.
    Reserve,
}

/// One accepted connection's slot; dropping it frees the slot.
pub struct ConnectionGuard {
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Shard>,
    slot: Slot,
}

impl ConnectionGuard {
    /// True when the connection holds one of `max_connections` (not the reserve).
    pub fn is_admitted(&self) -> bool {
        self.slot != Slot::Reserve
    }

    /// The connection is upgraded: it counts as a WebSocket from now on. False (and nothing
    /// changes) for a reserve slot, which may not be upgraded.
    pub fn upgrade(&mut self) -> bool {
        match self.slot {
            Slot::Http => {
                self.slot = Slot::WebSocket;
                self.metrics.http_connections(-1);
                self.metrics.connections(1);
                true
            }
            Slot::WebSocket => true,
            Slot::Reserve => false,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let l = &self.lifecycle;
        match self.slot {
            Slot::Http => {
                l.connections.fetch_sub(1, Ordering::AcqRel);
                self.metrics.http_connections(-1);
            }
            Slot::WebSocket => {
                l.connections.fetch_sub(1, Ordering::AcqRel);
                self.metrics.connections(-1);
            }
            Slot::Reserve => {
                l.reserve.fetch_sub(1, Ordering::AcqRel);
                self.metrics.http_connections(-1);
            }
        }
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
    fn admits_up_to_the_limit_then_the_reserve_and_frees_on_drop() {
        let metrics = Arc::new(Metrics::new());
        let l = Arc::new(Lifecycle::new((2, 1), Arc::clone(&metrics), registry()));
        let shard = metrics.worker_shard();
        let mut a = l.try_accept(&shard).expect("a slot");
        let b = l.try_accept(&shard).expect("a slot");
        assert!(a.is_admitted() && b.is_admitted());
        assert!(a.upgrade());
        assert_eq!(metrics.open_connections(), 1, "one upgraded");
        let mut reserve = l.try_accept(&shard).expect("the reserve");
        assert!(!reserve.is_admitted() && !reserve.upgrade());
        assert!(l.try_accept(&shard).is_none(), "both full");
        assert!(!l.is_ready());
        drop(a);
        assert_eq!(metrics.open_connections(), 0);
        assert!(l.is_ready());
        drop(reserve);
        assert!(l.try_accept(&shard).is_some_and(|g| g.is_admitted()));
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
        drop(b);
        assert_eq!(l.connections(), 0);
    }

    #[test]
    fn a_drain_without_a_window_keeps_the_configured_one() {
        let metrics = Arc::new(Metrics::new());
        let l = Lifecycle::new((1, 1), metrics, registry());
        l.start_drain();
        l.start_drain_within(1);
        assert_eq!(l.reconnect_window_ms(7_000), 7_000);
    }
}
