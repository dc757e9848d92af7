//! One tick's view of the fleet: the provider's instances, HAProxy's `show stat` and
//! `show servers state` for the backend, each launching tracker's `/readyz` and every other
//! tracker's `/metrics` (all at once); and the rates derived from counter deltas between
//! ticks.
//!
//! A tracker that restarted starts its counters again from zero: a counter lower than the
//! last sample counts as a reset, and the delta is the new value (what was counted since).
//!
//! A tracker counts up to the moment it renders `/metrics`, somewhere between the request and
//! the answer; on a busy host that round trip can take seconds. So each reading is timed by
//! its own request and answer (not by the tick, whose slowest probe can come seconds after
//! another's answer), and a rate spans at least [`MIN_RATE_SPAN`] and at least
//! [`SPAN_PER_UNCERTAINTY`] times the readings' round trips, back over the instance's recent
//! readings. Rates over one short tick read a two-second stall followed by a fast answer as a
//! burst: measured on a loaded host, 283 new viewers/s for an arrival rate of 20, and a fleet
//! launched for them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
    /// A serving or draining instance's `/metrics`, and when it was read.
    Figures(Result<TrackerFigures, TrackerError>, Reading),
}

/// When a tracker's figures were read: the request went out at `sent` and the answer came at
/// `received`; the tracker rendered them in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// The request went out.
    pub sent: Instant,
    /// The answer came.
    pub received: Instant,
}

impl Reading {
    /// The best guess of when the figures were rendered: the middle of the round trip.
    fn at(&self) -> Instant {
        self.sent + self.received.saturating_duration_since(self.sent) / 2
    }

    /// Half the round trip: how far off [`at`](Self::at) may be.
    fn uncertainty(&self) -> Duration {
        self.received.saturating_duration_since(self.sent) / 2
    }
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
                let sent = Instant::now();
                let figures = client.figures(admin).await;
                Probe::Figures(
                    figures,
                    Reading {
                        sent,
                        received: Instant::now(),
                    },
                )
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

/// The shortest span of a rate.
pub const MIN_RATE_SPAN: Duration = Duration::from_secs(5);

/// A rate spans at least this many times the uncertainty of its two readings' times (half
/// each round trip), so timing errors move it by at most a tenth.
pub const SPAN_PER_UNCERTAINTY: u32 = 10;

/// How long readings are kept to span a rate over, and at most how many.
const HISTORY: Duration = Duration::from_secs(60);
const MAX_READINGS: usize = 120;

/// Each instance's recent readings, to turn counters into rates.
#[derive(Debug, Default)]
pub struct Rates {
    readings: HashMap<String, VecDeque<(Reading, TrackerFigures)>>,
}

impl Rates {
    /// Records `figures` of instance `id`, read as `reading` says, and returns its signals:
    /// rates back to the latest earlier reading that spans enough (else the oldest kept), the
    /// open viewers now and their change since the last reading. `None` for the first reading
    /// (no rate yet) or one no later than the last.
    pub fn update(&mut self, id: &str, reading: Reading, figures: TrackerFigures) -> Option<Delta> {
        let history = self.readings.entry(id.to_string()).or_default();
        let now = reading.at();
        let Some(&(last, last_figures)) = history.back() else {
            history.push_back((reading, figures));
            return None;
        };
        if now <= last.at() {
            return None;
        }
        let enough = |r: &Reading| {
            let span = now.saturating_duration_since(r.at());
            span >= MIN_RATE_SPAN
                && span >= (r.uncertainty() + reading.uncertainty()) * SPAN_PER_UNCERTAINTY
        };
        let &(base, before) = history
            .iter()
            .rev()
            .find(|(r, _)| enough(r))
            .or(history.front())?;
        let secs = now.saturating_duration_since(base.at()).as_secs_f64();
        let delta = |now: f64, before: f64| if now < before { now } else { now - before };
        let out = Delta {
            signals: Signals {
                conn_rate: delta(figures.joined_new, before.joined_new) / secs,
                msg_rate: delta(figures.signals, before.signals) / secs,
                connections: figures.viewers,
                moved_rate: delta(figures.joined_moved, before.joined_moved) / secs,
            },
            viewer_change: figures.viewers - last_figures.viewers,
        };
        history.push_back((reading, figures));
        // Keep what the next rate may span back to: the readings of the last minute, and the
        // latest one that spans enough even if older.
        while history.len() > MAX_READINGS
            || history.len() > 2
                && history.get(1).is_some_and(|(r, _)| {
                    now.saturating_duration_since(r.at()) > HISTORY || enough(r)
                })
        {
            history.pop_front();
        }
        Some(out)
    }

    /// Forgets the readings of every instance not in `keep` (gone, or unreadable this tick:
    /// its next rate then starts afresh instead of spanning the gap).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.readings.retain(|id, _| keep(id));
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

    /// A reading at `secs` after `t0` with a round trip of `rtt_ms` around it.
    fn read(t0: Instant, secs: f64, rtt_ms: u64) -> Reading {
        let at = t0 + Duration::from_secs_f64(secs);
        let half = Duration::from_millis(rtt_ms) / 2;
        Reading {
            sent: at - half,
            received: at + half,
        }
    }

    #[test]
    fn rates_from_deltas_and_resets() {
        let mut r = Rates::default();
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            r.update("a", read(t0, 0.0, 0), figures(100.0, 1000.0, 5.0)),
            None
        );
        // Nothing older spans 5 s yet: the rate runs back to the oldest reading.
        let d = r
            .update("a", read(t0, 2.0, 0), figures(140.0, 1400.0, 7.0))
            .unwrap();
        let s = d.signals;
        assert_eq!(
            (s.conn_rate, s.msg_rate, s.connections, s.moved_rate),
            (20.0, 200.0, 7.0, 2.0)
        );
        assert_eq!(d.viewer_change, 2.0);
        // At 6 s the reading of 0 s is the latest that spans 5 s.
        let d = r
            .update("a", read(t0, 6.0, 0), figures(160.0, 1600.0, 6.0))
            .unwrap();
        assert_eq!(d.signals.conn_rate, 10.0);
        assert_eq!(d.viewer_change, -1.0);
        // At 8 s, the one of 2 s.
        let d = r
            .update("a", read(t0, 8.0, 0), figures(170.0, 1700.0, 6.0))
            .unwrap();
        assert_eq!(d.signals.conn_rate, 5.0);
        // Restarted tracker: its counters start again from 0, its viewers are gone.
        let d = r
            .update("a", read(t0, 14.0, 0), figures(12.0, 30.0, 2.0))
            .unwrap();
        assert_eq!((d.signals.conn_rate, d.signals.msg_rate), (2.0, 5.0));
        assert_eq!(d.viewer_change, -4.0);
        r.retain(|id| id != "a");
        assert_eq!(
            r.update("a", read(t0, 16.0, 0), figures(20.0, 40.0, 2.0)),
            None
        );
    }

    #[test]
    fn a_slow_answer_after_a_stall_is_no_burst() {
        let mut r = Rates::default();
        let t0 = Instant::now() + Duration::from_secs(10);
        // 10 new viewers a second, read every second; the reading at 7 s took 2 s to come.
        let joined = |secs: f64| figures(10.0 * secs, 0.0, 1.0);
        let mut rates = Vec::new();
        for k in 0..12u32 {
            let secs = f64::from(k);
            let rtt = if k == 7 { 2_000 } else { 20 };
            if let Some(d) = r.update("a", read(t0, secs, rtt), joined(secs)) {
                rates.push(d.signals.conn_rate);
            }
        }
        assert_eq!(rates.len(), 11);
        for rate in rates {
            assert!((rate - 10.0).abs() < 1e-6, "{rate}");
        }
        // Timed by the answer only, the 7 s reading (rendered at 7 s, answered at 8 s) and the
        // next (8 s, answered at once) would be 10 new viewers over 0.01 s: 1,000/s.
    }

    #[test]
    fn the_span_grows_with_the_round_trips() {
        let mut r = Rates::default();
        let t0 = Instant::now() + Duration::from_secs(10);
        for k in 0..20u32 {
            let secs = f64::from(k);
            // Every answer takes 1.2 s: the rate must span 12 s.
            let _ = r.update("a", read(t0, secs, 1_200), figures(10.0 * secs, 0.0, 1.0));
        }
        let history = &r.readings["a"];
        let span = history
            .back()
            .unwrap()
            .0
            .at()
            .duration_since(history.front().unwrap().0.at());
        assert_eq!(span, Duration::from_secs(12));
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
    async fn each_reading_is_timed_by_its_own_request_and_answer() {
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
        let reading = |id: &str| match &probes[id] {
            Probe::Figures(Ok(f), reading) => {
                assert_eq!((f.joined_new, f.viewers), (7.0, 3.0));
                *reading
            }
            other => panic!("{id}: {other:?}"),
        };
        let (fast, slow) = (reading("fast"), reading("slow"));
        assert!(asked <= fast.sent && fast.sent <= fast.received);
        // The slow one: asked before the release, answered after it.
        assert!(asked <= slow.sent && slow.sent <= released && slow.received >= released);
    }
}
