//! Drives a run: starts the engine (in this process or in worker processes), merges what
//! they report, shows progress, judges ramp steps, stops at the knee, and builds the report.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::engine::{self, Event};
use crate::options::{LoadArgs, Phase};
use crate::progress::Progress;
use crate::ramp::{self, Bounds};
use crate::report::{Accounting, Point, Report, StepReport};
use crate::stats::Snapshot;
use crate::workers;

/// What to do with the steps.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Run every phase.
    Run,
    /// Judge each step; stop after the first that fails.
    Ramp(Bounds),
}

/// A message from an engine, local or in a worker process.
#[derive(Debug)]
pub enum FromWorker {
    /// An event of the engine.
    Event(Box<Event>),
    /// The worker ended without finishing.
    Failed(String),
}

/// Runs `phases` with `load`'s options and returns the report.
///
/// # Errors
/// When the engine can't start (a worker process can't be spawned, say).
pub async fn drive(
    mode: Mode,
    load: &LoadArgs,
    phases: Vec<Phase>,
    seed: u64,
) -> anyhow::Result<Report> {
    let n = usize::from(load.workers);
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, FromWorker)>();
    let specs: Vec<_> = (0..load.workers)
        .map(|w| load.spec(&phases, w, seed))
        .collect();
    let mut settings = serde_json::to_value(load.spec(&phases, 0, seed))?;
    if let Some(obj) = settings.as_object_mut() {
        obj.insert("phases".into(), serde_json::to_value(&phases)?);
        obj.remove("worker");
    }
    if n == 1 {
        let (etx, mut erx) = mpsc::unbounded_channel();
        let spec = specs
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no spec"))?;
        let engine = tokio::spawn(engine::run(spec, stop.clone(), etx));
        let tx2 = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = erx.recv().await {
                let _ = tx2.send((0, FromWorker::Event(Box::new(e))));
            }
            let failure = match engine.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("engine failed: {e:#}")),
                Err(e) => Some(format!("engine panicked: {e}")),
            };
            if let Some(f) = failure {
                let _ = tx2.send((0, FromWorker::Failed(f)));
            }
        });
    } else {
        workers::spawn(specs, stop.clone(), tx.clone())?;
    }
    drop(tx);
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
    }

    let planned: u64 = phases.iter().map(|p| p.duration_ms).sum();
    let grace = load.grace;
    // A run ends within its duration plus the grace time; this is the backstop if an engine
    // doesn't.
    let mut hard_stop =
        Instant::now() + Duration::from_millis(planned) + grace * 2 + Duration::from_secs(10);
    let mut cut_short = 0;

    let mut progress = Progress::new(load.quiet, phases.len());
    let mut report = Report {
        mode: match mode {
            Mode::Run => "run".into(),
            Mode::Ramp(_) => "ramp".into(),
        },
        urls: load.urls.clone(),
        workers: load.workers,
        settings,
        ..Report::default()
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
                per_worker_total[w].then(&snapshot);
                let e = ticks
                    .entry(seq)
                    .or_insert_with(|| (0, t_s, phase, Snapshot::default()));
                e.0 += 1;
                e.1 = e.1.max(t_s);
                e.3.beside(&snapshot);
                if e.0 == n {
                    let point = Point::new(e.1, e.2, &e.3);
                    progress.tick(&point);
                    report.timeline.push(point);
                }
            }
            Event::PhaseEnd { phase, snapshot } => {
                let e = phase_ends.entry(phase).or_default();
                e.0 += 1;
                e.1.beside(&snapshot);
                if e.0 == n {
                    let mut step = StepReport::new(phase, phases.get(phase), &e.1);
                    if let Mode::Ramp(bounds) = mode
                        && !broke
                    {
                        match ramp::judge(&step, &bounds) {
                            Ok(()) => step.verdict = Some("held".into()),
                            Err(why) => {
                                step.verdict = Some(why.clone());
                                report.outcome = Some(format!("step {phase} failed: {why}"));
                                broke = true;
                                stop.cancel();
                            }
                        }
                    }
                    progress.step(&step);
                    report.steps.push(step);
                }
            }
            Event::Done { tail } => {
                per_worker_total[w].then(&tail);
                finished += 1;
            }
        }
    }
    progress.finish();
    report.steps.sort_by_key(|s| s.index);
    // Ticks that not every worker reported (one failed): show what there is.
    for (count, t_s, phase, snap) in ticks.values() {
        if *count < n {
            report.timeline.push(Point::new(*t_s, *phase, snap));
        }
    }
    report.timeline.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    let mut total = Snapshot::default();
    for t in &per_worker_total {
        total.beside(t);
    }
    report.total = StepReport::new(report.steps.len(), None, &total);
    let c = &total.counters;
    report.accounting = Accounting {
        sent: c.sent(),
        delivered: c.delivered(),
        refused: c.refused,
        lost: c.lost,
        late: c.late,
        balanced: c.sent() == c.delivered() + c.refused + c.lost,
    };
    if let Mode::Ramp(_) = mode {
        report.knee = ramp::knee(&report.steps);
        if report.outcome.is_none() {
            report.outcome = Some(if report.steps.len() == phases.len() {
                "every step held: raise --max-steps or the rates to find the knee".into()
            } else {
                "stopped before the last step".into()
            });
        }
    }
    Ok(report)
}
