//! Drives a run of either mode: starts its workers (in this process, as child processes, or on
//! other hosts), merges what they report, reads the tracker's CPU, shows progress, judges ramp
//! steps, stops at the knee, and builds the report.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::cpu;
use super::engine::Event;
use super::mode::{Mode, ReportOf};
use super::options::{Bounds, Processes};
use super::plan::{self, Job, Phase};
use super::progress::Progress;
use super::ramp;
use super::report::{Knee, Point, StepReport};
use super::stats::Snapshot;
use super::workers::{self, Assignment, EVENT_QUEUE, FromWorker};

/// A run, validated.
#[derive(Debug, Clone)]
pub struct Run<S> {
    /// `run`, `ramp`, `webtorrent run`, `webtorrent ramp`.
    pub label: String,
    /// Target URLs.
    pub urls: Vec<String>,
    /// The steps, for the whole run.
    pub phases: Vec<Phase>,
    /// The mode's settings.
    pub spec: S,
    /// Who carries the load, and the tracker to watch.
    pub processes: Processes,
    /// The run's seed.
    pub seed: u64,
    /// Lost-after bound, ms.
    pub lost_after_ms: u64,
    /// Wind-down time, ms.
    pub grace_ms: u64,
    /// A ramp's bounds (`None`: run every step).
    pub bounds: Option<Bounds>,
    /// No progress line.
    pub quiet: bool,
}

/// The tracker's CPU (all of `--tracker-pid`), read between two moments.
struct TrackerCpu {
    pids: Vec<u32>,
    allowed: std::collections::BTreeSet<usize>,
    cpus: f64,
    last: (Instant, u64),
}

impl TrackerCpu {
    fn new(pids: &[u32]) -> Option<Self> {
        if pids.is_empty() {
            return None;
        }
        let allowed = pids.iter().filter_map(|p| cpu::allowed_cpus(*p)).fold(
            std::collections::BTreeSet::new(),
            |mut all, c| {
                all.extend(c);
                all
            },
        );
        Some(Self {
            pids: pids.to_vec(),
            cpus: allowed.len().max(1) as f64,
            allowed,
            last: (Instant::now(), Self::ms(pids)?),
        })
    }

    fn ms(pids: &[u32]) -> Option<u64> {
        pids.iter().map(|p| cpu::of_pid_ms(*p)).sum()
    }

    /// Cores used since the last reading; `None` over less than a quarter of a second (the
    /// kernel counts CPU time in 10 ms ticks), which then counts into the next reading.
    fn read(&mut self) -> Option<f64> {
        let now = Instant::now();
        let (then, was) = self.last;
        let wall = (now - then).as_secs_f64();
        if wall < 0.25 {
            return None;
        }
        let ms = Self::ms(&self.pids)?;
        self.last = (now, ms);
        Some(ms.saturating_sub(was) as f64 / 1000.0 / wall)
    }
}

/// How busy a set of CPUs was (with anything), between two moments.
struct CpusBusy {
    cpus: std::collections::BTreeSet<usize>,
    last: (u64, u64),
}

impl CpusBusy {
    fn new(cpus: Option<std::collections::BTreeSet<usize>>) -> Option<Self> {
        let cpus = cpus?;
        let last = cpu::cpus_busy(&cpus)?;
        Some(Self { cpus, last })
    }

    /// The busy share since the last reading.
    fn read(&mut self) -> Option<f64> {
        let now = cpu::cpus_busy(&self.cpus)?;
        let (busy, total) = std::mem::replace(&mut self.last, now);
        let total = now.1.saturating_sub(total);
        (total > 0).then(|| now.0.saturating_sub(busy) as f64 / total as f64)
    }
}

/// What the controller reads of the machine at each step's end.
struct Machine {
    tracker: Option<TrackerCpu>,
    tracker_cpus: Option<CpusBusy>,
    sim_cpus: Option<CpusBusy>,
    /// How many CPUs the simulator may use, when all its workers are on this machine.
    sim_cpu_count: Option<usize>,
}

impl Machine {
    fn new(pids: &[u32], all_local: bool) -> Self {
        let tracker = TrackerCpu::new(pids);
        let tracker_cpus = tracker
            .as_ref()
            .and_then(|t| CpusBusy::new(Some(t.allowed.clone())));
        Self {
            tracker,
            tracker_cpus,
            sim_cpus: CpusBusy::new(cpu::own_cpus()),
            sim_cpu_count: cpu::own_cpus().map(|c| c.len()).filter(|_| all_local),
        }
    }

    fn read(&mut self) -> Reading {
        Reading {
            tracker: self
                .tracker
                .as_mut()
                .and_then(|t| Some((t.read()?, t.cpus))),
            tracker_busy: self.tracker_cpus.as_mut().and_then(CpusBusy::read),
            sim_busy: self.sim_cpus.as_mut().and_then(CpusBusy::read),
            sim_cpus: self.sim_cpu_count,
        }
    }
}

/// One reading of [`Machine`].
#[derive(Default)]
struct Reading {
    tracker: Option<(f64, f64)>,
    tracker_busy: Option<f64>,
    sim_busy: Option<f64>,
    sim_cpus: Option<usize>,
}

fn step_report<M: Mode>(
    index: usize,
    phase: Option<&Phase>,
    s: &Snapshot,
    machine: Reading,
) -> StepReport<M::Step> {
    let tracker = machine.tracker;
    StepReport {
        index,
        seconds: s.seconds(),
        m: M::step(phase, s),
        sim_cpu_cores: s.cpu_cores(),
        sim_cpu_max_cores: s.cpu_max_cores,
        sim_cpu_share: machine.sim_cpus.map(|n| s.cpu_cores() / n.max(1) as f64),
        sim_lag_ms: s.lag_ms,
        tracker_cpu_cores: tracker.map(|t| t.0),
        tracker_cpu_share: tracker.map(|t| t.0 / t.1),
        tracker_cpus_busy: machine.tracker_busy,
        sim_cpus_busy: machine.sim_busy,
        verdict: None,
    }
}

/// Starts the workers of `run`; their reports arrive on the returned channel.
fn start<M: Mode>(
    run: &Run<M::Spec>,
    stop: &CancellationToken,
) -> anyhow::Result<mpsc::Receiver<(usize, FromWorker)>> {
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let n = run.processes.total();
    let workers = u8::try_from(n).unwrap_or(u8::MAX);
    let job = |w: usize| {
        let w8 = u8::try_from(w).unwrap_or(u8::MAX);
        Job {
            worker: w8,
            workers,
            seed: plan::seed_of(run.seed, w8),
            run_seed: run.seed,
            phases: plan::share(&run.phases, w8, workers, M::WHOLE),
            lost_after_ms: run.lost_after_ms,
            grace_ms: run.grace_ms,
            spec: run.spec.clone(),
        }
    };
    // Ticks come every second; a step's end and the wind-down can take the grace time more.
    let silence = Duration::from_millis(run.grace_ms) + Duration::from_secs(30);
    if n == 1 && run.processes.worker_at.is_empty() {
        let job = job(0);
        let stop = stop.clone();
        workers::local(0, move |events| M::work(job, stop, events), tx);
        return Ok(rx);
    }
    let assignment = |w: usize| -> anyhow::Result<Assignment> {
        Ok(Assignment {
            mode: M::NAME.into(),
            job: serde_json::to_value(job(w))?,
        })
    };
    let local = usize::from(run.processes.workers);
    for w in 0..local {
        workers::child(w, &assignment(w)?, silence, stop.clone(), tx.clone())?;
    }
    for (i, addr) in run.processes.worker_at.iter().enumerate() {
        let w = local + i;
        workers::remote(w, *addr, &assignment(w)?, silence, stop.clone(), tx.clone());
    }
    Ok(rx)
}

/// Runs `run` and returns its report.
///
/// # Errors
/// When a worker can't be started.
pub async fn drive<M: Mode>(run: Run<M::Spec>) -> anyhow::Result<ReportOf<M>> {
    let n = run.processes.total();
    let stop = CancellationToken::new();
    let mut rx = start::<M>(&run, &stop)?;
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
    }
    let pids = &run.processes.tracker_pid;
    let mut tracker_ticks = TrackerCpu::new(pids);
    let all_local = run.processes.worker_at.is_empty();
    let mut machine_steps = Machine::new(pids, all_local);
    let mut machine_all = Machine::new(pids, all_local);

    let planned: u64 = run.phases.iter().map(|p| p.duration_ms).sum();
    let grace = Duration::from_millis(run.grace_ms);
    // A run ends within its duration plus the grace time; this is the backstop if a worker
    // doesn't.
    let mut hard_stop =
        Instant::now() + Duration::from_millis(planned) + grace * 2 + Duration::from_secs(10);
    let mut cut_short = 0;

    let mut progress = Progress::new(run.quiet, run.phases.len());
    let mut report = ReportOf::<M> {
        mode: run.label.clone(),
        urls: run.urls.clone(),
        workers: n,
        settings: serde_json::json!({
            "spec": run.spec,
            "phases": run.phases,
            "seed": run.seed,
            "lost_after_ms": run.lost_after_ms,
            "grace_ms": run.grace_ms,
            "workers": run.processes.workers,
            "worker_at": run.processes.worker_at,
            "tracker_pid": run.processes.tracker_pid,
        }),
        steps: Vec::new(),
        total: StepReport::default(),
        timeline: Vec::new(),
        totals: M::Totals::default(),
        knee: None,
        outcome: None,
        problems: Vec::new(),
    };
    let mut per_worker_total = vec![Snapshot::default(); n];
    let mut ticks: BTreeMap<u64, (usize, f64, usize, Snapshot)> = BTreeMap::new();
    let mut phase_ends: BTreeMap<usize, (usize, Snapshot)> = BTreeMap::new();
    let mut finished = 0;
    let mut broke = false;
    while finished < n {
        let (w, msg) = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            () = sleep_until(hard_stop) => {
                cut_short += 1;
                report.problems.push("the run went past its duration and grace time; stopped it".into());
                stop.cancel();
                if cut_short > 1 {
                    break;
                }
                hard_stop = Instant::now() + grace + Duration::from_secs(10);
                continue;
            }
        };
        let ev = match msg {
            FromWorker::Failed(why) => {
                report.problems.push(why);
                finished += 1;
                continue;
            }
            FromWorker::Event(ev) => *ev,
        };
        match ev {
            Event::Tick {
                seq,
                phase,
                t_s,
                snapshot,
            } => {
                if let Some(t) = per_worker_total.get_mut(w) {
                    t.then(&snapshot);
                }
                let e = ticks
                    .entry(seq)
                    .or_insert_with(|| (0, t_s, phase, Snapshot::default()));
                e.0 += 1;
                e.1 = e.1.max(t_s);
                e.3.beside(&snapshot);
                if e.0 == n {
                    let point = Point {
                        t_s: e.1,
                        step: e.2,
                        m: M::point(&e.3),
                        sim_cpu_cores: e.3.cpu_cores(),
                        tracker_cpu_cores: tracker_ticks.as_mut().and_then(TrackerCpu::read),
                    };
                    progress.tick(point.step, &M::progress(&point));
                    report.timeline.push(point);
                    ticks.remove(&seq);
                }
            }
            Event::PhaseEnd { phase, snapshot } => {
                let e = phase_ends.entry(phase).or_default();
                e.0 += 1;
                e.1.beside(&snapshot);
                if e.0 == n {
                    let mut step =
                        step_report::<M>(phase, run.phases.get(phase), &e.1, machine_steps.read());
                    if let Some(bounds) = &run.bounds
                        && !broke
                    {
                        match ramp::verdict(&step, M::judge(&step, bounds)) {
                            Ok(()) => step.verdict = Some("held".into()),
                            Err(why) => {
                                report.outcome = Some(format!("step {phase} failed: {why}"));
                                step.verdict = Some(why);
                                broke = true;
                                stop.cancel();
                            }
                        }
                    }
                    progress.step(&M::step_line(&step));
                    report.steps.push(step);
                }
            }
            Event::Done { tail } => {
                if let Some(t) = per_worker_total.get_mut(w) {
                    t.then(&tail);
                }
                finished += 1;
            }
        }
    }
    progress.finish();
    report.steps.sort_by_key(|s| s.index);
    // Ticks that not every worker reported (one failed): show what there is.
    for (_, t_s, phase, snap) in ticks.values() {
        report.timeline.push(Point {
            t_s: *t_s,
            step: *phase,
            m: M::point(snap),
            sim_cpu_cores: snap.cpu_cores(),
            tracker_cpu_cores: None,
        });
    }
    report.timeline.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    let mut total = Snapshot::default();
    for t in &per_worker_total {
        total.beside(t);
    }
    report.total = step_report::<M>(report.steps.len(), None, &total, machine_all.read());
    let (totals, problems) = M::totals(&total);
    report.totals = totals;
    report.problems.extend(problems);
    if run.bounds.is_some() {
        report.knee = ramp::knee(&report.steps).and_then(|k| {
            let s = report.steps.iter().find(|s| s.index == k)?;
            Some(Knee {
                step: k,
                m: M::knee(s),
                tracker_cpu_cores: s.tracker_cpu_cores,
                sim_cpu_cores: s.sim_cpu_cores,
            })
        });
        if report.outcome.is_none() {
            report.outcome = Some(if report.steps.len() == run.phases.len() {
                "every step held: raise the step count or the load to find the knee".into()
            } else {
                "stopped before the last step".into()
            });
        }
    }
    Ok(report)
}
