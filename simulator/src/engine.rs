//! The load engine of one process: arrivals, renegotiations, the clock, and the wind-down.
//!
//! Viewers arrive as a Poisson process at the phase's rate, on an open-loop schedule (a slow
//! tracker doesn't slow arrivals down; a slow simulator shows as schedule lag). A pacer asks
//! random connected viewers for extra negotiations at the phase's renegotiation rate. Once a
//! second, and at every phase boundary, the engine takes a snapshot and emits it as an
//! [`Event`]; after the last phase (or a stop) it lets viewers finish within the grace time,
//! declares what is still outstanding lost, and emits [`Event::Done`].

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use indexmap::IndexMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Zipf};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ledger::Ledger;
use crate::options::{Phase, Spec};
use crate::payload::Payloads;
use crate::stats::{C, Snapshot, Stats, process_cpu_ms};
use crate::target::Target;
use crate::viewer::{self, Command};

/// How often the wind-down checks whether negotiations in flight have completed.
const QUIESCE_POLL: Duration = Duration::from_millis(10);

/// What an engine reports, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// One interval (about a second) of measurements.
    Tick {
        /// Tick number, from 0.
        seq: u64,
        /// The phase it belongs to.
        phase: usize,
        /// Seconds since the start, at the end of the interval.
        t_s: f64,
        /// The interval's measurements.
        snapshot: Snapshot,
    },
    /// A phase ran to its end.
    PhaseEnd {
        /// Which.
        phase: usize,
        /// Its measurements.
        snapshot: Snapshot,
    },
    /// The run is over: what happened after the last phase ended, outstanding messages
    /// declared lost included.
    Done {
        /// The wind-down's measurements.
        tail: Snapshot,
    },
}

/// The connected viewers the pacer can ask for renegotiations.
#[derive(Default)]
pub struct Registry {
    viewers: Mutex<IndexMap<u64, mpsc::Sender<Command>>>,
    next: AtomicU64,
}

/// Removes a viewer from the registry when dropped.
pub struct Registered<'a> {
    registry: &'a Registry,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut v) = self.registry.viewers.lock() {
            v.swap_remove(&self.id);
        }
    }
}

impl Registry {
    /// Adds a connected viewer's command queue.
    pub fn register(&self, tx: mpsc::Sender<Command>) -> Registered<'_> {
        let id = self.next.fetch_add(1, Relaxed);
        if let Ok(mut v) = self.viewers.lock() {
            v.insert(id, tx);
        }
        Registered { registry: self, id }
    }

    /// Asks a random viewer to renegotiate; false when none could take it.
    fn renegotiate(&self, rng: &mut StdRng) -> bool {
        let Ok(v) = self.viewers.lock() else {
            return false;
        };
        if v.is_empty() {
            return false;
        }
        let i = rng.random_range(0..v.len());
        v.get_index(i)
            .is_some_and(|(_, tx)| tx.try_send(Command::Renegotiate).is_ok())
    }
}

/// What every viewer of a process shares.
pub struct Ctx {
    /// The plan.
    pub spec: Spec,
    /// Parsed target URLs.
    pub targets: Vec<Target>,
    /// The captures to send.
    pub payloads: Payloads,
    /// Measurements.
    pub stats: Stats,
    /// Outstanding relayed messages.
    pub ledger: Ledger,
    /// Viewers that can take a renegotiation.
    pub registry: Registry,
    /// Cancelled first at wind-down: viewers start no new negotiation but complete those in
    /// flight.
    pub quiesce: CancellationToken,
    /// Cancelled once nothing is in flight: viewers leave.
    pub finish: CancellationToken,
    /// Viewers with a message due or a join unanswered.
    pub busy: AtomicI64,
    zipf: Zipf<f64>,
    next_nego: AtomicU64,
}

impl Ctx {
    /// Builds the shared state of a process from its spec.
    ///
    /// # Errors
    /// A target or a distribution parameter the spec shouldn't have let through.
    pub fn new(spec: Spec) -> anyhow::Result<Self> {
        let targets = spec
            .urls
            .iter()
            .map(|u| Target::parse(u, spec.msgpack))
            .collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(!targets.is_empty(), "no target URL");
        let payloads = Payloads::load(Duration::from_millis(spec.cand_window_ms), spec.minified)?;
        let zipf = Zipf::new(f64::from(spec.videos), spec.zipf)
            .map_err(|e| anyhow::anyhow!("zipf distribution: {e}"))?;
        Ok(Self {
            targets,
            payloads,
            stats: Stats::default(),
            ledger: Ledger::default(),
            registry: Registry::default(),
            quiesce: CancellationToken::new(),
            finish: CancellationToken::new(),
            busy: AtomicI64::new(0),
            zipf,
            next_nego: AtomicU64::new(1),
            spec,
        })
    }

    /// A swarm id drawn by popularity. Each worker process has its own copy of the catalogue
    /// (`w<N>` in the id), so a swarm's viewers all live in one process and every message is
    /// accounted for in one ledger; the seed's tag keeps runs apart.
    pub fn swarm_for(&self, rng: &mut StdRng) -> String {
        let rank = self.zipf.sample(rng) as u64;
        format!(
            "sim{:04x}-w{}-v{rank}",
            self.spec.seed & 0xffff,
            self.spec.worker
        )
    }

    /// A new negotiation number.
    pub fn new_nego(&self) -> u64 {
        self.next_nego.fetch_add(1, Relaxed)
    }
}

/// Runs `spec` until its phases end or `stop` is cancelled, sending events to `events`.
///
/// # Errors
/// Only when the spec can't be set up; everything the tracker does is measured, not an error.
pub async fn run(
    spec: Spec,
    stop: CancellationToken,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let ctx = Arc::new(Ctx::new(spec)?);
    let phases = ctx.spec.phases.clone();
    let start = Instant::now();
    let viewers = TaskTracker::new();
    // Cancelled when the grace time is over: viewers still running are dropped.
    let kill = CancellationToken::new();
    let load = CancellationToken::new();
    let arrivals = tokio::spawn(arrive(
        Arc::clone(&ctx),
        phases.clone(),
        start,
        viewers.clone(),
        kill.clone(),
        load.clone(),
    ));
    let pacer = tokio::spawn(pace(Arc::clone(&ctx), phases.clone(), start, load.clone()));

    let mut cpu = process_cpu_ms();
    let mut last = start;
    let mut take = |now: Instant| {
        let c = process_cpu_ms();
        let lost = ctx
            .ledger
            .sweep(std_instant(now) - Duration::from_millis(ctx.spec.lost_after_ms));
        ctx.stats.count(C::lost, lost);
        let snap = ctx.stats.take(now - last, c.saturating_sub(cpu));
        cpu = c;
        last = now;
        snap
    };

    let mut seq = 0;
    let mut phase_end = start;
    'phases: for (i, phase) in phases.iter().enumerate() {
        phase_end += Duration::from_millis(phase.duration_ms);
        let mut acc = Snapshot::default();
        let mut next_tick = Instant::now() + Duration::from_secs(1);
        loop {
            let wake = next_tick.min(phase_end);
            let stopped = tokio::select! {
                () = sleep_until(wake) => false,
                () = stop.cancelled() => true,
            };
            let now = Instant::now();
            let snap = take(now);
            acc.then(&snap);
            let _ = events.send(Event::Tick {
                seq,
                phase: i,
                t_s: (now - start).as_secs_f64(),
                snapshot: snap,
            });
            seq += 1;
            if stopped {
                break 'phases;
            }
            if now >= phase_end {
                let _ = events.send(Event::PhaseEnd {
                    phase: i,
                    snapshot: acc,
                });
                break;
            }
            next_tick = now + Duration::from_secs(1);
        }
    }

    // Wind down: no more arrivals or renegotiations; negotiations in flight complete; then
    // viewers leave. Leaving only once nothing is in flight keeps the end of a run from
    // refusing its own last messages.
    load.cancel();
    let _ = arrivals.await;
    let _ = pacer.await;
    ctx.quiesce.cancel();
    let grace = Duration::from_millis(ctx.spec.grace_ms);
    let quiet_by = Instant::now() + grace / 2;
    let mut idle_polls = 0;
    while idle_polls < 2 && Instant::now() < quiet_by {
        // Twice idle in a row: a message sent just before the first poll has arrived.
        idle_polls = if ctx.busy.load(Relaxed) <= 0 {
            idle_polls + 1
        } else {
            0
        };
        tokio::time::sleep(QUIESCE_POLL).await;
    }
    ctx.finish.cancel();
    viewers.close();
    let remaining = grace.saturating_sub(grace / 2);
    if tokio::time::timeout(remaining, viewers.wait())
        .await
        .is_err()
    {
        kill.cancel();
        viewers.wait().await;
    }
    let now = Instant::now();
    let mut tail = take(now);
    // Whatever is still outstanding now will never be delivered.
    let lost = ctx.ledger.sweep(std_instant(now) + Duration::from_secs(1));
    tail.counters.lost += lost;
    let _ = events.send(Event::Done { tail });
    Ok(())
}

fn std_instant(t: Instant) -> std::time::Instant {
    t.into_std()
}

/// Starts viewers at each phase's rate until the phases end or `load` is cancelled.
async fn arrive(
    ctx: Arc<Ctx>,
    phases: Vec<Phase>,
    start: Instant,
    viewers: TaskTracker,
    kill: CancellationToken,
    load: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(ctx.spec.seed ^ 0x5151);
    let mut id = 0u64;
    let mut phase_start = start;
    let mut next = start;
    for phase in phases {
        let phase_end = phase_start + Duration::from_millis(phase.duration_ms);
        let Ok(gap) = Exp::new(phase.conn_rate.max(1e-9)) else {
            return;
        };
        next = next.max(phase_start);
        loop {
            next += Duration::from_secs_f64(gap.sample(&mut rng).min(3600.0));
            if next >= phase_end {
                // The draw past the end is discarded: the next phase draws at its own rate.
                next = phase_end;
                break;
            }
            tokio::select! {
                () = sleep_until(next) => {}
                () = load.cancelled() => return,
            }
            let behind = Instant::now().saturating_duration_since(next);
            ctx.stats.lag(behind);
            let ctx = Arc::clone(&ctx);
            let kill = kill.clone();
            let vid = id;
            id += 1;
            viewers.spawn(async move {
                tokio::select! {
                    () = viewer::run(ctx, vid) => {}
                    () = kill.cancelled() => {}
                }
            });
        }
        phase_start = phase_end;
    }
}

/// Asks random viewers for extra negotiations at each phase's rate.
async fn pace(ctx: Arc<Ctx>, phases: Vec<Phase>, start: Instant, load: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(ctx.spec.seed ^ 0xA5A5);
    let mut phase_start = start;
    for phase in phases {
        let phase_end = phase_start + Duration::from_millis(phase.duration_ms);
        if phase.reneg_rate <= 0.0 {
            tokio::select! {
                () = sleep_until(phase_end) => {}
                () = load.cancelled() => return,
            }
            phase_start = phase_end;
            continue;
        }
        let Ok(gap) = Exp::new(phase.reneg_rate) else {
            return;
        };
        let mut next = phase_start;
        loop {
            next += Duration::from_secs_f64(gap.sample(&mut rng).min(3600.0));
            if next >= phase_end {
                break;
            }
            tokio::select! {
                () = sleep_until(next) => {}
                () = load.cancelled() => return,
            }
            if !ctx.registry.renegotiate(&mut rng) {
                ctx.stats.count(C::renegotiations_skipped, 1);
            }
        }
        phase_start = phase_end;
    }
}
