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
//! Layout: [`options`] (the subcommand), [`shared`] (what a worker's peers share), [`load`]
//! (a step's connections), [`peer`] (one connection), [`wire`] (ids and frames), [`ledger`],
//! [`measure`] (counters and histograms), [`report`] (the mode as the harness sees it). The
//! harness (`crate::harness`) runs it like the native mode: steps, workers, report, plot.

pub mod ledger;
pub mod load;
pub mod measure;
pub mod options;
pub mod peer;
pub mod report;
pub mod shared;
pub mod wire;
