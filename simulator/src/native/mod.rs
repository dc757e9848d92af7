//! The native mode: browser viewers speaking swarmtrack's protocol (`/v1/ws`), arriving on an
//! open-loop Poisson schedule, joining a Zipf-popular video, negotiating with real SDP and
//! candidates, and leaving.
//!
//! Layout: [`options`] (`run` and `ramp`), [`shared`] (what a process's viewers share),
//! [`load`] (arrivals and renegotiations of a step), [`viewer`] (one viewer), [`wire`]
//! (frames), [`payload`] and [`sdp_min`] (what viewers send), [`ledger`] (every relayed
//! message), [`measure`] (counters and histograms), [`report`] (the mode as the harness sees
//! it: steps, verdicts, the knee, the table and the plot).

pub mod ledger;
pub mod load;
pub mod measure;
pub mod options;
pub mod payload;
pub mod report;
pub mod sdp_min;
pub mod shared;
pub mod viewer;
pub mod wire;
