//! One tick's view of the fleet: the provider's instances, HAProxy's `show stat` and
//! `show servers state` for the backend, each launching tracker's `/readyz` and every other
//! tracker's `/metrics` (all at once); and the rates derived from counter deltas between
//! ticks.
//!
//! A tracker that restarted starts its counters again from zero: a counter lower than the
//! last sample counts as a reset, and the delta is the new value (what was counted since).
//!
//! A rate's interval runs from one answer of that tracker to its next, each timed when it
//! arrived: not from tick to tick. The probes of a tick answer at different times, and on a
//! busy host one can take seconds; timing every answer by the slowest would stretch one
//! interval and squeeze the next, and a squeezed interval reads as a burst (measured: 472 new
//! viewers/s read for an arrival rate of 28, which launched three instances for nothing).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::task::JoinSet;

use crate::haproxy::{Haproxy, HaproxyError, ServerStat, ServerState};
use crate::policy::Signals;
use crate::provider::{Instance, Provider, ProviderError};
use crate::tracker::{TrackerClient, TrackerError, TrackerFigures};

/// A failure that leaves the tick without a trustworthy view (no action is taken on it).
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The provider couldn't list the instances.
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
    /// HAProxy's runtime API failed.
    #[error(transparent)]
    Haproxy(#[from] HaproxyError),
}

/// What one tick saw.
#[derive(Clone, Debug)]
pub struct Observation {
    /// When it was taken.
    pub at: Instant,
    /// The fleet's instances.
    pub instances: Vec<Instance>,
    /// The backend's servers by name, from `show stat`.
    pub stats: HashMap<String, ServerStat>,
    /// The backend's servers by name, from `show servers state`.
    pub states: HashMap<String, ServerState>,
}

/// Reads the provider and HAProxy.
///
/// # Errors
/// Either can't be read.
pub async fn observe<P: Provider>(
    provider: &P,
    haproxy: &Haproxy,
) -> Result<Observation, ObserveError> {
    let instances = provider.list().await?;
    let stats = haproxy
        .show_stat()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let states = haproxy
        .show_servers_state()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    Ok(Observation {
        at: Instant::now(),
        instances,
        stats,
        states,
    })
}

/// What one tick learned from one tracker.
#[derive(Debug)]
pub enum Probe {
    /// A launching instance's `/readyz`: `true` on 200.
    Ready(Result<bool, TrackerError>),
    /// A serving or draining instance's `/metrics`, and when the answer came (the sample's
    /// time for its rates).
    Figures(Result<TrackerFigures, TrackerError>, Instant),
}

/// Asks every `(id, admin address, what)` at once (`what`: `true` for readiness, else
/// metrics); each request is bounded by the client's timeout.
pub async fn probe(
    client: &TrackerClient,
    targets: Vec<(String, SocketAddr, bool)>,
) -> HashMap<String, Probe> {
    let mut set = JoinSet::new();
    for (id, admin, readiness) in targets {
        let client = client.clone();
        set.spawn(async move {
            let probe = if readiness {
                Probe::Ready(client.ready(admin).await)
            } else {
                let figures = client.figures(admin).await;
                Probe::Figures(figures, Instant::now())
            };
            (id, probe)
        });
    }
    let mut out = HashMap::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((id, probe)) = joined {
            out.insert(id, probe);
        }
    }
    out
}

/// One instance's figures between two ticks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delta {
    /// Its signals (rates over the interval, open viewers now).
    pub signals: Signals,
    /// Open viewers now less at the last sample.
    pub viewer_change: f64,
}

/// The last sample of each instance's counters, to turn them into rates.
#[derive(Debug, Default)]
pub struct Rates {
    last: HashMap<String, (Instant, TrackerFigures)>,
}

impl Rates {
    /// Records `figures` of instance `id` sampled at `at` (when its answer came) and returns
    /// its signals: `None` for the first sample (no rate yet) or one taken at the same instant.
    pub fn update(&mut self, id: &str, at: Instant, figures: TrackerFigures) -> Option<Delta> {
        let previous = self.last.insert(id.to_string(), (at, figures));
        let (then, before) = previous?;
        let secs = at.checked_duration_since(then)?.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let delta = |now: f64, before: f64| if now < before { now } else { now - before };
        Some(Delta {
            signals: Signals {
                conn_rate: delta(figures.joined_new, before.joined_new) / secs,
                msg_rate: delta(figures.signals, before.signals) / secs,
                connections: figures.viewers,
                moved_rate: delta(figures.joined_moved, before.joined_moved) / secs,
            },
            viewer_change: figures.viewers - before.viewers,
        })
    }

    /// Forgets the samples of every instance not in `keep` (gone, or unreadable this tick:
    /// its next rate then starts afresh instead of spanning the gap).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.last.retain(|id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    fn figures(joined: f64, signals: f64, viewers: f64) -> TrackerFigures {
        TrackerFigures {
            joined_new: joined,
            joined_moved: joined / 10.0,
            signals,
            viewers,
            connections: viewers * 2.0,
            draining: false,
        }
    }

    #[test]
    fn rates_from_deltas_and_resets() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        assert_eq!(r.update("a", t0, figures(100.0, 1000.0, 5.0)), None);
        let d = r
            .update(
                "a",
                t0 + Duration::from_secs(2),
                figures(140.0, 1400.0, 7.0),
            )
            .unwrap();
        let s = d.signals;
        assert_eq!(
            (s.conn_rate, s.msg_rate, s.connections, s.moved_rate),
            (20.0, 200.0, 7.0, 2.0)
        );
        assert_eq!(d.viewer_change, 2.0);
        // Restarted tracker: its counters start again from 0, its viewers are gone.
        let d = r
            .update("a", t0 + Duration::from_secs(4), figures(10.0, 30.0, 2.0))
            .unwrap();
        assert_eq!((d.signals.conn_rate, d.signals.msg_rate), (5.0, 15.0));
        assert_eq!(d.viewer_change, -5.0);
        r.retain(|id| id != "a");
        assert_eq!(
            r.update("a", t0 + Duration::from_secs(6), figures(20.0, 40.0, 2.0)),
            None
        );
    }

    /// A tracker whose `/metrics` answers once `gate` (if any) is notified: a slow one on a
    /// busy host. On a free port; `hits` counts the requests that arrived.
    async fn tracker(
        gate: Option<std::sync::Arc<tokio::sync::Notify>>,
        hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let gate = gate.clone();
                let hits = std::sync::Arc::clone(&hits);
                async move {
                    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if let Some(gate) = gate {
                        gate.notified().await;
                    }
                    "tracker_viewers_joined_total{origin=\"new\"} 7\ntracker_viewers 3\n"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_answer_is_timed_when_it_comes_not_when_the_slowest_does() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let fast = tracker(None, Arc::clone(&hits)).await;
        let slow = tracker(Some(Arc::clone(&gate)), Arc::clone(&hits)).await;
        let client = TrackerClient::new(Duration::from_secs(30), None);
        let asked = Instant::now();
        let probing = tokio::spawn(async move {
            let targets = vec![("fast".into(), fast, false), ("slow".into(), slow, false)];
            probe(&client, targets).await
        });
        // Both asked; the slow one answers only when released.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hits.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "the probes never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let released = Instant::now();
        gate.notify_one();
        let probes = probing.await.unwrap();
        let at = |id: &str| match &probes[id] {
            Probe::Figures(Ok(f), at) => {
                assert_eq!((f.joined_new, f.viewers), (7.0, 3.0));
                *at
            }
            other => panic!("{id}: {other:?}"),
        };
        assert!(at("fast") >= asked);
        assert!(at("slow") >= released);
    }
}
