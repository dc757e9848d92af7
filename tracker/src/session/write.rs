//! The session's write path: replies to the viewer's own messages and the signals queued for it
//! in its outbox, encoded in the viewer's format and coalesced into one frame, and the write
//! timeout that closes a viewer that doesn't read as a slow consumer.
//!
//! Invariant: only the session task writes to its socket. These methods take `&mut Session`,
//! which only that task holds; everyone else reaches the viewer through its outbox.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use tracing::warn;

use super::{Ending, Native, Protocol, Session};
use crate::metrics::CloseReason;
use crate::protocol::{Frame, ServerMsg, close, encode};
use crate::relay::Signal;

impl Session<Native> {
    /// Writes replies to the viewer's own messages, coalesced into one frame.
    pub(super) async fn reply(
        &mut self,
        mut replies: Vec<ServerMsg<'static>>,
    ) -> Result<(), Ending> {
        let metrics = Arc::clone(self.state.metrics());
        for r in &replies {
            if let ServerMsg::Error { code, .. } = r {
                metrics.error_sent(*code);
            }
        }
        match replies.len() {
            0 => Ok(()),
            1 => {
                let msg = replies.pop();
                match msg {
                    Some(msg) => self.write(&msg).await,
                    None => Ok(()),
                }
            }
            n => {
                let batch = ServerMsg::Batch { msgs: replies };
                self.write_counted(&batch, n).await
            }
        }
    }

    /// Writes the signals taken from the outbox as one frame, and empties `queued`.
    // Boxed signals move from sender to outbox to here without copying ~100-byte structs.
    #[allow(clippy::vec_box)]
    pub(super) async fn flush_signals(
        &mut self,
        queued: &mut Vec<Box<Signal>>,
    ) -> Result<(), Ending> {
        let n = queued.len();
        let payload: usize = queued.iter().map(|s| s.payload_len()).sum();
        if n == 1 {
            self.write_sized(&queued[0].to_server_msg(), 1, payload)
                .await?;
        } else {
            let batch = ServerMsg::Batch {
                msgs: queued.iter().map(|s| s.to_server_msg()).collect(),
            };
            self.write_sized(&batch, n, payload).await?;
        }
        self.record_relayed(queued);
        Ok(())
    }

    pub(super) async fn write(&mut self, msg: &ServerMsg<'_>) -> Result<(), Ending> {
        self.write_sized(msg, 1, 0).await
    }

    async fn write_counted(&mut self, msg: &ServerMsg<'_>, count: usize) -> Result<(), Ending> {
        self.write_sized(msg, count, 0).await
    }

    /// Encodes `msg` (holding `count` messages with `payload` bytes of SDP or candidates) in
    /// the viewer's format and writes it.
    async fn write_sized(
        &mut self,
        msg: &ServerMsg<'_>,
        count: usize,
        payload: usize,
    ) -> Result<(), Ending> {
        let frame = match encode(msg, self.proto.format, payload) {
            Ok(Frame::Text(text)) => Message::Text(text.into()),
            Ok(Frame::Binary(bytes)) => Message::Binary(bytes.into()),
            Err(e) => {
                // Our own fault: the message types always serialize.
                warn!(error = %e, "dropping a message that failed to encode");
                return Ok(());
            }
        };
        self.send_frame(frame, count).await
    }
}

impl<P: Protocol> Session<P> {
    /// Records the relay latency of signals written, and empties `written`.
    #[allow(clippy::vec_box)]
    pub(crate) fn record_relayed(&self, written: &mut Vec<Box<Signal>>) {
        let metrics = self.state.metrics();
        for s in written.drain(..) {
            metrics
                .relay_seconds
                .record(s.received_at.elapsed().as_secs_f64());
        }
    }

    /// Writes one frame holding `count` messages (0: a control frame, not counted).
    pub(crate) async fn send_frame(&mut self, frame: Message, count: usize) -> Result<(), Ending> {
        self.send_frames(std::iter::once(frame), count).await
    }

    /// Writes frames holding `count` messages in all, with one flush (one syscall when they
    /// fit the socket buffer) and one write timeout.
    pub(crate) async fn send_frames(
        &mut self,
        frames: impl IntoIterator<Item = Message> + Send,
        count: usize,
    ) -> Result<(), Ending> {
        use futures_util::SinkExt;
        let metrics = Arc::clone(self.state.metrics());
        let timeout = Duration::from_secs(self.state.config().websocket.write_timeout_secs);
        let socket = &mut self.socket;
        let write = async {
            let mut frames_n = 0u64;
            let mut bytes = 0u64;
            for frame in frames {
                bytes += match &frame {
                    Message::Text(t) => t.len(),
                    Message::Binary(b) => b.len(),
                    _ => 0,
                } as u64;
                frames_n += 1;
                socket.feed(frame).await?;
            }
            socket.flush().await?;
            Ok::<_, axum::Error>((frames_n, bytes))
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok((frames_n, bytes))) => {
                if count > 0 {
                    metrics.frames_sent.increment(frames_n);
                    metrics.messages_sent.increment(count as u64);
                    metrics.bytes_sent.increment(bytes);
                }
                Ok(())
            }
            Ok(Err(_)) => Err(Ending::quiet(CloseReason::Client)),
            Err(_) => Err(Ending::with(
                CloseReason::Slow,
                close::POLICY,
                "slow consumer",
            )),
        }
    }
}
