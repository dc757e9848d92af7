//! [`Conn`]: what a protocol handler sees of its connection, and [`Outgoing`], the frames it
//! writes.

use swarmtrack_protocol::PeerId;
use tokio::time::Instant;

use super::rate::Limiter;
use crate::config::Config;
use crate::instance::Instance;
use crate::metrics::{DropReason, Shard};
use crate::swarm::ViewerSwarms;
use crate::worker::Worker;
use crate::ws::frame::{self, Opcode};

/// Frames to write, whole, with what they hold for the metrics.
pub struct Outgoing {
    buf: Vec<u8>,
    frames: u64,
    messages: u64,
    bytes: u64,
}

impl Outgoing {
    /// Frames go into `buf` (empty).
    pub fn new(buf: Vec<u8>) -> Self {
        Self {
            buf,
            frames: 0,
            messages: 0,
            bytes: 0,
        }
    }

    /// Appends one data frame holding `messages` messages; `write` appends its payload.
    pub fn frame(&mut self, opcode: Opcode, messages: u64, write: impl FnOnce(&mut Vec<u8>)) {
        let start = frame::reserve_header(&mut self.buf);
        write(&mut self.buf);
        let len = self.buf.len() - start;
        frame::fill_header(&mut self.buf, start, opcode);
        self.frames += 1;
        self.messages += messages;
        self.bytes += len as u64;
    }

    /// Appends a ping (not counted as a message).
    pub fn ping(&mut self) {
        frame::push_frame(&mut self.buf, Opcode::Ping, b"");
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The frames' bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// (frames, messages, payload bytes) written, for the metrics.
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.frames, self.messages, self.bytes)
    }

    /// The buffer back, for reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

/// One connection as a protocol handler sees it.
pub struct Conn<'a> {
    /// The connection's server peer id.
    pub id: PeerId,
    /// When the work at hand started.
    pub now: Instant,
    /// The swarms it is in.
    pub swarms: &'a mut ViewerSwarms,
    worker: &'a Worker,
    limiter: &'a mut Limiter,
    out: &'a mut Outgoing,
}

impl<'a> Conn<'a> {
    pub(super) fn new(
        id: PeerId,
        worker: &'a Worker,
        swarms: &'a mut ViewerSwarms,
        limiter: &'a mut Limiter,
        out: &'a mut Outgoing,
    ) -> Self {
        Self {
            id,
            now: Instant::now(),
            swarms,
            worker,
            limiter,
            out,
        }
    }

    /// The instance's shared parts.
    pub fn instance(&self) -> &'a Instance {
        &self.worker.instance
    }

    /// The instance's configuration.
    pub fn config(&self) -> &'a Config {
        &self.worker.instance.config
    }

    /// This thread's metrics shard.
    pub fn metrics(&self) -> &'a Shard {
        &self.worker.metrics
    }

    /// What to write.
    pub fn out(&mut self) -> &mut Outgoing {
        self.out
    }

    /// Takes a token of the connection's rate, if one is left.
    pub fn take_token(&mut self) -> bool {
        self.limiter.try_take(self.now)
    }

    /// Gives a token back (a message that turned out to cost the sender nothing of its own).
    pub fn refund_token(&mut self) {
        self.limiter.refund();
    }

    /// Counts a message refused for the rate and says whether to tell the client.
    pub fn rate_refused(&mut self) -> bool {
        self.metrics().dropped(DropReason::RateLimited, 1);
        self.limiter.tell_refusal(self.now)
    }
}
