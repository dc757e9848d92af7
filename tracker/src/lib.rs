//! swarmtrack tracker: pairs viewers of the same video and relays their WebRTC signaling.
//!
//! [`run`] runs one instance ([`server`]): worker threads serve the viewers' WebSockets
//! ([`http`], [`ws`]), one session task per socket ([`session`]) speaking the native protocol
//! ([`native`]) or the WebTorrent tracker protocol ([`webtorrent`]); swarms and pairing are
//! [`swarm`]'s, outboxes [`connections`]', and [`relay`] moves [`signal`]s between viewers,
//! across instances through Redis ([`backplane`]). The binary parses the command line, binds the
//! listeners and calls `run`; tests call `run` with listeners on `127.0.0.1:0`.

pub mod backplane;
pub mod config;
pub mod connections;
pub mod http;
pub mod instance;
pub mod json;
pub mod lifecycle;
pub mod metrics;
pub mod native;
pub mod relay;
pub mod server;
pub mod session;
pub mod signal;
pub mod swarm;
pub mod swarm_key;
pub mod webtorrent;
pub mod worker;
pub mod ws;

/// The native wire protocol, from its own crate so the simulator shares it.
pub use swarmtrack_protocol as protocol;

pub use server::{Listeners, run};
