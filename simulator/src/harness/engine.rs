//! The load engine of one process, for either mode: the steps and their clock, the snapshots,
//! and the wind-down.
//!
//! Each step, the engine hands the mode's [`Load`] the step to drive (native viewers arrive
//! on a Poisson schedule; WebTorrent peers are opened up to the step's count). Once a second,
//! and at every step boundary, it settles what is older than the lost-after bound, takes a
//! snapshot and emits it as an [`Event`]. After the last step (or a stop) the load stops; what
//! is in flight completes (the mode says when nothing is, twice 10 ms apart, or half the grace
//! time is gone); then connections close, those still open when the grace time is over are
//! dropped, whatever is still outstanding is declared lost, and [`Event::Done`] goes out.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cpu;
use super::plan::Job;
use super::stats::{Snapshot, Stats};

/// How often the wind-down checks whether messages in flight have completed.
const QUIESCE_POLL: Duration = Duration::from_millis(10);

/// What an engine reports, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// One interval (about a second) of measurements.
    Tick {
        /// Tick number, from 0.
        seq: u64,
        /// The step it belongs to.
        phase: usize,
        /// Seconds since the start, at the end of the interval.
        t_s: f64,
        /// The interval's measurements.
        snapshot: Snapshot,
    },
    /// A step ran to its end.
    PhaseEnd {
        /// Which.
        phase: usize,
        /// Its measurements.
        snapshot: Snapshot,
    },
    /// The run is over: what happened after the last step ended, outstanding messages
    /// declared lost included.
    Done {
        /// The wind-down's measurements.
        tail: Snapshot,
    },
}

/// The two stages of the wind-down, as every connection task of a process sees them.
#[derive(Debug, Default)]
pub struct Winding {
    /// Cancelled first: start nothing new, but complete what is in flight.
    pub quiesce: CancellationToken,
    /// Cancelled once nothing is in flight: close.
    pub finish: CancellationToken,
}

/// Where a mode spawns its connection tasks: tracked (the wind-down waits for them) and
/// dropped when the grace time is over.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    kill: CancellationToken,
}

impl Tasks {
    /// Spawns a connection task.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let kill = self.kill.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => {}
                () = kill.cancelled() => {}
            }
        });
    }
}

/// A step as the engine hands it to a mode.
#[derive(Debug, Clone, Copy)]
pub struct StepRun {
    /// Its number, from 0.
    pub index: usize,
    /// This process's share of its load (see [`super::plan::Phase`]).
    pub target: f64,
    /// This process's share of its extra load.
    pub extra: f64,
    /// When it starts.
    pub start: Instant,
    /// When it ends.
    pub end: Instant,
}

/// What a mode gives the engine: its load, its measurements, and whether anything is in flight.
pub trait Load: Send + Sync + 'static {
    /// The process's measurements.
    fn stats(&self) -> &Stats;

    /// The wind-down tokens its tasks watch.
    fn winding(&self) -> &Winding;

    /// Drives `step` until its end or until `stop` is cancelled, spawning connections on
    /// `tasks`.
    fn drive(
        self: Arc<Self>,
        step: StepRun,
        tasks: Tasks,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static;

    /// Declares lost (and counts) what was sent before `before` and is still outstanding.
    fn settle(&self, before: std::time::Instant);

    /// True while something is in flight that the wind-down should wait for.
    fn busy(&self) -> bool;
}

/// Runs `job`'s steps with `load` until they end or `stop` is cancelled, sending events.
///
/// # Errors
/// When the parent stopped listening (the events channel closed).
pub async fn run<L: Load, S>(
    load: Arc<L>,
    job: &Job<S>,
    stop: CancellationToken,
    events: mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let tracker = TaskTracker::new();
    let tasks = Tasks {
        tracker: tracker.clone(),
        kill: CancellationToken::new(),
    };
    let lost_after = Duration::from_millis(job.lost_after_ms);
    let mut cpu = cpu::own_ms();
    let mut last = start;
    let mut take = |now: Instant| {
        let c = cpu::own_ms();
        load.settle(now.into_std() - lost_after);
        let snap = load.stats().take(now - last, c.saturating_sub(cpu));
        cpu = c;
        last = now;
        snap
    };

    let loaded = CancellationToken::new();
    let mut seq = 0;
    let mut step_end = start;
    let mut drivers = Vec::new();
    'steps: for (i, phase) in job.phases.iter().enumerate() {
        let step_start = step_end;
        step_end += Duration::from_millis(phase.duration_ms);
        let step = StepRun {
            index: i,
            target: phase.target,
            extra: phase.extra,
            start: step_start,
            end: step_end,
        };
        drivers.push(tokio::spawn(Arc::clone(&load).drive(
            step,
            tasks.clone(),
            loaded.clone(),
        )));
        let mut acc = Snapshot::default();
        let mut next_tick = Instant::now() + Duration::from_secs(1);
        loop {
            let stopped = tokio::select! {
                () = sleep_until(next_tick.min(step_end)) => false,
                () = stop.cancelled() => true,
            };
            let now = Instant::now();
            let snap = take(now);
            acc.then(&snap);
            events
                .send(Event::Tick {
                    seq,
                    phase: i,
                    t_s: (now - start).as_secs_f64(),
                    snapshot: snap,
                })
                .await?;
            seq += 1;
            if stopped {
                break 'steps;
            }
            if now >= step_end {
                events
                    .send(Event::PhaseEnd {
                        phase: i,
                        snapshot: acc,
                    })
                    .await?;
                break;
            }
            next_tick = now + Duration::from_secs(1);
        }
    }

    // Wind down: no more new load; what is in flight completes; then connections close.
    // Closing only once nothing is in flight keeps the end of a run from refusing its own
    // last messages.
    loaded.cancel();
    for d in drivers {
        let _ = d.await;
    }
    let winding = load.winding();
    winding.quiesce.cancel();
    let grace = Duration::from_millis(job.grace_ms);
    let quiet_by = Instant::now() + grace / 2;
    let mut idle_polls = 0;
    while idle_polls < 2 && Instant::now() < quiet_by {
        // Twice idle in a row: a message sent just before the first poll has arrived.
        idle_polls = if load.busy() { 0 } else { idle_polls + 1 };
        tokio::time::sleep(QUIESCE_POLL).await;
    }
    winding.finish.cancel();
    tracker.close();
    if tokio::time::timeout(grace.saturating_sub(grace / 2), tracker.wait())
        .await
        .is_err()
    {
        tasks.kill.cancel();
        tracker.wait().await;
    }
    let now = Instant::now();
    // Whatever is still outstanding now will never arrive.
    load.settle(now.into_std() + Duration::from_secs(1));
    let tail = take(now);
    events.send(Event::Done { tail }).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

    use super::*;
    use crate::harness::plan::Phase;
    use crate::harness::stats::Schema;

    static SCHEMA: Schema = Schema {
        counters: &["opened"],
        latencies: &[],
        maps: &[],
    };

    /// A load that opens `target` connections per step, each a task that stays until the
    /// wind-down closes it; busy until `idle`.
    struct Counting {
        stats: Stats,
        winding: Winding,
        steps: AtomicU32,
        settled: AtomicU32,
        idle: AtomicBool,
    }

    impl Load for Counting {
        fn stats(&self) -> &Stats {
            &self.stats
        }

        fn winding(&self) -> &Winding {
            &self.winding
        }

        async fn drive(self: Arc<Self>, step: StepRun, tasks: Tasks, _stop: CancellationToken) {
            self.steps.fetch_add(1, Relaxed);
            for _ in 0..step.target as u32 {
                let me = Arc::clone(&self);
                tasks.spawn(async move {
                    me.stats.count(0usize, 1);
                    me.winding.finish.cancelled().await;
                });
            }
        }

        fn settle(&self, _before: std::time::Instant) {
            self.settled.fetch_add(1, Relaxed);
        }

        fn busy(&self) -> bool {
            !self.idle.load(Relaxed)
        }
    }

    fn job(steps: usize) -> Job<()> {
        Job {
            worker: 0,
            workers: 1,
            seed: 1,
            run_seed: 1,
            phases: (0..steps)
                .map(|k| Phase {
                    target: 2.0,
                    extra: 0.0,
                    duration_ms: 1500 + k as u64,
                })
                .collect(),
            lost_after_ms: 1000,
            grace_ms: 1000,
            spec: (),
        }
    }

    fn load(idle: bool) -> Arc<Counting> {
        Arc::new(Counting {
            stats: Stats::new(&SCHEMA),
            winding: Winding::default(),
            steps: AtomicU32::new(0),
            settled: AtomicU32::new(0),
            idle: AtomicBool::new(idle),
        })
    }

    async fn events(mut rx: mpsc::Receiver<Event>) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = rx.recv().await {
            out.push(e);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn steps_tick_end_and_wind_down() {
        let l = load(true);
        let (tx, rx) = mpsc::channel(64);
        let j = job(2);
        run(Arc::clone(&l), &j, CancellationToken::new(), tx)
            .await
            .unwrap();
        let ev = events(rx).await;
        let ends: Vec<usize> = ev
            .iter()
            .filter_map(|e| match e {
                Event::PhaseEnd { phase, .. } => Some(*phase),
                _ => None,
            })
            .collect();
        assert_eq!(ends, [0, 1]);
        // 1.5 s steps: a tick at 1 s and one at the step's end, each.
        let ticks = ev
            .iter()
            .filter(|e| matches!(e, Event::Tick { .. }))
            .count();
        assert_eq!(ticks, 4);
        let Some(Event::Done { tail }) = ev.last() else {
            panic!("done comes last: {ev:?}")
        };
        let opened: u64 = ev
            .iter()
            .map(|e| match e {
                Event::Tick { snapshot, .. } => snapshot.count(0usize),
                _ => 0,
            })
            .sum::<u64>()
            + tail.count(0usize);
        assert_eq!(opened, 4, "two connections a step");
        assert_eq!(tail.connected, 0);
        assert_eq!(l.steps.load(Relaxed), 2);
        assert!(
            l.settled.load(Relaxed) >= 5,
            "every tick settles, and the end"
        );
        assert!(l.winding.finish.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_steps_and_a_busy_load_gets_half_the_grace() {
        let l = load(false);
        let (tx, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let j = job(5);
        let started = Instant::now();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            s.cancel();
        });
        run(Arc::clone(&l), &j, stop, tx).await.unwrap();
        let ev = events(rx).await;
        let ends = ev
            .iter()
            .filter(|e| matches!(e, Event::PhaseEnd { .. }))
            .count();
        assert_eq!(ends, 1, "stopped in the second step");
        assert!(matches!(ev.last(), Some(Event::Done { .. })));
        // Busy all along: the wind-down waited half the grace time (0.5 s), then closed.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(3000) && took < Duration::from_millis(3200),
            "{took:?}"
        );
    }
}
