//! Drain and shutdown: who may connect, and how viewers are let go.
//!
//! Two tokens order the end of an instance. `draining` is cancelled first (SIGTERM or
//! `POST /admin/drain`): readiness turns 503, new viewers are refused, and every session tells
//! its viewer to `reconnect` after a jittered delay, then closes with 1012. `stop` is cancelled
//! when no session is left or at the drain deadline: remaining sessions close at once. Sessions
//! run on a [`TaskTracker`] because axum does not wait for upgraded connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{Metrics, Origin};

/// Shared shutdown state of one tracker.
pub struct Lifecycle {
    /// Cancelled when the drain starts.
    pub draining: CancellationToken,
    /// Cancelled when every remaining session must close now.
    pub stop: CancellationToken,
    /// Every session task, so the tracker can wait for them.
    pub sessions: TaskTracker,
    connections: AtomicUsize,
    max_connections: usize,
    metrics: Arc<Metrics>,
    /// This drain's reconnect window in ms, when the admin API chose one; `u64::MAX`: the
    /// configured `drain.reconnect_window_ms`.
    reconnect_window_ms: AtomicU64,
}

impl Lifecycle {
    /// A lifecycle admitting at most `max_connections` viewers at once.
    pub fn new(max_connections: usize, stop: CancellationToken, metrics: Arc<Metrics>) -> Self {
        Self {
            draining: CancellationToken::new(),
            stop,
            sessions: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            max_connections,
            metrics,
            reconnect_window_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Starts the drain with its viewers' reconnects spread over `window_ms` (an autoscaler
    /// sizes it to what the other instances can take); idempotent: a drain already started
    /// keeps its window.
    pub fn start_drain_within(&self, window_ms: u64) {
        if !self.is_draining() {
            self.reconnect_window_ms.store(window_ms, Ordering::Relaxed);
            self.start_drain();
        }
    }

    /// The window this drain spreads reconnects over, in ms: the one
    /// [`start_drain_within`](Self::start_drain_within) set, else `configured`.
    pub fn reconnect_window_ms(&self, configured: u64) -> u64 {
        match self.reconnect_window_ms.load(Ordering::Relaxed) {
            u64::MAX => configured,
            chosen => chosen,
        }
    }

    /// Starts the drain; idempotent.
    pub fn start_drain(&self) {
        if !self.draining.is_cancelled() {
            self.metrics.draining.set(1.0);
            self.draining.cancel();
        }
    }

    /// True while draining.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// True when this instance should get new viewers: not draining and not full.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.connections() < self.max_connections
    }

    /// Takes a connection slot for a viewer of `origin`, or `None` at the limit. The slot is
    /// freed when the guard drops.
    pub fn try_admit(self: &Arc<Self>, origin: Origin) -> Option<ConnectionGuard> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .ok()?;
        self.metrics.connections.increment(1.0);
        Some(ConnectionGuard {
            lifecycle: Arc::clone(self),
            origin,
            joined: false,
        })
    }
}

/// One admitted connection; dropping it frees the slot (and its place in `tracker_viewers`).
pub struct ConnectionGuard {
    lifecycle: Arc<Lifecycle>,
    origin: Origin,
    joined: bool,
}

impl ConnectionGuard {
    /// The connection's first join or announce succeeded: from now on it is a viewer
    /// (`tracker_viewers`, `tracker_viewers_joined_total`). Later calls change nothing.
    pub fn viewer_joined(&mut self) {
        if !self.joined {
            self.joined = true;
            self.lifecycle.metrics.viewer_joined(self.origin);
            self.lifecycle.metrics.viewers.increment(1.0);
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.lifecycle.connections.fetch_sub(1, Ordering::AcqRel);
        self.lifecycle.metrics.connections.decrement(1.0);
        if self.joined {
            self.lifecycle.metrics.viewers.decrement(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let l = Arc::new(Lifecycle::new(
            2,
            CancellationToken::new(),
            Arc::new(Metrics::new()),
        ));
        let a = l.try_admit(Origin::New);
        let b = l.try_admit(Origin::Reconnect);
        assert!(a.is_some() && b.is_some());
        assert!(l.try_admit(Origin::New).is_none());
        assert!(!l.is_ready());
        drop(a);
        assert!(l.is_ready());
        assert!(l.try_admit(Origin::New).is_some());
        assert_eq!(l.reconnect_window_ms(10_000), 10_000);
        l.start_drain_within(2_500);
        assert!(!l.is_ready());
        assert_eq!(l.reconnect_window_ms(10_000), 2_500);
        // Already draining: the first window stays.
        l.start_drain_within(9_000);
        assert_eq!(l.reconnect_window_ms(10_000), 2_500);
    }

    #[test]
    fn a_viewer_counts_once_from_its_first_join_until_it_goes() {
        let metrics = Arc::new(Metrics::new());
        let l = Arc::new(Lifecycle::new(
            4,
            CancellationToken::new(),
            Arc::clone(&metrics),
        ));
        let value = |series: &str| {
            metrics
                .render()
                .lines()
                .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let mut a = l.try_admit(Origin::Reconnect).expect("slot");
        let _idle = l.try_admit(Origin::New).expect("slot");
        a.viewer_joined();
        a.viewer_joined();
        assert_eq!(value("tracker_viewers "), 1.0);
        assert_eq!(
            value(r#"tracker_viewers_joined_total{origin="reconnect"} "#),
            1.0
        );
        assert_eq!(value(r#"tracker_viewers_joined_total{origin="new"} "#), 0.0);
        drop(a);
        assert_eq!(value("tracker_viewers "), 0.0);
    }
}
