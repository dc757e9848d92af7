//! The SVG plot of a run: a mode's panels (throughput, connections, latency) over time, with a
//! rule where each step starts and a red one where the knee's step ends.

use std::path::Path;

use plotters::prelude::*;

use super::report::Point;

/// The panel both modes end with: the simulator's CPU and the tracker's (`--tracker-pid`).
pub fn cpu_panel<P>() -> Panel<'static, Point<P>> {
    Panel {
        title: "CPU, in cores",
        unit: "cores",
        series: vec![
            ("simulator", BLUE, |p: &Point<P>| p.sim_cpu_cores),
            ("tracker", RED, |p| p.tracker_cpu_cores.unwrap_or(0.0)),
        ],
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// A line of a panel: its name, colour, and value at each point.
pub type Series<'a, P> = (&'a str, RGBColor, fn(&P) -> f64);

/// One panel: some series of the timeline against time.
pub struct Panel<'a, P> {
    /// Its caption.
    pub title: &'a str,
    /// The unit of its y axis.
    pub unit: &'a str,
    /// Its lines.
    pub series: Vec<Series<'a, P>>,
}

#[derive(Clone, Copy)]
/// A timeline: its points, and how to read a point's time (seconds since the start) and step.
pub struct Timeline<'a, P> {
    /// The points, in time order.
    pub points: &'a [P],
    /// A point's time, seconds.
    pub t_s: fn(&P) -> f64,
    /// A point's step.
    pub step: fn(&P) -> usize,
}

/// Draws `panels` of `points` against time, one above the other, with a rule where each step
/// starts and a red one where the knee's step (`knee`) ends.
///
/// # Errors
/// When the file can't be written.
pub fn draw<P>(
    path: &Path,
    title: &str,
    timeline: &Timeline<'_, P>,
    knee: Option<usize>,
    panels: &[Panel<'_, P>],
) -> anyhow::Result<()> {
    let Timeline { points, t_s, step } = *timeline;
    let t_max = points.iter().map(t_s).fold(1.0, f64::max);
    // Where each step starts, for the vertical rules; and where the knee's step ends.
    let mut step_starts = Vec::new();
    let mut prev = usize::MAX;
    let mut t_prev = 0.0;
    for p in points {
        if step(p) != prev {
            step_starts.push((step(p), t_prev));
            prev = step(p);
        }
        t_prev = t_s(p);
    }
    let knee_end = knee.and_then(|k| {
        points
            .iter()
            .filter(|p| step(p) == k)
            .map(t_s)
            .reduce(f64::max)
    });
    let height = 320 * u32::try_from(panels.len()).unwrap_or(3);
    let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    for (panel, area) in panels.iter().zip(root.split_evenly((panels.len(), 1))) {
        let y_max = points
            .iter()
            .flat_map(|p| panel.series.iter().map(move |(_, _, f)| f(p)))
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .caption(panel.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(panel.unit)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(
                step_starts
                    .iter()
                    .map(|(_, t)| PathElement::new(vec![(*t, 0.0), (*t, y_max)], BLACK.mix(0.15))),
            )
            .map_err(err)?;
        if let Some(t) = knee_end {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(t, 0.0), (t, y_max)],
                    RED.stroke_width(2),
                )))
                .map_err(err)?
                .label("knee")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
        }
        for (name, color, f) in &panel.series {
            let color = *color;
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|p| (t_s(p), f(p))),
                    color,
                ))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
