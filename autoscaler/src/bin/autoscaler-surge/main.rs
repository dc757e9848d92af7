//! `autoscaler-surge`: a flash crowd against a running fleet and its autoscaler, with the
//! figures a player would see (failed joins, join latency) and what the autoscaler did
//! (instances against the load, headroom at each decision, overshoot, scale-in). Used by
//! `scripts/demo --scenario surge` and by the autoscaler's surge test; it starts only the
//! simulators: the fleet (HAProxy, Redis, the autoscaler) is the caller's.

mod chart;
mod report;
mod scenario;
mod text;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

/// Runs a flash crowd through the front end and reports what happened.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    scenario: scenario::Scenario,
    /// Run nothing: draw the chart (and print the report) of a run's `surge.json`.
    #[arg(long)]
    replay: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.replay {
        Some(path) => replay(&cli.scenario, path),
        None => surge(&cli.scenario),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autoscaler-surge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn surge(sc: &scenario::Scenario) -> anyhow::Result<()> {
    let outcome = scenario::run(sc)?;
    let figures = report::figures(sc, &outcome);
    let json = serde_json::to_vec_pretty(&figures).context("encode figures")?;
    std::fs::write(sc.out.join("surge.json"), json).context("write surge.json")?;
    std::fs::write(sc.out.join("surge.svg"), chart::svg(sc, &figures))
        .context("write surge.svg")?;
    print!("{}", text::text(sc, &figures));
    println!(
        "(chart {}, figures {})",
        sc.out.join("surge.svg").display(),
        sc.out.join("surge.json").display()
    );
    Ok(())
}

fn replay(sc: &scenario::Scenario, path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let figures: report::Figures = serde_json::from_slice(&text).context("not a surge.json")?;
    std::fs::create_dir_all(&sc.out).context("create the out folder")?;
    std::fs::write(sc.out.join("surge.svg"), chart::svg(sc, &figures))
        .context("write surge.svg")?;
    print!("{}", text::text(sc, &figures));
    Ok(())
}
