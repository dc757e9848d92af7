//! swarmtrack's simulator: emulates browser viewers (real SDP and ICE from browser captures,
//! with their timing) against a tracker or a fleet, measures join and relay latency and where
//! every message went, and ramps the load to find the knee.
//!
//! Layout: [`options`] (command line and the validated plan), [`engine`] (arrivals, pacing,
//! the clock, the wind-down), [`viewer`] (one viewer's signaling), [`ledger`] (accounting for
//! every relayed message), [`stats`] (counters and histograms), [`payload`] and [`sdp_min`]
//! (what viewers send), [`target`] (where they connect), [`controller`] (merging, judging,
//! stopping), [`workers`] (several processes), [`ramp`], [`report`], [`plot`], [`progress`];
//! [`webtorrent`], the WebTorrent tracker protocol mode.

pub mod controller;
pub mod engine;
pub mod ledger;
pub mod options;
pub mod payload;
pub mod plot;
pub mod progress;
pub mod ramp;
pub mod report;
pub mod sdp_min;
pub mod stats;
pub mod target;
pub mod viewer;
pub mod webtorrent;
pub mod workers;
