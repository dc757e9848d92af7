//! Test support for the swarmtrack workspace: the one place where tests start real servers and
//! talk to them. A dev-dependency of every crate (tracker, simulator, autoscaler); not published.
//!
//! What it gives:
//! - [`process`]: a [`Process`](process::Process) guard that kills and reaps its child on drop
//!   (also when a test panics), free loopback ports, readiness by polling with a deadline (a
//!   child counts as ready only when it is *our* child listening or answering), retries on
//!   fresh ports when another test took ours, temporary folders, the workspace's binaries.
//! - [`redis`]: `redis-server` ([`RedisServer`](redis::RedisServer)) and a real 3-node Redis
//!   Cluster ([`RedisCluster`](redis::RedisCluster)), steered through a small RESP client
//!   ([`resp`]) rather than the client under test.
//! - [`haproxy`]: a real haproxy rendered from `haproxy/haproxy.cfg.tmpl`, its runtime API, and
//!   `show stat` through the autoscaler's parser (one copy).
//! - [`tracker`]: a tracker in this process ([`TestServer`](tracker::TestServer)) or as the
//!   built binary ([`TrackerProcess`](tracker::TrackerProcess)); [`native`] and [`webtorrent`]
//!   are the viewers that talk to it; [`http`] reads its endpoints.
//! - [`autoscaler`], [`simulator`], [`moto`]: the other binaries and moto's EC2 server.
//! - [`fixtures`]: the browser captures (real SDP and ICE candidates) in the repository's
//!   `fixtures/` folder.
//! - [`flood`]: stalled receivers flooded with worst-case signals, and the tracker's RSS they
//!   cost (`scripts/bench stalled`, examples/stalled.rs).
//! - [`wait`]: the deadlines every wait above uses; nothing sleeps to synchronise.
//!
//! Failures panic with a message saying what was expected, which fails the test; helpers whose
//! failure a test checks have a `try_` form returning a `Result`. Servers block the calling
//! thread for at most a few seconds while they start: they never depend on the code under test,
//! so that is safe inside async tests too.

// A failed expectation fails the test: that is what these helpers are for.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod autoscaler;
pub mod fixtures;
pub mod flood;
pub mod haproxy;
pub mod http;
pub mod moto;
pub mod native;
pub mod process;
pub mod redis;
pub mod resp;
pub mod simulator;
pub mod tracker;
pub mod wait;
pub mod webtorrent;

pub use wait::{DEADLINE, Deadline, LONG_DEADLINE, eventually, eventually_blocking, within};
