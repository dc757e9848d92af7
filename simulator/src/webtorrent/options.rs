//! The `webtorrent` subcommand's options and the validated [`Plan`] they turn into.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::wire::{MAX_CONN, MAX_OFFERS};
use crate::options::{self, Invalid, ms};
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
    /// A step fails when p99 announce, offer or answer latency is above this.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub max_p99: Duration,
    /// A step fails when more than this share of offers and answers is lost, of requests get
    /// no response, of frames sent get a `failure reason`, or of connection attempts fail.
    #[arg(long, default_value_t = 0.01)]
    pub max_loss: f64,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the SVG plot here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No per-step lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Random seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// One stretch of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Step {
    /// Connections open during it.
    pub connections: u32,
    /// Length, ms.
    pub duration_ms: u64,
}

/// A validated run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
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
    /// Lost-after bound, ms.
    pub lost_after_ms: u64,
    /// Wind-down, ms.
    pub grace_ms: u64,
    /// Ledger capacity.
    pub max_in_flight: usize,
    /// The steps (one without --ramp).
    pub steps: Vec<Step>,
    /// Judge steps and stop at the first that fails.
    pub ramp: bool,
    /// p99 bound, ms.
    pub max_p99_ms: f64,
    /// Loss bound, share.
    pub max_loss: f64,
    /// Seed.
    pub seed: u64,
}

fn check(ok: bool, msg: &str) -> Result<(), Invalid> {
    options::check(ok, || msg.into())
}

fn share(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

impl WebtorrentArgs {
    /// Validates the options into a plan.
    ///
    /// # Errors
    /// An option out of range, named.
    pub fn plan(&self, seed: u64) -> Result<Plan, Invalid> {
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
        let steps = if self.ramp {
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
            check(share(self.max_loss), "--max-loss must be within 0..=1")?;
            (0..self.max_steps)
                .map(|k| Step {
                    connections: self
                        .connections
                        .saturating_add(k.saturating_mul(self.connection_step)),
                    duration_ms: ms(self.step),
                })
                .collect()
        } else {
            check(
                self.duration >= Duration::from_millis(100)
                    && self.duration <= Duration::from_secs(86_400),
                "--duration must be within 100ms..=24h",
            )?;
            vec![Step {
                connections: self.connections,
                duration_ms: ms(self.duration),
            }]
        };
        let peak = steps.iter().map(|s| s.connections).max().unwrap_or(0);
        check(peak <= MAX_CONN, "at most 268,435,455 connections")?;
        Ok(Plan {
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
            lost_after_ms: ms(self.lost_after),
            grace_ms: ms(self.grace),
            max_in_flight: self.max_in_flight,
            steps,
            ramp: self.ramp,
            max_p99_ms: self.max_p99.as_secs_f64() * 1000.0,
            max_loss: self.max_loss,
            seed,
        })
    }
}

impl Plan {
    /// The most connections open at once.
    pub fn peak_connections(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| u64::from(s.connections))
            .max()
            .unwrap_or(0)
    }

    /// Refuses a plan whose connections can't fit in `usable` descriptors: this mode runs in
    /// one process (its swarms span every connection, so one ledger must see them all).
    ///
    /// # Errors
    /// The plan doesn't fit, with what to do.
    pub fn fits(&self, limit: u64, usable: u64) -> Result<(), Invalid> {
        let need = self.peak_connections();
        if need <= usable {
            return Ok(());
        }
        Err(Invalid(format!(
            "this run would hold up to {need} connections, but a process here may open only \
             {limit} file descriptors ({usable} usable for connections), and the webtorrent \
             mode runs in one process (no --workers): lower --connections, or the ramp's \
             --connection-step or --max-steps"
        )))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::options::{Cli, Command};

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
    fn a_ramp_adds_connections_and_must_fit() {
        let p = args(&[
            "--ramp",
            "--connections",
            "50",
            "--connection-step",
            "25",
            "--max-steps",
            "3",
        ])
        .plan(1)
        .unwrap();
        let c: Vec<u32> = p.steps.iter().map(|s| s.connections).collect();
        assert_eq!(c, [50, 75, 100]);
        assert!(p.fits(1124, 1024).is_ok());
        let e = p.fits(100, 99).unwrap_err().0;
        assert!(
            e.contains("100 connections") && e.contains("--workers"),
            "{e}"
        );
        let run = args(&["--duration", "2s"]).plan(1).unwrap();
        assert_eq!(
            run.steps,
            [Step {
                connections: 100,
                duration_ms: 2000
            }]
        );
    }

    #[test]
    fn bad_options_are_named() {
        for (extra, needle) in [
            (&["--offers", "17"][..], "--offers"),
            (&["--answer-probability", "2"], "--answer-probability"),
            (&["--connections", "0"], "--connections"),
            (&["--ramp", "--connection-step", "0"], "must raise"),
            (&["--request-rate", "20000"], "--request-rate"),
        ] {
            let e = args(extra).plan(1).unwrap_err().0;
            assert!(e.contains(needle), "{extra:?}: {e}");
        }
        let mut a = args(&[]);
        a.urls = vec!["ws://10.0.0.1:1/announce".into()];
        assert!(a.plan(1).unwrap_err().0.contains("127.0.0.0/8"));
    }
}
