//! The native mode's command line (`run`, `ramp`) and the validated run it turns into.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::shared::Spec;
use crate::harness::controller::Run;
use crate::harness::options::{BoundArgs, Output, Processes};
use crate::harness::plan::{self, Invalid, Phase, check, ms};
use crate::target::Target;

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
    /// Candidate coalescing window, as the browser SDK does it.
    #[arg(long, default_value = "15ms", value_parser = humantime::parse_duration)]
    pub cand_window: Duration,
    /// A message neither delivered nor refused after this long is counted lost.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lost_after: Duration,
    /// Time allowed, after the last step, for viewers to finish and leave.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Report outputs and the seed.
    #[command(flatten)]
    pub output: Output,
    /// Worker processes and the tracker to watch.
    #[command(flatten)]
    pub processes: Processes,
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
    /// The bounds a step must stay within (p99 join and relay latency; messages refused or
    /// lost, errors per frame, failed connection attempts).
    #[command(flatten)]
    pub bounds: BoundArgs,
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

    /// The run of `phases` (for the whole run) with these options.
    ///
    /// # Errors
    /// An option out of range, with the option's name.
    pub fn run(
        &self,
        label: &str,
        phases: Vec<Phase>,
        bounds: Option<crate::harness::options::Bounds>,
        seed: u64,
    ) -> Result<Run<Spec>, Invalid> {
        self.processes.validate()?;
        Ok(Run {
            label: label.into(),
            urls: self.urls.clone(),
            phases,
            spec: Spec {
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
            },
            processes: self.processes.clone(),
            seed,
            lost_after_ms: ms(self.lost_after),
            grace_ms: ms(self.grace),
            bounds,
            quiet: self.output.quiet,
        })
    }
}

fn rate(name: &str, v: f64, max: f64) -> Result<(), Invalid> {
    check(v.is_finite() && (0.0..=max).contains(&v), || {
        format!("{name} must be within 0..={max}")
    })
}

impl RunArgs {
    /// The run: one step.
    ///
    /// # Errors
    /// An option out of range, with the option's name.
    pub fn run(&self, seed: u64) -> Result<Run<Spec>, Invalid> {
        self.load.run("run", self.phases()?, None, seed)
    }

    fn phases(&self) -> Result<Vec<Phase>, Invalid> {
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
            target: self.rate,
            extra: self.renegotiations,
            duration_ms: ms(self.duration),
        }])
    }
}

impl RampArgs {
    /// The ramp: its steps, judged against its bounds.
    ///
    /// # Errors
    /// An option out of range, with the option's name.
    pub fn run(&self, seed: u64) -> Result<Run<Spec>, Invalid> {
        let bounds = self.bounds.bounds()?;
        self.load.run("ramp", self.phases()?, Some(bounds), seed)
    }

    fn phases(&self) -> Result<Vec<Phase>, Invalid> {
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
        Ok(plan::ramp(
            self.start_rate,
            self.rate_step,
            self.start_renegotiations,
            self.renegotiation_step,
            self.max_steps,
            self.step,
        ))
    }
}

/// Connections a run may hold at once, in all: every viewer that arrives while the first ones
/// are still watching, at the highest rate of the plan.
pub fn peak_connections(phases: &[Phase], watch_max: Duration) -> u64 {
    let top = phases.iter().map(|p| p.target).fold(0.0, f64::max);
    let total_s = phases.iter().map(|p| p.duration_ms).sum::<u64>() as f64 / 1000.0;
    let window = watch_max.as_secs_f64().min(total_s);
    // 10 % for Poisson bursts and reconnects.
    (top * window * 11.0 / 10.0).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("simulator").chain(args.iter().copied()))
    }

    #[test]
    fn run_defaults_validate() {
        let cli = parse(&["run", "--url", "ws://127.0.0.1:1/v1/ws"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        let run = r.run(7).unwrap();
        assert_eq!(run.phases.len(), 1);
        assert_eq!(run.spec.watch_ms, (10_000, 40_000));
        assert!(run.bounds.is_none());
    }

    #[test]
    fn bad_options_are_named() {
        let cli = parse(&["run", "--url", "ws://10.1.1.1:1/", "--rate", "5"]).unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert!(r.run(1).unwrap_err().0.contains("127.0.0.0/8"));
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
        assert!(r.run(1).unwrap_err().0.contains("--watch-min"));
        assert!(parse(&["run"]).is_err(), "--url is required");
        assert!(parse(&["run", "--url", "ws://127.0.0.1:1/", "--duration", "soon"]).is_err());
        let cli = parse(&[
            "run",
            "--url",
            "ws://127.0.0.1:1/",
            "--tracker-pid",
            "4294967295",
        ]);
        let Command::Run(r) = cli.unwrap().command else {
            panic!("not run")
        };
        assert!(r.run(1).unwrap_err().0.contains("--tracker-pid"));
    }

    #[test]
    fn ramp_steps_rise() {
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
            "--worker-at",
            "127.0.0.1:9",
        ])
        .unwrap();
        let Command::Ramp(r) = cli.command else {
            panic!("not ramp")
        };
        let run = r.run(7).unwrap();
        let rates: Vec<f64> = run.phases.iter().map(|p| p.target).collect();
        assert_eq!(rates, [100.0, 150.0, 200.0]);
        assert_eq!(run.processes.total(), 3);
        assert_eq!(run.bounds.map(|b| b.max_p99_ms), Some(50.0));
        assert_eq!(peak_connections(&run.phases, Duration::from_secs(40)), 6600);
    }
}
