//! The WebTorrent run's SVG plot: requests and relays per second, connections, and p99
//! latencies over time, drawn by the native mode's plotter.

use std::path::Path;

use plotters::prelude::{BLUE, CYAN, GREEN, MAGENTA, RED};

use super::report::{Point, Report};
use crate::plot::{Panel, Timeline, draw};

/// Writes `report`'s timeline as an SVG to `path`.
///
/// # Errors
/// When the file can't be written.
pub fn write(report: &Report, path: &Path) -> anyhow::Result<()> {
    let panels = [
        Panel {
            title: "requests sent, and offers + answers relayed, per second",
            unit: "per s",
            series: vec![
                ("requests/s", BLUE, |p: &Point| p.requests_per_s),
                ("relayed/s", GREEN, |p| p.relayed_per_s),
            ],
        },
        Panel {
            title: "connections open",
            unit: "connections",
            series: vec![("connections", MAGENTA, |p: &Point| p.connections as f64)],
        },
        Panel {
            title: "p99 latency",
            unit: "ms",
            series: vec![
                ("announce p99", BLUE, |p: &Point| p.announce_p99_ms),
                ("offer p99", RED, |p| p.offer_p99_ms),
                ("answer p99", CYAN, |p| p.answer_p99_ms),
            ],
        },
    ];
    let title = match &report.knee {
        Some(k) => format!(
            "swarmtrack simulator {}: knee at step {} ({} connections, {:.0} announces/s, {:.0} relayed/s)",
            report.mode, k.step, k.connections, k.announces_per_s, k.relayed_per_s
        ),
        None => format!("swarmtrack simulator {}", report.mode),
    };
    let timeline = Timeline {
        points: &report.timeline,
        t_s: |p| p.t_s,
        step: |p| p.step,
    };
    draw(
        path,
        &title,
        &timeline,
        report.knee.as_ref().map(|k| k.step),
        &panels,
    )
}
