//! The command line and the validated plan (`Spec`) it turns into.
//!
//! A `Spec` is what one process runs: its share of the rates, its source addresses, its own
//! copy of the video catalogue. The parent hands each worker process its `Spec` as JSON.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::target::Target;

/// Emulates browser viewers against swarmtrack: real SDP and ICE, Zipf-popular videos, and a
/// ramp that finds the load where the service stops keeping up.
#[derive(Debug, Parser)]
#[command(name = "simulator", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A fixed load for a duration.
    Run(RunArgs),
    /// Raise connections/sec and messages/sec step by step until p99 latency or loss crosses
    /// a bound; report the knee (the last step that held).
    Ramp(RampArgs),
    /// Browser WebTorrent peers against a tracker's `/announce` (closed loop; `--ramp` finds
    /// the knee).
    Webtorrent(crate::webtorrent::WebtorrentArgs),
    /// One worker process of a multi-process run (started by the simulator itself; reads its
    /// plan on stdin and writes events on stdout).
    #[command(hide = true)]
    Worker,
}

/// SDP as captured, or minified as the browser SDK sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum SdpMode {
    /// The browser's SDP and candidate lines, unchanged.
    Full,
    /// Data-channel fields only (the SDK's `m1` form).
    Minified,
}

/// Frame format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum FormatArg {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames.
    Msgpack,
}

/// Options every mode shares.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Tracker or front-end URL (ws://127.x.x.x:PORT/v1/ws); repeat for several, used round
    /// robin. A viewer told to `reconnect` comes back to the URL it used.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Videos in the catalogue; viewers pick one by Zipf popularity.
    #[arg(long, default_value_t = 1000)]
    pub videos: u32,
    /// Zipf exponent of video popularity (0 = uniform; about 1 for real catalogues).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Peers each viewer asks for when it joins.
    #[arg(long, default_value_t = 5)]
    pub want: u32,
    /// Shortest watch time; each viewer draws one uniformly between min and max.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub watch_min: Duration,
    /// Longest watch time.
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    pub watch_max: Duration,
    /// Share of viewers that are Firefox (the rest are Chromium).
    #[arg(long, default_value_t = 0.3)]
    pub firefox_share: f64,
    /// SDP as captured or minified.
    #[arg(long, value_enum, default_value = "full")]
    pub sdp: SdpMode,
    /// Frame format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: FormatArg,
    /// Loopback source addresses to spread connections over (127.0.W.1 ..= 127.0.W.N).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub sources: u8,
    /// Worker processes; each holds its share of the viewers (one process can hold at most
    /// about 19,000 connections: the descriptor limit).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub workers: u8,
    /// Candidate coalescing window, as the browser SDK does it.
    #[arg(long, default_value = "15ms", value_parser = humantime::parse_duration)]
    pub cand_window: Duration,
    /// A message neither delivered nor refused after this long is counted lost.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lost_after: Duration,
    /// Time allowed, after the last step, for viewers to finish and leave.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the SVG plot here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Random seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `run`: a fixed load.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Options shared with `ramp`.
    #[command(flatten)]
    pub load: LoadArgs,
    /// New viewers per second (Poisson arrivals).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Extra negotiations per second across all viewers (a viewer asks for one more peer and
    /// offers to it), to raise messages/sec independently of arrivals.
    #[arg(long, default_value_t = 0.0)]
    pub renegotiations: f64,
    /// How long to keep the load up.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

/// `ramp`: steps of rising load.
#[derive(Debug, Clone, Args)]
pub struct RampArgs {
    /// Options shared with `run`.
    #[command(flatten)]
    pub load: LoadArgs,
    /// New viewers per second in the first step.
    #[arg(long, default_value_t = 50.0)]
    pub start_rate: f64,
    /// Added to the viewer rate at each step.
    #[arg(long, default_value_t = 50.0)]
    pub rate_step: f64,
    /// Extra negotiations per second in the first step.
    #[arg(long, default_value_t = 0.0)]
    pub start_renegotiations: f64,
    /// Added to the extra negotiations per second at each step.
    #[arg(long, default_value_t = 0.0)]
    pub renegotiation_step: f64,
    /// Length of a step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Most steps.
    #[arg(long, default_value_t = 20)]
    pub max_steps: u32,
    /// A step fails when p99 join or relay latency is above this.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,
    /// A step fails when the share of messages refused or lost, or of connection attempts
    /// failed, is above this.
    #[arg(long, default_value_t = 0.01)]
    pub max_loss: f64,
}

/// One stretch of constant load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// New viewers per second (this process's share).
    pub conn_rate: f64,
    /// Extra negotiations per second (this process's share).
    pub reneg_rate: f64,
    /// Length.
    pub duration_ms: u64,
}

/// What one process runs, validated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// Target URLs, as given.
    pub urls: Vec<String>,
    /// Videos in the catalogue.
    pub videos: u32,
    /// Zipf exponent.
    pub zipf: f64,
    /// Peers asked for at join.
    pub want: u32,
    /// Watch time bounds, ms.
    pub watch_ms: (u64, u64),
    /// Share of Firefox viewers.
    pub firefox_share: f64,
    /// Minified SDP.
    pub minified: bool,
    /// MessagePack frames.
    pub msgpack: bool,
    /// Source addresses per worker.
    pub sources: u8,
    /// Candidate coalescing window, ms.
    pub cand_window_ms: u64,
    /// Lost-after bound, ms.
    pub lost_after_ms: u64,
    /// Wind-down time, ms.
    pub grace_ms: u64,
    /// The load, stretch by stretch.
    pub phases: Vec<Phase>,
    /// This worker's number (0-based).
    pub worker: u8,
    /// Worker processes in the run.
    pub workers: u8,
    /// Random seed of this worker.
    pub seed: u64,
}

/// Invalid options.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// `Err(Invalid(msg()))` unless `ok`.
pub(crate) fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), Invalid> {
    if ok { Ok(()) } else { Err(Invalid(msg())) }
}

/// `d` in whole milliseconds (saturating).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl LoadArgs {
    fn validate(&self) -> Result<(), Invalid> {
        for url in &self.urls {
            Target::parse(url, false).map_err(|e| Invalid(e.to_string()))?;
        }
        check(self.videos >= 1, || "--videos must be at least 1".into())?;
        check(self.zipf.is_finite() && self.zipf >= 0.0, || {
            "--zipf must be a number >= 0".into()
        })?;
        check((1..=256).contains(&self.want), || {
            "--want must be 1..=256".into()
        })?;
        check(self.watch_min <= self.watch_max, || {
            "--watch-min must not exceed --watch-max".into()
        })?;
        check(self.watch_max >= Duration::from_millis(100), || {
            "--watch-max must be at least 100ms".into()
        })?;
        check((0.0..=1.0).contains(&self.firefox_share), || {
            "--firefox-share must be within 0..=1".into()
        })?;
        check(self.lost_after >= Duration::from_millis(100), || {
            "--lost-after must be at least 100ms".into()
        })?;
        check(self.cand_window <= Duration::from_secs(1), || {
            "--cand-window must be at most 1s".into()
        })
    }

    /// The spec of worker `worker`, given the whole run's phases (rates divided here).
    pub fn spec(&self, phases: &[Phase], worker: u8, seed: u64) -> Spec {
        let share = f64::from(self.workers);
        Spec {
            urls: self.urls.clone(),
            videos: self.videos,
            zipf: self.zipf,
            want: self.want,
            watch_ms: (ms(self.watch_min), ms(self.watch_max)),
            firefox_share: self.firefox_share,
            minified: self.sdp == SdpMode::Minified,
            msgpack: self.format == FormatArg::Msgpack,
            sources: self.sources,
            cand_window_ms: ms(self.cand_window),
            lost_after_ms: ms(self.lost_after),
            grace_ms: ms(self.grace),
            phases: phases
                .iter()
                .map(|p| Phase {
                    conn_rate: p.conn_rate / share,
                    reneg_rate: p.reneg_rate / share,
                    duration_ms: p.duration_ms,
                })
                .collect(),
            worker,
            workers: self.workers,
            seed: seed.wrapping_add(u64::from(worker).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        }
    }
}

fn rate(name: &str, v: f64, max: f64) -> Result<(), Invalid> {
    check(v.is_finite() && (0.0..=max).contains(&v), || {
        format!("{name} must be within 0..={max}")
    })
}

impl RunArgs {
    /// The run's single phase.
    ///
    /// # Errors
    /// An option out of range, with the option's name.
    pub fn phases(&self) -> Result<Vec<Phase>, Invalid> {
        self.load.validate()?;
        rate("--rate", self.rate, 100_000.0)?;
        check(self.rate > 0.0, || "--rate must be above 0".into())?;
        rate("--renegotiations", self.renegotiations, 1_000_000.0)?;
        check(
            self.duration >= Duration::from_millis(100)
                && self.duration <= Duration::from_secs(86_400),
            || "--duration must be within 100ms..=24h".into(),
        )?;
        Ok(vec![Phase {
            conn_rate: self.rate,
            reneg_rate: self.renegotiations,
            duration_ms: ms(self.duration),
        }])
    }
}

impl RampArgs {
    /// The ramp's steps.
    ///
    /// # Errors
    /// An option out of range, with the option's name.
    pub fn phases(&self) -> Result<Vec<Phase>, Invalid> {
        self.load.validate()?;
        rate("--start-rate", self.start_rate, 100_000.0)?;
        rate("--rate-step", self.rate_step, 100_000.0)?;
        rate(
            "--start-renegotiations",
            self.start_renegotiations,
            1_000_000.0,
        )?;
        rate("--renegotiation-step", self.renegotiation_step, 1_000_000.0)?;
        check(self.start_rate > 0.0, || {
            "--start-rate must be above 0".into()
        })?;
        check(
            self.rate_step > 0.0 || self.renegotiation_step > 0.0,
            || "a ramp must raise something: --rate-step or --renegotiation-step above 0".into(),
        )?;
        check((1..=1000).contains(&self.max_steps), || {
            "--max-steps must be 1..=1000".into()
        })?;
        check(self.step >= Duration::from_millis(500), || {
            "--step must be at least 500ms".into()
        })?;
        check((0.0..=1.0).contains(&self.max_loss), || {
            "--max-loss must be within 0..=1".into()
        })?;
        Ok((0..self.max_steps)
            .map(|k| Phase {
                conn_rate: self.start_rate + f64::from(k) * self.rate_step,
                reneg_rate: self.start_renegotiations + f64::from(k) * self.renegotiation_step,
                duration_ms: ms(self.step),
            })
            .collect())
    }
}

/// Connections one process may need at once: every viewer that arrives while the first ones
/// are still watching, at the highest rate of the plan.
pub fn peak_connections(phases: &[Phase], watch_max: Duration, workers: u8) -> u64 {
    let top = phases.iter().map(|p| p.conn_rate).fold(0.0, f64::max) / f64::from(workers.max(1));
    let total_s = phases.iter().map(|p| p.duration_ms).sum::<u64>() as f64 / 1000.0;
    let window = watch_max.as_secs_f64().min(total_s);
    // 10 % for Poisson bursts and reconnects.
    (top * window * 11.0 / 10.0).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("simulator").chain(args.iter().copied()))
    }

    #[test]
    fn run_defaults_validate() {
        let cli = parse(&["run", "--url", "ws://127.0.0.1:1/v1/ws"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        let phases = r.phases().unwrap();
        assert_eq!(phases.len(), 1);
        let spec = r.load.spec(&phases, 0, 7);
        assert_eq!(spec.watch_ms, (10_000, 40_000));
    }

    #[test]
    fn bad_options_are_named() {
        let cli = parse(&["run", "--url", "ws://10.1.1.1:1/", "--rate", "5"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert!(r.phases().unwrap_err().0.contains("127.0.0.0/8"));
        let cli = parse(&[
            "run",
            "--url",
            "ws://127.0.0.1:1/",
            "--watch-min",
            "9s",
            "--watch-max",
            "1s",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert!(r.phases().unwrap_err().0.contains("--watch-min"));
        assert!(parse(&["run"]).is_err(), "--url is required");
        assert!(parse(&["run", "--url", "ws://127.0.0.1:1/", "--duration", "soon"]).is_err());
    }

    #[test]
    fn ramp_steps_rise_and_workers_share() {
        let cli = parse(&[
            "ramp",
            "--url",
            "ws://127.0.0.1:1/",
            "--start-rate",
            "100",
            "--rate-step",
            "50",
            "--max-steps",
            "3",
            "--workers",
            "2",
        ])
        .unwrap();
        let Command::Ramp(r) = cli.command else {
            panic!("not ramp")
        };
        let phases = r.phases().unwrap();
        let rates: Vec<f64> = phases.iter().map(|p| p.conn_rate).collect();
        assert_eq!(rates, [100.0, 150.0, 200.0]);
        let spec = r.load.spec(&phases, 1, 7);
        assert_eq!(spec.phases[2].conn_rate, 100.0);
        assert_eq!(peak_connections(&phases, Duration::from_secs(40), 2), 3300);
    }
}
