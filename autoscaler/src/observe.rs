//! One tick's view of the fleet: the provider's instances, HAProxy's `show stat` and
//! `show servers state` for the backend, and every serving tracker's `/metrics`; and the rates
//! derived from counter deltas between ticks.
//!
//! A tracker that restarted starts its counters again from zero: a counter lower than the
//! last sample counts as a reset, and the delta is the new value (what was counted since).

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

/// Reads `/metrics` of every `(id, admin address)` at once; each read is bounded by the
/// client's timeout.
pub async fn scrape(
    client: &TrackerClient,
    targets: Vec<(String, SocketAddr)>,
) -> HashMap<String, Result<TrackerFigures, TrackerError>> {
    let mut set = JoinSet::new();
    for (id, admin) in targets {
        let client = client.clone();
        set.spawn(async move { (id, client.figures(admin).await) });
    }
    let mut out = HashMap::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((id, figures)) = joined {
            out.insert(id, figures);
        }
    }
    out
}

/// The last sample of each instance's counters, to turn them into rates.
#[derive(Debug, Default)]
pub struct Rates {
    last: HashMap<String, (Instant, TrackerFigures)>,
}

impl Rates {
    /// Records `figures` of instance `id` sampled at `at` and returns its signals: `None` for
    /// the first sample (no rate yet) or one taken at the same instant.
    pub fn update(&mut self, id: &str, at: Instant, figures: TrackerFigures) -> Option<Signals> {
        let previous = self.last.insert(id.to_string(), (at, figures));
        let (then, before) = previous?;
        let secs = at.checked_duration_since(then)?.as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let delta = |now: f64, before: f64| if now < before { now } else { now - before };
        Some(Signals {
            conn_rate: delta(figures.connections_opened, before.connections_opened) / secs,
            msg_rate: delta(figures.messages_received, before.messages_received) / secs,
            connections: figures.connections,
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

    fn figures(opened: f64, received: f64, connections: f64) -> TrackerFigures {
        TrackerFigures {
            connections_opened: opened,
            messages_received: received,
            connections,
            draining: false,
        }
    }

    #[test]
    fn rates_from_deltas_and_resets() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        assert_eq!(r.update("a", t0, figures(100.0, 1000.0, 5.0)), None);
        let s = r
            .update(
                "a",
                t0 + Duration::from_secs(2),
                figures(140.0, 1400.0, 7.0),
            )
            .unwrap();
        assert_eq!((s.conn_rate, s.msg_rate, s.connections), (20.0, 200.0, 7.0));
        // Restarted tracker: its counters start again from 0.
        let s = r
            .update("a", t0 + Duration::from_secs(4), figures(10.0, 30.0, 2.0))
            .unwrap();
        assert_eq!((s.conn_rate, s.msg_rate), (5.0, 15.0));
        r.retain(|id| id != "a");
        assert_eq!(
            r.update("a", t0 + Duration::from_secs(6), figures(20.0, 40.0, 2.0)),
            None
        );
    }
}
