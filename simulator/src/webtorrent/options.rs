//! The `webtorrent` subcommand's options and the validated run they turn into.

use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::wire::{MAX_CONN, MAX_OFFERS};
use crate::harness::controller::Run;
use crate::harness::options::{BoundArgs, Output, Processes};
use crate::harness::plan::{self, Invalid, Phase, ms};
use crate::target::Target;

/// `webtorrent`: browser WebTorrent peers (bittorrent-tracker's WebSocket client) in a closed
/// loop, like aquatic's load test; `--ramp` adds connections step by step until a bound breaks.
#[derive(Debug, Clone, Args)]
pub struct WebtorrentArgs {
    /// Tracker URL (ws://127.x.x.x:PORT/announce); repeat for several, used round robin.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// WebSocket connections (peers); with --ramp, those of the first step.
    #[arg(long, default_value_t = 100)]
    pub connections: u32,
    /// Torrents in the catalogue; each request picks one by Zipf popularity.
    #[arg(long, default_value_t = 1000)]
    pub torrents: u32,
    /// Zipf exponent of torrent popularity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Torrents each peer is in, drawn by popularity when it starts (a player watches one or
    /// two streams; a WebTorrent client seeds a few torrents over one socket); 0 = a fresh
    /// draw for every request, as aquatic's load test does (a connection then ends up in many
    /// swarms: mind the tracker's `limits.max_swarms_per_connection`).
    #[arg(long, default_value_t = 2)]
    pub torrents_per_peer: u32,
    /// Offers per announce (the WebTorrent client sends up to 10).
    #[arg(long, default_value_t = 10)]
    pub offers: u8,
    /// Chance that a peer answers an offer it receives.
    #[arg(long, default_value_t = 1.0)]
    pub answer_probability: f64,
    /// Chance that an announce is a seeder's (`left` 0).
    #[arg(long, default_value_t = 0.2)]
    pub seeders: f64,
    /// Chance that a request is a scrape rather than an announce.
    #[arg(long, default_value_t = 0.05)]
    pub scrape_share: f64,
    /// Most requests per second of one connection (the next request goes out when the last
    /// one's response is in, and not sooner than this allows); 0 = as soon as the response
    /// is in (aquatic's load test).
    #[arg(long, default_value_t = 1.0)]
    pub request_rate: f64,
    /// Share of peers that are Firefox (the rest Chromium).
    #[arg(long, default_value_t = 0.3)]
    pub firefox_share: f64,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..= 127.0.0.N).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub sources: u8,
    /// How long to run (without --ramp).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// An offer or answer not received after this long is lost; a request without a response
    /// after this long times out.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lost_after: Duration,
    /// Time allowed at the end for answers in flight and for closing.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Most offers and answers tracked at once (beyond it they are sent, and counted
    /// untracked).
    #[arg(long, default_value_t = 2_000_000)]
    pub max_in_flight: usize,
    /// Ramp: add --connection-step connections every --step until a bound breaks.
    #[arg(long)]
    pub ramp: bool,
    /// Connections added at each ramp step.
    #[arg(long, default_value_t = 100)]
    pub connection_step: u32,
    /// Length of a ramp step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Most ramp steps.
    #[arg(long, default_value_t = 20)]
    pub max_steps: u32,
    /// The bounds a ramp step must stay within: p99 announce, offer and answer latency; the
    /// share of offers and answers lost, of requests without a response, of frames sent that
    /// got a `failure reason`, and of failed connection attempts.
    #[command(flatten)]
    pub bounds: BoundArgs,
    /// Report outputs and the seed.
    #[command(flatten)]
    pub output: Output,
    /// Worker processes (each with its own copy of the torrent catalogue, so a torrent's
    /// swarm lives in one worker) and the tracker to watch.
    #[command(flatten)]
    pub processes: Processes,
}

/// The WebTorrent mode's settings, as every worker gets them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Target URLs.
    pub urls: Vec<String>,
    /// Torrents in the catalogue.
    pub torrents: u32,
    /// Zipf exponent.
    pub zipf: f64,
    /// Torrents per peer (0: a fresh draw per request).
    pub torrents_per_peer: u32,
    /// Offers per announce.
    pub offers: u8,
    /// Chance of answering an offer.
    pub answer_probability: f64,
    /// Chance of a seeder announce.
    pub seeders: f64,
    /// Chance of a scrape.
    pub scrape_share: f64,
    /// Most requests/s per connection (0: unpaced).
    pub request_rate: f64,
    /// Share of Firefox peers.
    pub firefox_share: f64,
    /// Source addresses.
    pub sources: u8,
    /// Ledger capacity (per worker).
    pub max_in_flight: usize,
}

fn check(ok: bool, msg: &str) -> Result<(), Invalid> {
    plan::check(ok, || msg.into())
}

fn share(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

impl WebtorrentArgs {
    /// Validates the options into a run.
    ///
    /// # Errors
    /// An option out of range, named.
    pub fn run(&self, seed: u64) -> Result<Run<Spec>, Invalid> {
        self.processes.validate()?;
        for url in &self.urls {
            Target::parse(url, false).map_err(|e| Invalid(e.to_string()))?;
        }
        check(self.connections >= 1, "--connections must be at least 1")?;
        check(self.torrents >= 1, "--torrents must be at least 1")?;
        check(
            self.torrents_per_peer <= 1000,
            "--torrents-per-peer must be 0..=1000",
        )?;
        check(
            self.zipf.is_finite() && self.zipf >= 0.0,
            "--zipf must be a number >= 0",
        )?;
        check(
            (1..=MAX_OFFERS).contains(&usize::from(self.offers)),
            "--offers must be 1..=16",
        )?;
        check(
            share(self.answer_probability),
            "--answer-probability must be within 0..=1",
        )?;
        check(share(self.seeders), "--seeders must be within 0..=1")?;
        check(
            share(self.scrape_share),
            "--scrape-share must be within 0..=1",
        )?;
        check(
            share(self.firefox_share),
            "--firefox-share must be within 0..=1",
        )?;
        check(
            self.request_rate.is_finite() && (0.0..=10_000.0).contains(&self.request_rate),
            "--request-rate must be within 0..=10000",
        )?;
        check(
            self.lost_after >= Duration::from_millis(100),
            "--lost-after must be at least 100ms",
        )?;
        check(
            self.max_in_flight >= 1,
            "--max-in-flight must be at least 1",
        )?;
        let (phases, bounds) = if self.ramp {
            check(
                self.connection_step >= 1,
                "a ramp must raise something: --connection-step above 0",
            )?;
            check(
                (1..=1000).contains(&self.max_steps),
                "--max-steps must be 1..=1000",
            )?;
            check(
                self.step >= Duration::from_millis(500),
                "--step must be at least 500ms",
            )?;
            // `extra` carries the requests/s the step's connections are paced for.
            let phases = plan::ramp(
                f64::from(self.connections),
                f64::from(self.connection_step),
                f64::from(self.connections) * self.request_rate,
                f64::from(self.connection_step) * self.request_rate,
                self.max_steps,
                self.step,
            );
            (phases, Some(self.bounds.bounds()?))
        } else {
            check(
                self.duration >= Duration::from_millis(100)
                    && self.duration <= Duration::from_secs(86_400),
                "--duration must be within 100ms..=24h",
            )?;
            let phase = Phase {
                target: f64::from(self.connections),
                extra: f64::from(self.connections) * self.request_rate,
                duration_ms: ms(self.duration),
            };
            (vec![phase], None)
        };
        check(
            peak_connections(&phases) <= u64::from(MAX_CONN),
            "at most 268,435,455 connections",
        )?;
        Ok(Run {
            label: if self.ramp {
                "webtorrent ramp"
            } else {
                "webtorrent run"
            }
            .into(),
            urls: self.urls.clone(),
            phases,
            spec: Spec {
                urls: self.urls.clone(),
                torrents: self.torrents,
                zipf: self.zipf,
                torrents_per_peer: self.torrents_per_peer,
                offers: self.offers,
                answer_probability: self.answer_probability,
                seeders: self.seeders,
                scrape_share: self.scrape_share,
                request_rate: self.request_rate,
                firefox_share: self.firefox_share,
                sources: self.sources,
                max_in_flight: self.max_in_flight,
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

/// The most connections a run holds at once, in all.
pub fn peak_connections(phases: &[Phase]) -> u64 {
    phases.iter().map(|p| p.target as u64).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> WebtorrentArgs {
        let cli = Cli::try_parse_from(
            [
                "simulator",
                "webtorrent",
                "--url",
                "ws://127.0.0.1:1/announce",
            ]
            .iter()
            .chain(extra),
        )
        .unwrap();
        let Command::Webtorrent(w) = cli.command else {
            panic!("not webtorrent")
        };
        w
    }

    #[test]
    fn a_ramp_adds_connections() {
        let r = args(&[
            "--ramp",
            "--connections",
            "50",
            "--connection-step",
            "25",
            "--max-steps",
            "3",
        ])
        .run(1)
        .unwrap();
        let c: Vec<f64> = r.phases.iter().map(|s| s.target).collect();
        assert_eq!(c, [50.0, 75.0, 100.0]);
        assert_eq!(peak_connections(&r.phases), 100);
        assert_eq!(r.label, "webtorrent ramp");
        assert!(r.bounds.is_some());
        let run = args(&["--duration", "2s", "--workers", "2"])
            .run(1)
            .unwrap();
        assert_eq!(
            run.phases,
            [Phase {
                target: 100.0,
                extra: 100.0,
                duration_ms: 2000
            }]
        );
        assert_eq!(run.processes.total(), 2);
        assert!(run.bounds.is_none());
    }

    #[test]
    fn bad_options_are_named() {
        for (extra, needle) in [
            (&["--offers", "17"][..], "--offers"),
            (&["--answer-probability", "2"], "--answer-probability"),
            (&["--connections", "0"], "--connections"),
            (&["--ramp", "--connection-step", "0"], "must raise"),
            (&["--request-rate", "20000"], "--request-rate"),
            (&["--ramp", "--max-loss", "2"], "--max-loss"),
        ] {
            let e = args(extra).run(1).unwrap_err().0;
            assert!(e.contains(needle), "{extra:?}: {e}");
        }
        let mut a = args(&[]);
        a.urls = vec!["ws://10.0.0.1:1/announce".into()];
        assert!(a.run(1).unwrap_err().0.contains("127.0.0.0/8"));
    }
}
