//! One instance's step of a tick, decided without I/O: from what the tick saw of the instance
//! (provider record, HAProxy, its tracker's answer, how many polls in a row it failed), the
//! operations that move it one step along its life, in order. [`super::Reconciler`] runs them,
//! stopping at the first failure that must stop it; the next tick plans again from what is then
//! true, so a partial step is finished later.
//!
//! ```text
//! launching: ready -> add server, enable, phase serving | not ready past launch_timeout -> terminate
//! serving:   missing in HAProxy -> add, enable | in maint -> enable
//!            tracker failed unhealthy_polls polls -> (once no launch is pending) maint, terminate, del
//! draining:  state drain, POST /admin/drain (until the tracker says it drains)
//!            -> no sessions left, or past drain_deadline -> maint, del, terminate
//! not alive: maint, del, terminate
//! ```

use std::time::Duration;

use crate::haproxy::AdminState;
use crate::provider::{Instance, Phase};

/// One operation on an instance, its HAProxy server or its tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `add server` with the instance's address and the configured parameters.
    AddServer,
    /// `enable server` and `enable health`.
    Enable,
    /// `set server ... state`.
    ServerState(AdminState),
    /// `del server`.
    DelServer,
    /// Record the phase with the provider.
    SetPhase(Phase),
    /// `POST /admin/drain` with the reconnect window, in ms.
    PostDrain(u64),
    /// Terminate the instance with the provider.
    Terminate,
}

/// Whether a failed operation ends the step (the instance stays as it is until next tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Stop here.
    Stop,
    /// Go on with the next operation.
    Continue,
}

/// What the step does, for the log, the events and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// Nothing to do.
    Idle,
    /// A launching instance answered `/readyz`: into HAProxy, serving.
    Ready,
    /// A launching instance not ready within `launch_timeout_secs`: terminated.
    LaunchTimedOut,
    /// A serving instance's server was missing from HAProxy (a reload): added again.
    Readd,
    /// A serving instance's server was added but not enabled: enabled.
    Reenable,
    /// A serving instance's tracker stopped answering; a launch is pending, so it waits.
    UnhealthyWaiting,
    /// A serving instance's tracker stopped answering and nothing launches: removed.
    Replaced,
    /// A drain goes on.
    Draining,
    /// A drain is over: removed.
    Drained,
    /// The machine or process is gone: its server removed, the record forgotten.
    Dead,
}

/// One instance's step: operations in order, and what it leads to when they all succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What it is.
    pub kind: StepKind,
    /// The operations, each with what a failure means.
    pub ops: Vec<(Op, OnError)>,
    /// The phase after the step; `None`: the instance is gone.
    pub after: Option<Phase>,
}

/// What the tick saw of one instance.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    /// The provider's record.
    pub instance: &'a Instance,
    /// Its HAProxy server: `None` when the backend doesn't have it, else whether it is in
    /// maintenance.
    pub server_in_maint: Option<bool>,
    /// HAProxy's session count for it (`None`: not known this tick).
    pub sessions: Option<u64>,
    /// A launching tracker answered `/readyz` with 200.
    pub ready: bool,
    /// Its tracker's `/metrics` said it drains.
    pub tracker_draining: bool,
    /// Polls in a row its tracker's `/metrics` failed.
    pub failed_polls: u32,
    /// Since its launch.
    pub launched_for: Duration,
    /// Since its phase last changed.
    pub phase_for: Duration,
}

/// The bounds a step is judged by (from the config).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// `launch_timeout_secs`.
    pub launch_timeout: Duration,
    /// `drain_deadline_secs`.
    pub drain_deadline: Duration,
    /// `unhealthy_polls`.
    pub unhealthy_polls: u32,
    /// Reconnect window asked again of a tracker that hasn't confirmed its drain (the window
    /// chosen at scale-in went with the first request), ms.
    pub reconnect_window_ms: u64,
}

fn step(kind: StepKind, ops: Vec<(Op, OnError)>, after: Option<Phase>) -> Step {
    Step { kind, ops, after }
}

/// Whether a serving instance's tracker has failed enough polls to be replaced.
pub fn unhealthy(f: &Facts, bounds: &Bounds) -> bool {
    f.instance.phase == Phase::Serving
        && f.instance.alive
        && f.failed_polls >= bounds.unhealthy_polls
}

/// The step of one instance. `launch_pending`: an instance is launching or this tick launches
/// one, so an unhealthy instance waits for its replacement before it goes.
pub fn plan(f: &Facts, bounds: &Bounds, launch_pending: bool) -> Step {
    use OnError::{Continue, Stop};
    let i = f.instance;
    let in_haproxy = f.server_in_maint.is_some();
    if !i.alive {
        // Died, or stopped outside the autoscaler: out of HAProxy, then forgotten.
        let mut ops = Vec::new();
        if in_haproxy {
            ops.push((Op::ServerState(AdminState::Maint), Continue));
            ops.push((Op::DelServer, Stop));
        }
        ops.push((Op::Terminate, Stop));
        return step(StepKind::Dead, ops, None);
    }
    match i.phase {
        Phase::Launching => {
            if f.ready {
                let mut ops = Vec::new();
                if !in_haproxy {
                    ops.push((Op::AddServer, Stop));
                }
                ops.push((Op::Enable, Stop));
                ops.push((Op::SetPhase(Phase::Serving), Stop));
                step(StepKind::Ready, ops, Some(Phase::Serving))
            } else if f.launched_for > bounds.launch_timeout {
                let mut ops = Vec::new();
                if in_haproxy {
                    ops.push((Op::ServerState(AdminState::Maint), Continue));
                    ops.push((Op::DelServer, Continue));
                }
                ops.push((Op::Terminate, Stop));
                step(StepKind::LaunchTimedOut, ops, None)
            } else {
                step(StepKind::Idle, Vec::new(), Some(Phase::Launching))
            }
        }
        Phase::Serving if unhealthy(f, bounds) => {
            if launch_pending {
                return step(StepKind::UnhealthyWaiting, Vec::new(), Some(Phase::Serving));
            }
            // Its replacement serves (or none was needed). Out of HAProxy first; terminated
            // before `del server`, which HAProxy refuses while a wedged tracker holds tunnels
            // (an orphan server left by a failed `del` is removed by a later tick).
            let mut ops = Vec::new();
            if in_haproxy {
                ops.push((Op::ServerState(AdminState::Maint), Continue));
            }
            ops.push((Op::Terminate, Stop));
            if in_haproxy {
                ops.push((Op::DelServer, Continue));
            }
            step(StepKind::Replaced, ops, None)
        }
        Phase::Serving => match f.server_in_maint {
            // HAProxy reloaded (it forgets dynamic servers) or an add was lost.
            None => step(
                StepKind::Readd,
                vec![(Op::AddServer, Stop), (Op::Enable, Stop)],
                Some(Phase::Serving),
            ),
            // Added but not enabled (the tick stopped in between).
            Some(true) => step(
                StepKind::Reenable,
                vec![(Op::Enable, Stop)],
                Some(Phase::Serving),
            ),
            Some(false) => step(StepKind::Idle, Vec::new(), Some(Phase::Serving)),
        },
        Phase::Draining => {
            // Both idempotent, so a restart or a lost request changes nothing.
            let mut ops = Vec::new();
            if in_haproxy {
                ops.push((Op::ServerState(AdminState::Drain), Continue));
            }
            if !f.tracker_draining {
                ops.push((Op::PostDrain(bounds.reconnect_window_ms), Continue));
            }
            let empty = f.sessions == Some(0);
            let late = f.phase_for > bounds.drain_deadline;
            if !empty && !late {
                return step(StepKind::Draining, ops, Some(Phase::Draining));
            }
            if in_haproxy {
                ops.push((Op::ServerState(AdminState::Maint), Stop));
                // Sessions still attached: HAProxy refuses until they end, unless past the
                // deadline, when the instance goes anyway.
                ops.push((Op::DelServer, if late { Continue } else { Stop }));
            }
            ops.push((Op::Terminate, Stop));
            step(StepKind::Drained, ops, None)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::time::{Duration, SystemTime};

    use super::*;

    const BOUNDS: Bounds = Bounds {
        launch_timeout: Duration::from_secs(60),
        drain_deadline: Duration::from_secs(30),
        unhealthy_polls: 3,
        reconnect_window_ms: 20_000,
    };

    fn instance(phase: Phase, alive: bool) -> Instance {
        let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        Instance {
            id: "l9000".into(),
            addr,
            admin: addr,
            phase,
            launched_at: SystemTime::UNIX_EPOCH,
            phase_since: SystemTime::UNIX_EPOCH,
            alive,
        }
    }

    /// Facts of a healthy instance in HAProxy, enabled, with 5 sessions, 10 s in its phase.
    fn facts(i: &Instance) -> Facts<'_> {
        Facts {
            instance: i,
            server_in_maint: Some(false),
            sessions: Some(5),
            ready: false,
            tracker_draining: false,
            failed_polls: 0,
            launched_for: Duration::from_secs(10),
            phase_for: Duration::from_secs(10),
        }
    }

    fn ops(s: &Step) -> Vec<Op> {
        s.ops.iter().map(|(op, _)| *op).collect()
    }

    #[test]
    fn table() {
        use AdminState::{Drain, Maint};
        use Op::*;
        let launching = instance(Phase::Launching, true);
        let serving = instance(Phase::Serving, true);
        let draining = instance(Phase::Draining, true);
        let dead = instance(Phase::Serving, false);
        type Change = fn(&mut Facts);
        /// Name, instance, change to its facts, launch pending, step, operations, phase after.
        type Case<'a> = (
            &'a str,
            &'a Instance,
            Change,
            bool,
            StepKind,
            Vec<Op>,
            Option<Phase>,
        );
        let cases: Vec<Case> = vec![
            (
                "launching, not ready yet: wait",
                &launching,
                |f| f.server_in_maint = None,
                false,
                StepKind::Idle,
                vec![],
                Some(Phase::Launching),
            ),
            (
                "launching and ready: add, enable, serving",
                &launching,
                |f| {
                    f.server_in_maint = None;
                    f.ready = true;
                },
                false,
                StepKind::Ready,
                vec![AddServer, Enable, SetPhase(Phase::Serving)],
                Some(Phase::Serving),
            ),
            (
                "ready, server already added by an interrupted tick: enable only",
                &launching,
                |f| {
                    f.server_in_maint = Some(true);
                    f.ready = true;
                },
                false,
                StepKind::Ready,
                vec![Enable, SetPhase(Phase::Serving)],
                Some(Phase::Serving),
            ),
            (
                "never ready within the launch timeout: terminated",
                &launching,
                |f| {
                    f.server_in_maint = None;
                    f.launched_for = Duration::from_secs(61);
                },
                false,
                StepKind::LaunchTimedOut,
                vec![Terminate],
                None,
            ),
            (
                "serving and in HAProxy: nothing",
                &serving,
                |_| {},
                false,
                StepKind::Idle,
                vec![],
                Some(Phase::Serving),
            ),
            (
                "serving, forgotten by a HAProxy reload: added again",
                &serving,
                |f| f.server_in_maint = None,
                false,
                StepKind::Readd,
                vec![AddServer, Enable],
                Some(Phase::Serving),
            ),
            (
                "serving but left in maint: enabled",
                &serving,
                |f| f.server_in_maint = Some(true),
                false,
                StepKind::Reenable,
                vec![Enable],
                Some(Phase::Serving),
            ),
            (
                "metrics failed twice: still capacity, nothing yet",
                &serving,
                |f| f.failed_polls = 2,
                false,
                StepKind::Idle,
                vec![],
                Some(Phase::Serving),
            ),
            (
                "dead tracker, its replacement launching: it waits",
                &serving,
                |f| f.failed_polls = 3,
                true,
                StepKind::UnhealthyWaiting,
                vec![],
                Some(Phase::Serving),
            ),
            (
                "dead tracker, nothing launching: maint, terminate, del",
                &serving,
                |f| f.failed_polls = 3,
                false,
                StepKind::Replaced,
                vec![ServerState(Maint), Terminate, DelServer],
                None,
            ),
            (
                "draining with sessions: drain state and the drain request",
                &draining,
                |_| {},
                false,
                StepKind::Draining,
                vec![ServerState(Drain), PostDrain(20_000)],
                Some(Phase::Draining),
            ),
            (
                "draining, the tracker confirmed it: no more requests",
                &draining,
                |f| f.tracker_draining = true,
                false,
                StepKind::Draining,
                vec![ServerState(Drain)],
                Some(Phase::Draining),
            ),
            (
                "drained empty: maint, del, terminate",
                &draining,
                |f| {
                    f.sessions = Some(0);
                    f.tracker_draining = true;
                },
                false,
                StepKind::Drained,
                vec![ServerState(Drain), ServerState(Maint), DelServer, Terminate],
                None,
            ),
            (
                "drain past its deadline with sessions left: removed anyway",
                &draining,
                |f| {
                    f.phase_for = Duration::from_secs(31);
                    f.tracker_draining = true;
                },
                false,
                StepKind::Drained,
                vec![ServerState(Drain), ServerState(Maint), DelServer, Terminate],
                None,
            ),
            (
                "process gone: maint, del, forgotten",
                &dead,
                |_| {},
                false,
                StepKind::Dead,
                vec![ServerState(Maint), DelServer, Terminate],
                None,
            ),
            (
                "process gone before it reached HAProxy: forgotten",
                &dead,
                |f| f.server_in_maint = None,
                false,
                StepKind::Dead,
                vec![Terminate],
                None,
            ),
        ];
        for (name, i, change, pending, kind, expect, after) in cases {
            let mut f = facts(i);
            change(&mut f);
            let s = plan(&f, &BOUNDS, pending);
            assert_eq!(s.kind, kind, "{name}");
            assert_eq!(ops(&s), expect, "{name}");
            assert_eq!(s.after, after, "{name}");
        }
    }

    #[test]
    fn what_a_failure_stops() {
        let draining = instance(Phase::Draining, true);
        let mut f = facts(&draining);
        f.sessions = Some(0);
        let s = plan(&f, &BOUNDS, false);
        // Not yet past the deadline: a refused `del server` keeps the instance for next tick.
        assert!(s.ops.contains(&(Op::DelServer, OnError::Stop)));
        f.sessions = Some(3);
        f.phase_for = Duration::from_secs(31);
        let s = plan(&f, &BOUNDS, false);
        assert!(s.ops.contains(&(Op::DelServer, OnError::Continue)));
        // The drain request may fail (the tracker already left): the drain goes on.
        assert!(s.ops.contains(&(Op::PostDrain(20_000), OnError::Continue)));
    }
}
