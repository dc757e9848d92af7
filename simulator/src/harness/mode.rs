//! What a mode (native viewers, WebTorrent peers) gives the harness: how one worker runs, and
//! how its measurements read as steps, timeline points, verdicts, the knee, the table and the
//! plot.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::engine::Event;
use super::options::Bounds;
use super::plan::{Job, Phase};
use super::plot::Panel;
use super::report::{Knee, Point, Report, StepReport};
use super::stats::Snapshot;

/// A mode's report.
pub type ReportOf<M> =
    Report<<M as Mode>::Step, <M as Mode>::Point, <M as Mode>::Knee, <M as Mode>::Totals>;

/// A load mode over the harness.
pub trait Mode: 'static {
    /// The mode's settings, the same for every worker.
    type Spec: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// Its figures of a step.
    type Step: Serialize + Clone + Default;
    /// Its figures of a timeline point.
    type Point: Serialize + Clone + Default;
    /// Its figures of the knee.
    type Knee: Serialize + Clone;
    /// Its accounting of the run.
    type Totals: Serialize + Default;

    /// Its name on the wire to workers.
    const NAME: &'static str;
    /// True when a step's target is a count (split among workers in whole numbers).
    const WHOLE: bool;

    /// Runs one worker's job until it ends or `stop`, sending events.
    fn work(
        job: Job<Self::Spec>,
        stop: CancellationToken,
        events: mpsc::Sender<Event>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static;

    /// The figures of `s`, measured over a step of load `phase` (`None` for the total).
    fn step(phase: Option<&Phase>, s: &Snapshot) -> Self::Step;
    /// Every bound `step` crossed (empty: it held).
    fn judge(step: &StepReport<Self::Step>, bounds: &Bounds) -> Vec<String>;
    /// The knee's figures, from the step that is the knee.
    fn knee(step: &StepReport<Self::Step>) -> Self::Knee;
    /// A timeline point's figures.
    fn point(s: &Snapshot) -> Self::Point;
    /// The run's accounting, and its problems (an unbalanced account is one).
    fn totals(total: &Snapshot) -> (Self::Totals, Vec<String>);

    /// The table's header.
    fn header() -> String;
    /// A row of the table.
    fn row(name: &str, s: &StepReport<Self::Step>) -> String;
    /// The lines under the table.
    fn summary(r: &ReportOf<Self>) -> String;
    /// The knee in words.
    fn knee_line(k: &Knee<Self::Knee>) -> String;
    /// The live progress line.
    fn progress(p: &Point<Self::Point>) -> String;
    /// A finished step, in one line.
    fn step_line(s: &StepReport<Self::Step>) -> String;
    /// The plot's panels.
    fn panels() -> Vec<Panel<'static, Point<Self::Point>>>;
    /// The plot's title.
    fn title(r: &ReportOf<Self>) -> String;
}
