//! swarmtrack's simulator: emulates browser clients (real SDP and ICE from browser captures,
//! with their timing) against a tracker or a fleet, measures join and relay latency and where
//! every message went, and ramps the load to find the knee.
//!
//! Layout: [`harness`] (what both modes share: the plan, the per-process engine, workers on
//! this host and others, measurements, the controller, verdicts and the knee, the report and
//! the plot), two modes over it, [`native`] (swarmtrack's protocol) and [`webtorrent`] (the
//! WebTorrent tracker protocol), [`pairs`] (fixed pairs relaying closed loop, outside the
//! harness: the relay's throughput per core, against swarmtrack or the bare relay), [`target`]
//! (where connections go), [`websocket`] (a viewer's WebSocket, client side), and [`cli`] (the
//! command line, above everything).

pub mod cli;
pub mod harness;
pub mod native;
pub mod pairs;
pub mod target;
pub mod websocket;
pub mod webtorrent;
