//! The loop: each tick observes the fleet, moves every instance one step along its life
//! (launching -> serving -> draining -> gone), asks the policy, and acts.
//!
//! Every step is reconciliation against what the provider and HAProxy say now, so a failed or
//! interrupted step is simply done again next tick, and a restarted autoscaler carries on where
//! the last one stopped: a launching instance becomes ready, a draining one finishes its drain,
//! a server HAProxy forgot on reload is added again. A tick that can't observe takes no action
//! and the next one comes after an exponential backoff.

use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Gauge};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::haproxy::{AdminState, Haproxy};
use crate::observe::{Observation, Rates, observe, scrape};
use crate::policy::{Action, History, InstanceView, decide};
use crate::provider::{Instance, Phase, Provider};
use crate::status::{Board, InstanceStatus};
use crate::tracker::TrackerClient;

/// Attempts of one launch (same client token) before the tick gives up on it.
const LAUNCH_ATTEMPTS: u32 = 3;
/// Longest pause between ticks after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Pause between ticks while an instance launches or drains: a ready instance gets into
/// HAProxy (and a drained one out) within a second instead of a whole poll interval.
const BUSY_POLL: Duration = Duration::from_secs(1);

/// The autoscaler's own metrics; handles made once.
#[derive(Clone)]
pub struct LoopMetrics {
    ticks: Counter,
    tick_failures: Counter,
    launches: Counter,
    launch_failures: Counter,
    drains: Counter,
    removals: Counter,
    readds: Counter,
    step_errors: Counter,
    scrape_errors: Counter,
    capacity: Gauge,
    recommendation: Gauge,
    draining: Gauge,
    conn_rate: Gauge,
    msg_rate: Gauge,
    connections: Gauge,
}

impl LoopMetrics {
    /// Registers every series with the current (local) recorder.
    pub fn register() -> Self {
        Self {
            ticks: metrics::counter!("autoscaler_ticks_total"),
            tick_failures: metrics::counter!("autoscaler_tick_failures_total"),
            launches: metrics::counter!("autoscaler_launches_total"),
            launch_failures: metrics::counter!("autoscaler_launch_failures_total"),
            drains: metrics::counter!("autoscaler_drains_total"),
            removals: metrics::counter!("autoscaler_removals_total"),
            readds: metrics::counter!("autoscaler_servers_readded_total"),
            step_errors: metrics::counter!("autoscaler_step_errors_total"),
            scrape_errors: metrics::counter!("autoscaler_scrape_errors_total"),
            capacity: metrics::gauge!("autoscaler_instances"),
            recommendation: metrics::gauge!("autoscaler_recommended_instances"),
            draining: metrics::gauge!("autoscaler_draining_instances"),
            conn_rate: metrics::gauge!("autoscaler_fleet_conn_rate"),
            msg_rate: metrics::gauge!("autoscaler_fleet_msg_rate"),
            connections: metrics::gauge!("autoscaler_fleet_connections"),
        }
    }
}

/// The reconcile loop's state: only caches (rates, history); the truth is the provider's and
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
    /// Whether the last tick saw an instance launching or draining.
    busy: bool,
    /// Until when the viewers of the last drain may still be reconnecting.
    settle_until: Option<Instant>,
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
        Self {
            config,
            provider,
            haproxy,
            client,
            board,
            metrics,
            history: History::default(),
            rates: Rates::default(),
            busy: false,
            settle_until: None,
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

    /// One tick.
    ///
    /// # Errors
    /// The provider or HAProxy could not be read: no action was taken.
    pub async fn tick(&mut self) -> Result<(), crate::observe::ObserveError> {
        let seen = observe(&self.provider, &self.haproxy).await?;
        let mut instances = Vec::new();
        for instance in &seen.instances {
            match self.step(instance, &seen).await {
                Some(i) => instances.push(i),
                None if instance.phase == Phase::Draining => {
                    let settle = Duration::from_secs(self.config.scaling.drain_settle_secs);
                    self.settle_until = Some(Instant::now() + settle);
                }
                None => {}
            }
        }
        self.remove_orphans(&seen).await;
        let serving: Vec<(String, std::net::SocketAddr)> = instances
            .iter()
            .filter(|i| i.phase == Phase::Serving && i.alive)
            .map(|i| (i.id.clone(), i.admin))
            .collect();
        let figures = scrape(&self.client, serving).await;
        let at = Instant::now();
        let mut views = Vec::new();
        let mut statuses = Vec::new();
        for i in &instances {
            let signals = match figures.get(&i.id) {
                Some(Ok(f)) => self.rates.update(&i.id, at, *f),
                Some(Err(e)) => {
                    self.metrics.scrape_errors.increment(1);
                    tracing::warn!(instance = %i.id, error = %e, "metrics unreadable");
                    None
                }
                None => None,
            };
            let stat = seen.stats.get(&i.server_name());
            let sessions = stat.map_or(0, |s| s.sessions);
            views.push(InstanceView {
                id: i.id.clone(),
                phase: i.phase,
                serving_for: (i.phase == Phase::Serving).then(|| age(i.phase_since)),
                signals,
                sessions,
            });
            statuses.push(InstanceStatus {
                id: i.id.clone(),
                server: i.server_name(),
                addr: i.addr.to_string(),
                phase: i.phase,
                alive: i.alive,
                haproxy: stat.map(|s| s.status.clone()),
                sessions,
                signals,
            });
        }
        self.rates.retain(|id| {
            instances
                .iter()
                .any(|i| i.id == id && i.phase == Phase::Serving)
        });

        let s = &self.config.scaling;
        let settling = views.iter().any(|v| v.phase == Phase::Draining)
            || self.settle_until.is_some_and(|t| at < t);
        let decision = decide(&views, &self.history, at, s, &self.config.targets, settling);
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
        m.conn_rate.set(decision.load.conn_rate);
        m.msg_rate.set(decision.load.msg_rate);
        m.connections.set(decision.load.connections);
        if decision.action != Action::Hold {
            tracing::info!(
                action = ?decision.action,
                reason = decision.reason,
                capacity = decision.capacity,
                recommendation = decision.recommendation,
                conn_rate = decision.load.conn_rate,
                msg_rate = decision.load.msg_rate,
                connections = decision.load.connections,
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
        self.busy = views.iter().any(|v| v.phase != Phase::Serving)
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
        match action {
            Action::Hold => {}
            Action::ScaleOut { count } => {
                for _ in 0..count {
                    self.launch(reason).await;
                }
            }
            Action::ScaleIn { id } => {
                if let Some(i) = instances.iter().find(|i| i.id == id) {
                    self.start_drain(i, reason).await;
                }
            }
        }
        Ok(())
    }

    /// Launches one instance, retrying with the same client token so a call that timed out
    /// after EC2 accepted it doesn't make a second instance.
    async fn launch(&self, reason: &str) {
        let token = format!("{}-{:016x}", self.config.fleet, rand::random::<u64>());
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=LAUNCH_ATTEMPTS {
            match self.provider.launch(&token).await {
                Ok(i) => {
                    self.metrics.launches.increment(1);
                    tracing::info!(instance = %i.id, addr = %i.addr, reason, "launched");
                    self.board.event("launch", &i.id, reason);
                    return;
                }
                Err(e) => {
                    self.metrics.launch_failures.increment(1);
                    tracing::warn!(error = %e, attempt, "launch failed");
                    if attempt < LAUNCH_ATTEMPTS {
                        tokio::time::sleep(pause).await;
                        pause *= 4;
                    }
                }
            }
        }
    }

    /// Scale-in, first steps: record the phase (so a restart carries on), stop new viewers in
    /// HAProxy, ask the tracker to drain. [`step`](Self::step) finishes it on later ticks.
    async fn start_drain(&self, i: &Instance, reason: &str) {
        if let Err(e) = self.provider.set_phase(&i.id, Phase::Draining).await {
            self.metrics.step_errors.increment(1);
            tracing::warn!(instance = %i.id, error = %e, "could not record the drain");
            return;
        }
        self.metrics.drains.increment(1);
        tracing::info!(instance = %i.id, reason, "draining");
        self.board.event("drain", &i.id, reason);
        let mut draining = i.clone();
        draining.phase = Phase::Draining;
        draining.phase_since = SystemTime::now();
        self.drain_step(&draining, true, None).await;
    }

    fn failed(&self, instance: &str, what: &str, e: &dyn std::fmt::Display) {
        self.metrics.step_errors.increment(1);
        tracing::warn!(instance, error = %e, "{what} failed; retried next tick");
    }

    /// Moves one instance a step; returns it as it stands after, or `None` once it is gone.
    async fn step(&self, i: &Instance, seen: &Observation) -> Option<Instance> {
        let name = i.server_name();
        let state = seen.states.get(&name);
        if !i.alive {
            // Died, or exited at the end of its drain: out of HAProxy, then gone.
            if state.is_some() {
                if let Err(e) = self.haproxy.set_state(&name, AdminState::Maint).await {
                    self.failed(&i.id, "maint", &e);
                }
                if let Err(e) = self.haproxy.del_server(&name).await {
                    self.failed(&i.id, "del server", &e);
                    return Some(i.clone());
                }
            }
            if i.phase != Phase::Draining {
                tracing::warn!(instance = %i.id, phase = i.phase.as_str(), "instance died");
            }
            return match self.provider.terminate(&i.id).await {
                Ok(()) => {
                    self.metrics.removals.increment(1);
                    let kind = if i.phase == Phase::Draining {
                        "removed"
                    } else {
                        "gone"
                    };
                    tracing::info!(instance = %i.id, "{kind}");
                    self.board.event(kind, &i.id, "process exited");
                    None
                }
                Err(e) => {
                    self.failed(&i.id, "terminate", &e);
                    Some(i.clone())
                }
            };
        }
        match i.phase {
            Phase::Launching => {
                let timeout = Duration::from_secs(self.config.scaling.launch_timeout_secs);
                if age(i.launched_at) > timeout {
                    tracing::warn!(instance = %i.id, "not ready within launch_timeout_secs");
                    if let Err(e) = self.provider.terminate(&i.id).await {
                        self.failed(&i.id, "terminate", &e);
                        return Some(i.clone());
                    }
                    self.board.event("gone", &i.id, "launch timed out");
                    return None;
                }
                // No address yet (an EC2 instance before its network interface): nothing to
                // ask, and 0.0.0.0 would reach this host instead.
                if i.admin.ip().is_unspecified()
                    || !matches!(self.client.ready(i.admin).await, Ok(true))
                {
                    return Some(i.clone());
                }
                if let Err(e) = self.ensure_server(i, state.is_some()).await {
                    self.failed(&i.id, "add server", &e);
                    return Some(i.clone());
                }
                if let Err(e) = self.provider.set_phase(&i.id, Phase::Serving).await {
                    self.failed(&i.id, "record serving", &e);
                    return Some(i.clone());
                }
                tracing::info!(instance = %i.id, server = %name, "ready: serving");
                self.board
                    .event("ready", &i.id, format!("added to HAProxy as {name}"));
                let mut i = i.clone();
                i.phase = Phase::Serving;
                i.phase_since = SystemTime::now();
                Some(i)
            }
            Phase::Serving => {
                match state {
                    None => {
                        // HAProxy reloaded (it forgets dynamic servers) or an add was lost.
                        if let Err(e) = self.ensure_server(i, false).await {
                            self.failed(&i.id, "re-add server", &e);
                        } else {
                            self.metrics.readds.increment(1);
                            tracing::info!(instance = %i.id, "server re-added");
                            self.board.event("re-added", &i.id, "missing from HAProxy");
                        }
                    }
                    Some(s) if s.in_maint() => {
                        // Added but not enabled (the tick stopped in between).
                        if let Err(e) = self.haproxy.enable(&name).await {
                            self.failed(&i.id, "enable server", &e);
                        }
                    }
                    Some(_) => {}
                }
                Some(i.clone())
            }
            Phase::Draining => {
                let sessions = seen.stats.get(&name).map(|s| s.sessions);
                self.drain_step(i, state.is_some(), sessions)
                    .await
                    .then(|| i.clone())
            }
        }
    }

    /// Removes servers named like ours whose instance the provider no longer lists (left by a
    /// removal interrupted after the termination).
    async fn remove_orphans(&self, seen: &Observation) {
        for name in seen.states.keys() {
            if !name.starts_with(crate::provider::SERVER_PREFIX)
                || seen.instances.iter().any(|i| &i.server_name() == name)
            {
                continue;
            }
            tracing::info!(server = %name, "orphan server removed from HAProxy");
            if let Err(e) = self.haproxy.set_state(name, AdminState::Maint).await {
                self.failed(name, "maint orphan", &e);
            } else if let Err(e) = self.haproxy.del_server(name).await {
                self.failed(name, "del orphan", &e);
            }
        }
    }

    /// Adds (unless `exists`) and enables the server of `i`.
    async fn ensure_server(
        &self,
        i: &Instance,
        exists: bool,
    ) -> Result<(), crate::haproxy::HaproxyError> {
        let name = i.server_name();
        if !exists {
            self.haproxy.add_server(&name, i.addr).await?;
        }
        self.haproxy.enable(&name).await
    }

    /// One step of a drain; returns whether the instance is still there. `in_haproxy`: its
    /// server exists; `sessions`: HAProxy's count now (`None`: not known this tick).
    async fn drain_step(&self, i: &Instance, in_haproxy: bool, sessions: Option<u64>) -> bool {
        let name = i.server_name();
        // Both are idempotent: repeated every tick until the instance is gone, so a restart or a
        // lost request changes nothing.
        if in_haproxy && let Err(e) = self.haproxy.set_state(&name, AdminState::Drain).await {
            self.failed(&i.id, "set state drain", &e);
        }
        if let Err(e) = self.client.drain(i.admin).await {
            self.failed(&i.id, "POST /admin/drain", &e);
        }
        let deadline = Duration::from_secs(self.config.scaling.drain_deadline_secs);
        let empty = sessions == Some(0);
        let late = age(i.phase_since) > deadline;
        if !empty && !late {
            return true;
        }
        if late && !empty {
            tracing::warn!(instance = %i.id, ?sessions, "drain deadline passed: removing");
        }
        if in_haproxy {
            if let Err(e) = self.haproxy.set_state(&name, AdminState::Maint).await {
                self.failed(&i.id, "set state maint", &e);
                return true;
            }
            if let Err(e) = self.haproxy.del_server(&name).await {
                // Sessions still attached; HAProxy refuses until they end.
                self.failed(&i.id, "del server", &e);
                if !late {
                    return true;
                }
            }
        }
        match self.provider.terminate(&i.id).await {
            Ok(()) => {
                self.metrics.removals.increment(1);
                tracing::info!(instance = %i.id, "drained and removed");
                self.board.event("removed", &i.id, "drained");
                false
            }
            Err(e) => {
                self.failed(&i.id, "terminate", &e);
                true
            }
        }
    }
}
