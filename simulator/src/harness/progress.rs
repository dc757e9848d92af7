//! The live progress line.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

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
    pub fn tick(&mut self, step: usize, line: &str) {
        self.step = step;
        self.bar
            .set_message(format!("step {}/{} | {line}", self.step + 1, self.steps));
    }

    /// Prints a finished step above the line.
    pub fn step(&mut self, line: &str) {
        if self.steps > 1 {
            self.bar.println(line);
        }
    }

    /// Removes the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
