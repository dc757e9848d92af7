//! swarmtrack tracker: pairs viewers of the same video and relays their WebRTC signaling.
//!
//! [`run`] runs one instance ([`server`]): worker threads serve the viewers' WebSockets
//! ([`http`], [`ws`]), one session task per socket ([`session`]) speaking the native protocol
//! ([`native`]) or the WebTorrent tracker protocol ([`webtorrent`]); swarms and pairing are
//! [`swarm`]'s, outboxes [`connections`]', and [`relay`] moves [`signal`]s between viewers,
//! across instances through Redis ([`backplane`]). The binary parses the command line, binds the
//! listeners and calls `run`; tests call `run` with listeners on `127.0.0.1:0`.

pub(crate) mod accept;
pub(crate) mod activity;
pub(crate) mod backplane;
pub(crate) mod batch_seal;
pub mod config;
pub(crate) mod connections;
pub(crate) mod fleet_key;
pub(crate) mod http;
pub(crate) mod instance;
pub(crate) mod json;
pub(crate) mod lifecycle;
pub(crate) mod metrics;
pub(crate) mod native;
pub(crate) mod relay;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod signal;
pub(crate) mod swarm;
pub(crate) mod swarm_key;
pub(crate) mod viewer;
pub(crate) mod webtorrent;
pub(crate) mod worker;
pub(crate) mod ws;

/// The native wire protocol, from its own crate so the simulator shares it.
pub use swarmtrack_protocol as protocol;

pub use relay::remote::channel_name as relay_channel_name;
pub use server::{Listeners, run};
