//! The WebTorrent mode: browser peers speaking the WebTorrent tracker protocol (as
//! bittorrent-tracker's WebSocket client and simple-peer do) against a tracker's `/announce`.
//!
//! Closed loop, like aquatic's load test: each connection keeps one request (an announce with
//! `--offers` complete-SDP offers, now and then a scrape) in flight and answers every offer it
//! receives. Measured: requests and responses by kind, the announce round trip, offer and answer
//! relay latency (the `offer_id` names the sender and its announce, so the receiver finds the
//! send time in the [`ledger`]), where every offer and answer went, failures by reason, and
//! reconnects after a drain (close 1012). `--ramp` adds connections step by step to the knee.
//!
//! Layout: [`options`] (the subcommand and its plan), [`engine`] (the run, the clock, the
//! wind-down), [`peer`] (one connection), [`wire`] (ids and frames), [`ledger`], [`stats`],
//! [`ramp`] (verdicts, knee), [`report`], [`plot`]. It reuses the native mode's target checks, source addresses, SDP
//! captures, histogram summaries and plotter.

pub mod engine;
pub mod ledger;
pub mod options;
pub mod peer;
pub mod plot;
pub mod ramp;
pub mod report;
pub mod stats;
pub mod wire;

use tokio_util::sync::CancellationToken;

pub use options::WebtorrentArgs;

/// Runs a validated plan until it ends or Ctrl-C, and returns its report.
///
/// # Errors
/// The run couldn't be set up (what the tracker did is in the report, not an error).
pub async fn run(plan: options::Plan, quiet: bool) -> anyhow::Result<report::Report> {
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
            }
        });
    }
    engine::run(plan, stop, quiet).await
}
