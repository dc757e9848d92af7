//! The live progress line.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::report::{Point, StepReport};

/// One line on stderr, redrawn every tick; hidden when asked or when stderr isn't a terminal.
pub struct Progress {
    bar: ProgressBar,
    steps: usize,
    step: usize,
}

impl Progress {
    /// A progress line for a run of `steps` steps.
    pub fn new(quiet: bool, steps: usize) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        };
        Self {
            bar,
            steps,
            step: 0,
        }
    }

    /// Shows the latest second.
    pub fn tick(&mut self, p: &Point) {
        self.step = p.step;
        self.bar.set_message(format!(
            "step {}/{} | {:.0} conn/s | {:.0} msg/s sent, {:.0} delivered | {} viewers | join p99 {:.1} ms | relay p50 {:.1} p99 {:.1} ms | {} errors",
            self.step + 1,
            self.steps,
            p.conn_rate,
            p.msg_rate,
            p.delivered_rate,
            p.viewers,
            p.join_p99_ms,
            p.relay_p50_ms,
            p.relay_p99_ms,
            p.errors
        ));
    }

    /// Prints a finished step above the line.
    pub fn step(&mut self, s: &StepReport) {
        if self.steps > 1 {
            self.bar.println(format!(
                "step {}: {:.0} conn/s, {:.0} msg/s, relay p99 {:.2} ms, join p99 {:.2} ms, loss {:.2} %: {}",
                s.index,
                s.conn_rate,
                s.msg_rate,
                s.relay.p99_ms,
                s.join.p99_ms,
                s.loss_ratio * 100.0,
                s.verdict.as_deref().unwrap_or("done")
            ));
        }
    }

    /// Removes the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
