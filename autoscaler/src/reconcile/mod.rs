//! The loop: each tick observes the fleet, asks every tracker how it is (readiness of the
//! launching ones, metrics of the others, all at once), plans each instance's step along its
//! life ([`plan`]: launching -> serving -> draining -> gone, or replaced when its tracker
//! stopped answering), asks the policy, and acts: launches first, then the steps, then a
//! scale-in.
//!
//! Every step is reconciliation against what the provider and HAProxy say now, so a failed or
//! interrupted step is simply done again next tick, and a restarted autoscaler carries on where
//! the last one stopped: a launching instance becomes ready, a draining one finishes its drain,
//! a server HAProxy forgot on reload is added again. A tick that can't observe takes no action
//! and the next one comes after an exponential backoff. The loop's own state is only caches
//! and measurements (rates, the load's trend, failed polls, boot times): a restart starts them
//! afresh.

mod act;
mod loop_metrics;
pub mod plan;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::haproxy::Haproxy;
use crate::observe::{Delta, Probe, Rates, observe, probe};
use crate::policy::{Action, History, InstanceView, Trend, decide, fleet_load};
use crate::provider::{Phase, Provider};
use crate::status::{Board, InstanceStatus};
use crate::tracker::TrackerClient;
pub use loop_metrics::LoopMetrics;
use plan::{Bounds, Facts, Step, StepKind};

/// Attempts of one launch (same client token) before the tick gives up on it.
const LAUNCH_ATTEMPTS: u32 = 3;
/// Longest pause between ticks after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Pause between ticks while an instance launches, drains or is replaced: a ready instance
/// gets into HAProxy (and a drained one out) within a second instead of a whole poll interval.
const BUSY_POLL: Duration = Duration::from_secs(1);
/// Boot times remembered; the longest of them is the look-ahead's boot time.
const BOOT_SAMPLES: usize = 5;

/// The reconcile loop's state: only caches and measurements; the truth is the provider's and
/// HAProxy's.
pub struct Reconciler<P> {
    config: Config,
    provider: P,
    haproxy: Haproxy,
    client: TrackerClient,
    board: Board,
    metrics: LoopMetrics,
    history: History,
    rates: Rates,
    trend: Trend,
    /// Polls in a row each serving instance's `/metrics` failed.
    failed_polls: HashMap<String, u32>,
    /// The last launches' times from launch to serving.
    boot_times: VecDeque<Duration>,
    /// Whether the last tick saw an instance launching, draining or unhealthy.
    busy: bool,
}

fn age(since: SystemTime) -> Duration {
    SystemTime::now().duration_since(since).unwrap_or_default()
}

impl<P: Provider> Reconciler<P> {
    /// A loop over `provider` and `haproxy`.
    pub fn new(
        config: Config,
        provider: P,
        haproxy: Haproxy,
        client: TrackerClient,
        board: Board,
        metrics: LoopMetrics,
    ) -> Self {
        let trend = Trend::new(Duration::from_secs(config.scaling.trend_window_secs));
        Self {
            config,
            provider,
            haproxy,
            client,
            board,
            metrics,
            history: History::default(),
            rates: Rates::default(),
            trend,
            failed_polls: HashMap::new(),
            boot_times: VecDeque::new(),
            busy: false,
        }
    }

    /// Ticks until `shutdown`; a failed tick is logged, counted and followed by a backoff.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let poll = self.config.poll_interval();
        let mut failures: u32 = 0;
        loop {
            let started = Instant::now();
            self.metrics.ticks.increment(1);
            match self.tick().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.metrics.tick_failures.increment(1);
                    tracing::warn!(error = %e, failures, "tick failed; nothing done");
                    self.board.failed(e.to_string());
                }
            }
            let pause = if failures == 0 {
                let every = if self.busy { poll.min(BUSY_POLL) } else { poll };
                every.saturating_sub(started.elapsed())
            } else {
                (poll * 2u32.saturating_pow(failures.min(8))).min(MAX_BACKOFF.max(poll))
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// The look-ahead: the longest recent boot (or the configured estimate before any), a poll,
    /// and HAProxy's rise checks before a new server takes viewers.
    fn horizon(&self) -> Duration {
        let boot = self
            .boot_times
            .iter()
            .max()
            .copied()
            .unwrap_or(Duration::from_secs(self.config.scaling.boot_estimate_secs));
        let p = &self.config.haproxy.server;
        boot + self.config.poll_interval()
            + Duration::from_millis(p.check_inter_ms.saturating_mul(u64::from(p.check_rise)))
    }

    fn bounds(&self) -> Bounds {
        let s = &self.config.scaling;
        Bounds {
            launch_timeout: Duration::from_secs(s.launch_timeout_secs),
            drain_deadline: Duration::from_secs(s.drain_deadline_secs),
            unhealthy_polls: s.unhealthy_polls,
            reconnect_window_ms: s.max_reconnect_window_secs.saturating_mul(1000),
        }
    }

    /// One tick.
    ///
    /// # Errors
    /// The provider or HAProxy could not be read: no action was taken.
    pub async fn tick(&mut self) -> Result<(), crate::observe::ObserveError> {
        let seen = observe(&self.provider, &self.haproxy).await?;
        // No address yet (an EC2 instance before its network interface): nothing to ask, and
        // 0.0.0.0 would reach this host instead.
        let asks = seen
            .instances
            .iter()
            .filter(|i| i.alive && !i.admin.ip().is_unspecified())
            .map(|i| (i.id.clone(), i.admin, i.phase == Phase::Launching))
            .collect();
        let probes = probe(&self.client, asks).await;
        let at = Instant::now();

        // What the trackers said: rates, and polls failed in a row.
        let mut deltas: HashMap<&str, Delta> = HashMap::new();
        let mut readable: HashSet<&str> = HashSet::new();
        let mut confirmed_draining: HashSet<&str> = HashSet::new();
        for i in &seen.instances {
            match probes.get(&i.id) {
                Some(Probe::Figures(Ok(f), reading)) => {
                    readable.insert(&i.id);
                    self.failed_polls.remove(&i.id);
                    if f.draining {
                        confirmed_draining.insert(&i.id);
                    }
                    if let Some(d) = self.rates.update(&i.id, *reading, *f) {
                        deltas.insert(&i.id, d);
                    }
                }
                Some(Probe::Figures(Err(e), _)) => {
                    self.metrics.scrape_errors.increment(1);
                    let n = self.failed_polls.entry(i.id.clone()).or_insert(0);
                    *n = n.saturating_add(1);
                    tracing::warn!(instance = %i.id, error = %e, failed_polls = *n, "metrics unreadable");
                }
                _ => {}
            }
        }
        self.rates.retain(|id| readable.contains(id));
        self.failed_polls
            .retain(|id, _| seen.instances.iter().any(|i| &i.id == id));

        // Each instance's step, then the policy on the fleet as the steps leave it.
        let bounds = self.bounds();
        let facts: Vec<Facts> = seen
            .instances
            .iter()
            .map(|i| {
                let name = i.server_name();
                Facts {
                    instance: i,
                    server_in_maint: seen.states.get(&name).map(|s| s.in_maint()),
                    sessions: seen.stats.get(&name).map(|s| s.sessions),
                    ready: matches!(probes.get(&i.id), Some(Probe::Ready(Ok(true)))),
                    tracker_draining: confirmed_draining.contains(i.id.as_str()),
                    failed_polls: self.failed_polls.get(&i.id).copied().unwrap_or(0),
                    launched_for: age(i.launched_at),
                    phase_for: age(i.phase_since),
                }
            })
            .collect();
        let still_launching = facts
            .iter()
            .any(|f| plan::plan(f, &bounds, false).after == Some(Phase::Launching));
        let mut steps: Vec<Step> = facts
            .iter()
            .map(|f| plan::plan(f, &bounds, still_launching))
            .collect();
        let mut views = Vec::new();
        let mut statuses = Vec::new();
        for (f, step) in facts.iter().zip(&steps) {
            let i = f.instance;
            let signals = deltas.get(i.id.as_str()).map(|d| d.signals);
            let stat = seen.stats.get(&i.server_name());
            let healthy = !plan::unhealthy(f, &bounds);
            statuses.push(InstanceStatus {
                id: i.id.clone(),
                server: i.server_name(),
                addr: i.addr.to_string(),
                phase: i.phase,
                alive: i.alive,
                healthy,
                failed_polls: f.failed_polls,
                haproxy: stat.map(|s| s.status.clone()),
                sessions: stat.map_or(0, |s| s.sessions),
                signals,
            });
            let Some(phase) = step.after else { continue };
            views.push(InstanceView {
                id: i.id.clone(),
                phase,
                serving_for: (phase == Phase::Serving).then(|| {
                    if i.phase == Phase::Serving {
                        age(i.phase_since)
                    } else {
                        Duration::ZERO
                    }
                }),
                signals: if healthy { signals } else { None },
                healthy,
                sessions: stat.map_or(0, |s| s.sessions),
            });
        }
        let load = fleet_load(&views);
        let viewer_change: f64 = deltas.values().map(|d| d.viewer_change).sum();
        self.trend.record(at, viewer_change, &load);
        let growth = self.trend.growth(at);
        let s = &self.config.scaling;
        let decision = decide(
            &views,
            &self.history,
            &growth,
            self.horizon(),
            at,
            s,
            &self.config.targets,
        );
        if matches!(decision.action, Action::ScaleOut { .. }) {
            // Launch first, then terminate: an unhealthy instance waits for this launch.
            for (f, step) in facts.iter().zip(steps.iter_mut()) {
                if step.kind == StepKind::Replaced {
                    *step = plan::plan(f, &bounds, true);
                }
            }
        }
        self.history.record(
            at,
            decision.recommendation,
            Duration::from_secs(s.scale_in_window_secs),
        );
        let m = &self.metrics;
        m.capacity.set(decision.capacity as f64);
        m.recommendation.set(decision.recommendation as f64);
        m.draining
            .set(views.iter().filter(|v| v.phase == Phase::Draining).count() as f64);
        m.unhealthy.set(decision.unhealthy as f64);
        m.conn_rate.set(decision.load.conn_rate);
        m.msg_rate.set(decision.load.msg_rate);
        m.connections.set(decision.load.connections);
        m.predicted_conn_rate.set(decision.predicted.conn_rate);
        m.predicted_connections.set(decision.predicted.connections);
        m.horizon.set(decision.horizon_secs);
        m.headroom.set(decision.headroom);
        if decision.action != Action::Hold {
            tracing::info!(
                action = ?decision.action,
                reason = decision.reason,
                capacity = decision.capacity,
                recommendation = decision.recommendation,
                conn_rate = decision.load.conn_rate,
                msg_rate = decision.load.msg_rate,
                connections = decision.load.connections,
                predicted_connections = decision.predicted.connections,
                horizon_secs = decision.horizon_secs,
                headroom = decision.headroom,
                dry_run = self.config.dry_run,
                "decision"
            );
        } else {
            tracing::debug!(
                reason = decision.reason,
                capacity = decision.capacity,
                "hold"
            );
        }
        self.busy = decision.unhealthy > 0
            || views.iter().any(|v| v.phase != Phase::Serving)
            || matches!(
                decision.action,
                Action::ScaleOut { .. } | Action::ScaleIn { .. }
            );
        let action = decision.action.clone();
        let reason = decision.reason;
        self.board.tick(decision, statuses);
        if self.config.dry_run {
            return Ok(());
        }
        if let Action::ScaleOut { count } = action {
            for _ in 0..count {
                self.launch(reason).await;
            }
        }
        for (f, step) in facts.iter().zip(&steps) {
            self.run_step(f.instance, step).await;
        }
        self.remove_orphans(&seen).await;
        if let Action::ScaleIn {
            ids,
            reconnect_window_ms,
        } = action
        {
            for i in seen.instances.iter().filter(|i| ids.contains(&i.id)) {
                self.start_drain(i, reconnect_window_ms, reason).await;
            }
        }
        Ok(())
    }
}
