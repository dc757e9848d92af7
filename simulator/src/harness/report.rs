//! The report of a run, for either mode: per step, over time, in total, the knee, and the
//! table people read. A mode fills in its own figures (`S`, `P`, `K`, `T`, flattened into the
//! JSON beside the shared ones), so each mode's report keeps its field names.

use std::fmt::Write as _;

use serde::Serialize;

/// One step (or the whole run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepReport<S> {
    /// Step number, from 0 (the total has the number of steps).
    pub index: usize,
    /// Length, seconds.
    pub seconds: f64,
    /// The mode's figures.
    #[serde(flatten)]
    pub m: S,
    /// CPU the simulator used (all its processes), in cores.
    pub sim_cpu_cores: f64,
    /// CPU the busiest simulator process used, in cores (each has one thread: near 1, it ran
    /// out).
    pub sim_cpu_max_cores: f64,
    /// The simulator's CPU as a share of the CPUs it may run on (local workers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_cpu_share: Option<f64>,
    /// How far the simulator's schedule fell behind at worst, ms.
    pub sim_lag_ms: u64,
    /// CPU the tracker used (`--tracker-pid`), in cores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_cpu_cores: Option<f64>,
    /// The same as a share of the CPUs the tracker may run on (its affinity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_cpu_share: Option<f64>,
    /// How busy the tracker's CPUs were with anything (the tracker, and whatever else shares
    /// them), as a share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_cpus_busy: Option<f64>,
    /// How busy the simulator's CPUs (the parent's affinity) were with anything, as a share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_cpus_busy: Option<f64>,
    /// In a ramp: `held`, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

/// One point of the timeline (about a second).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Point<P> {
    /// Seconds since the start.
    pub t_s: f64,
    /// The step it belongs to.
    pub step: usize,
    /// The mode's figures.
    #[serde(flatten)]
    pub m: P,
    /// CPU the simulator used, in cores.
    pub sim_cpu_cores: f64,
    /// CPU the tracker used, in cores (`--tracker-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_cpu_cores: Option<f64>,
}

/// The knee of a ramp: the last step that held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Knee<K> {
    /// The step.
    pub step: usize,
    /// The mode's figures.
    #[serde(flatten)]
    pub m: K,
    /// CPU the tracker used in it, in cores (`--tracker-pid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracker_cpu_cores: Option<f64>,
    /// CPU the simulator used in it, in cores.
    pub sim_cpu_cores: f64,
}

/// A whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report<S, P, K, T> {
    /// `run`, `ramp`, `webtorrent run` or `webtorrent ramp`.
    pub mode: String,
    /// Target URLs.
    pub urls: Vec<String>,
    /// Worker processes (local and remote).
    pub workers: usize,
    /// The settings of the run.
    pub settings: serde_json::Value,
    /// Per step (one for a fixed load).
    pub steps: Vec<StepReport<S>>,
    /// The whole run, wind-down included.
    pub total: StepReport<S>,
    /// About once a second.
    pub timeline: Vec<Point<P>>,
    /// The mode's accounting of every message.
    #[serde(flatten)]
    pub totals: T,
    /// For ramps: the last step that held; `None` when even the first failed.
    pub knee: Option<Knee<K>>,
    /// For ramps: why the ramp stopped.
    pub outcome: Option<String>,
    /// Problems of the simulator itself (a worker that failed, a run cut short).
    pub problems: Vec<String>,
}

impl<S, P, K, T> Report<S, P, K, T> {
    /// True for a ramp.
    pub fn is_ramp(&self) -> bool {
        self.mode.ends_with("ramp")
    }

    /// The table people read: the mode's header and rows (steps, then `all`), its summary, the
    /// knee, why the ramp ended, and problems.
    pub fn table(
        &self,
        header: &str,
        row: impl Fn(&str, &StepReport<S>) -> String,
        summary: &str,
        knee: impl Fn(&Knee<K>) -> String,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{header}  verdict");
        for s in &self.steps {
            let _ = writeln!(
                out,
                "{}  {}",
                row(&s.index.to_string(), s),
                s.verdict.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(out, "{}", row("all", &self.total));
        out.push('\n');
        out.push_str(summary);
        let cpu = |s: &StepReport<S>| match s.tracker_cpu_cores {
            Some(t) => format!(
                "simulator {:.2} cores (busiest process {:.2}), tracker {t:.2} cores",
                s.sim_cpu_cores, s.sim_cpu_max_cores
            ),
            None => format!(
                "simulator {:.2} cores (busiest process {:.2})",
                s.sim_cpu_cores, s.sim_cpu_max_cores
            ),
        };
        let _ = writeln!(out, "cpu: {}", cpu(&self.total));
        if self.is_ramp() {
            match &self.knee {
                Some(k) => {
                    let _ = writeln!(out, "knee: step {} — {}", k.step, knee(k));
                }
                None => {
                    let _ = writeln!(out, "knee: none (the first step already failed)");
                }
            }
            if let Some(o) = &self.outcome {
                let _ = writeln!(out, "ramp ended: {o}");
            }
        }
        for p in &self.problems {
            let _ = writeln!(out, "problem: {p}");
        }
        out
    }
}
