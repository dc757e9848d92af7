//! Acting on a tick's plan: launches (retried with the same client token), the start of a
//! scale-in, each instance's planned operations, and orphan servers; each failure logged,
//! counted and left to the next tick.

use std::time::Duration;

use super::plan::{OnError, Op, Step, StepKind};
use super::{BOOT_SAMPLES, LAUNCH_ATTEMPTS, Reconciler, age};
use crate::haproxy::AdminState;
use crate::observe::Observation;
use crate::provider::{Instance, Phase, Provider};

impl<P: Provider> Reconciler<P> {
    /// Launches one instance, retrying with the same client token so a call that timed out
    /// after EC2 accepted it doesn't make a second instance.
    pub(super) async fn launch(&self, reason: &str) {
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
    /// HAProxy, ask the tracker to drain over `reconnect_window_ms`. Later ticks' steps finish
    /// it.
    pub(super) async fn start_drain(&self, i: &Instance, reconnect_window_ms: u64, reason: &str) {
        if let Err(e) = self.op(i, Op::SetPhase(Phase::Draining)).await {
            self.failed(&i.id, "record the drain", &e);
            return;
        }
        self.metrics.drains.increment(1);
        tracing::info!(instance = %i.id, reason, reconnect_window_ms, "draining");
        self.board.event(
            "drain",
            &i.id,
            format!("{reason}; reconnects spread over {reconnect_window_ms} ms"),
        );
        for op in [
            Op::ServerState(AdminState::Drain),
            Op::PostDrain(reconnect_window_ms),
        ] {
            if let Err(e) = self.op(i, op).await {
                self.failed(&i.id, op.name(), &e);
            }
        }
    }

    fn failed(&self, instance: &str, what: &str, e: &dyn std::fmt::Display) {
        self.metrics.step_errors.increment(1);
        tracing::warn!(instance, error = %e, "{what} failed; retried next tick");
    }

    /// One operation on instance `i`.
    async fn op(&self, i: &Instance, op: Op) -> Result<(), String> {
        let name = i.server_name();
        match op {
            Op::AddServer => self
                .haproxy
                .add_server(&name, i.addr)
                .await
                .map_err(|e| e.to_string()),
            Op::Enable => self.haproxy.enable(&name).await.map_err(|e| e.to_string()),
            Op::ServerState(s) => self
                .haproxy
                .set_state(&name, s)
                .await
                .map_err(|e| e.to_string()),
            Op::DelServer => self
                .haproxy
                .del_server(&name)
                .await
                .map_err(|e| e.to_string()),
            Op::SetPhase(p) => self
                .provider
                .set_phase(&i.id, p)
                .await
                .map_err(|e| e.to_string()),
            Op::PostDrain(ms) => self
                .client
                .drain(i.admin, Duration::from_millis(ms))
                .await
                .map_err(|e| e.to_string()),
            Op::Terminate => self
                .provider
                .terminate(&i.id)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Runs one instance's planned step; what it did goes to the log, the events and the
    /// metrics once every operation that had to succeed did.
    pub(super) async fn run_step(&mut self, i: &Instance, step: &Step) {
        for &(op, on_error) in &step.ops {
            if let Err(e) = self.op(i, op).await {
                self.failed(&i.id, op.name(), &e);
                if on_error == OnError::Stop {
                    return;
                }
            }
        }
        let name = i.server_name();
        match step.kind {
            StepKind::Idle | StepKind::Draining => {}
            StepKind::Ready => {
                let boot = age(i.launched_at);
                self.boot_times.push_back(boot);
                while self.boot_times.len() > BOOT_SAMPLES {
                    self.boot_times.pop_front();
                }
                tracing::info!(instance = %i.id, server = %name, boot_secs = boot.as_secs_f64(), "ready: serving");
                self.board.event(
                    "ready",
                    &i.id,
                    format!(
                        "added to HAProxy as {name}, {:.0} s after launch",
                        boot.as_secs_f64()
                    ),
                );
            }
            StepKind::LaunchTimedOut => {
                tracing::warn!(instance = %i.id, "not ready within launch_timeout_secs");
                self.board.event("gone", &i.id, "launch timed out");
            }
            StepKind::Readd => {
                self.metrics.readds.increment(1);
                tracing::info!(instance = %i.id, "server re-added");
                self.board.event("re-added", &i.id, "missing from HAProxy");
            }
            StepKind::Reenable => {}
            StepKind::UnhealthyWaiting => {
                tracing::warn!(instance = %i.id, "tracker unhealthy: waiting for its replacement");
            }
            StepKind::Replaced => {
                self.metrics.replacements.increment(1);
                self.metrics.removals.increment(1);
                tracing::warn!(instance = %i.id, "tracker unhealthy: instance replaced");
                self.board.event(
                    "replaced",
                    &i.id,
                    format!(
                        "tracker failed {} polls; terminated after its replacement",
                        self.config.scaling.unhealthy_polls
                    ),
                );
            }
            StepKind::Drained => {
                self.metrics.removals.increment(1);
                tracing::info!(instance = %i.id, "drained and removed");
                self.board.event("removed", &i.id, "drained");
            }
            StepKind::Dead => {
                self.metrics.removals.increment(1);
                let kind = if i.phase == Phase::Draining {
                    "removed"
                } else {
                    tracing::warn!(instance = %i.id, phase = i.phase.as_str(), "instance died");
                    "gone"
                };
                tracing::info!(instance = %i.id, "{kind}");
                self.board.event(kind, &i.id, "process exited");
            }
        }
    }

    /// Removes servers named like ours whose instance the provider no longer lists (left by a
    /// removal interrupted after the termination).
    pub(super) async fn remove_orphans(&self, seen: &Observation) {
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
}

impl Op {
    /// Its name in logs.
    fn name(self) -> &'static str {
        match self {
            Op::AddServer => "add server",
            Op::Enable => "enable server",
            Op::ServerState(AdminState::Drain) => "set state drain",
            Op::ServerState(AdminState::Maint) => "set state maint",
            Op::ServerState(AdminState::Ready) => "set state ready",
            Op::DelServer => "del server",
            Op::SetPhase(_) => "record phase",
            Op::PostDrain(_) => "POST /admin/drain",
            Op::Terminate => "terminate",
        }
    }
}
