//! Native protocol v1 (`GET /v1/ws`): welcome, join/leave, signals relayed by peer id, batches
//! both ways and `reconnect` on drain.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tracing::debug;

use super::{Ending, Protocol, Session};
use crate::metrics::{DropReason, ReceivedKind};
use crate::protocol::{
    ClientMsg, Decoded, ErrorCode, Format, PeerId, ServerMsg, WelcomeLimits, decode_client,
};
use crate::relay::{Body, SendError, Signal, SignalKind};

/// A native client's own state.
pub struct Native {
    /// The format replies go out in: the client's last frame's, or `?format=` until then.
    pub(super) format: Format,
    /// Swarms joined; the session keeps these copies of the index's ids.
    joined: Vec<Arc<str>>,
}

impl Native {
    /// A client that gets `welcome` (and replies until it sends a frame) in `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            joined: Vec::new(),
        }
    }
}

impl Protocol for Native {
    async fn start(s: &mut Session<Self>) -> Result<(), Ending> {
        let limits = &s.state.config().limits;
        let welcome = ServerMsg::Welcome {
            peer: s.id,
            instance: s.state.instance(),
            limits: WelcomeLimits {
                want: limits.max_want,
                max_message: u32::try_from(limits.max_message_bytes).unwrap_or(u32::MAX),
                rate: limits.messages_per_sec,
                burst: limits.burst,
            },
        };
        s.write(&welcome).await
    }

    async fn on_frame(s: &mut Session<Self>, frame: &[u8], format: Format) -> Result<(), Ending> {
        s.on_native_frame(frame, format).await
    }

    async fn flush_outbox(
        s: &mut Session<Self>,
        queued: &mut Vec<Box<Signal>>,
    ) -> Result<(), Ending> {
        s.flush_signals(queued).await
    }

    async fn on_drain(s: &mut Session<Self>) -> Result<Duration, Ending> {
        let drain = &s.state.config().drain;
        let window = s
            .state
            .lifecycle()
            .reconnect_window_ms(drain.reconnect_window_ms);
        let after_ms = rand::rng().random_range(0..=window);
        let close_in = Duration::from_millis(after_ms + drain.close_grace_ms);
        s.write(&ServerMsg::Reconnect { after_ms }).await?;
        Ok(close_in)
    }

    fn leave_all(s: &mut Session<Self>) {
        for swarm in std::mem::take(&mut s.proto.joined) {
            s.state.membership().leave(s.id, &swarm);
        }
    }
}

impl Session<Native> {
    /// Handles one data frame; replies go out as one frame.
    async fn on_native_frame(&mut self, frame: &[u8], format: Format) -> Result<(), Ending> {
        self.proto.format = format;
        let state = self.state.clone();
        let metrics = state.metrics();
        metrics.bytes_received.increment(frame.len() as u64);
        let mut replies: Vec<ServerMsg<'static>> = Vec::new();
        let now = Instant::now();

        if !self.bucket.try_take(now) {
            metrics.received(ReceivedKind::Invalid, format);
            self.rate_limited(now, None, &mut replies);
            return self.reply(replies).await;
        }
        if frame.len() > state.config().limits.max_message_bytes {
            metrics.received(ReceivedKind::Invalid, format);
            replies.push(error_msg(
                ErrorCode::TooLarge,
                format!(
                    "message of {} bytes is over the limit of {}",
                    frame.len(),
                    state.config().limits.max_message_bytes
                ),
                None,
            ));
            return self.reply(replies).await;
        }
        match decode_client(frame, format, &state.config().limits.decode_limits()) {
            Err(e) => {
                metrics.received(ReceivedKind::Invalid, format);
                debug!(error = %e, "refused message");
                replies.push(error_msg(e.code(), e.to_string(), e.reference()));
            }
            Ok(Decoded::One(msg)) => self.on_message(msg, format, now, &mut replies).await,
            Ok(Decoded::Batch(msgs)) => {
                // The batch frame took the first token; each further message takes its own.
                let mut first = true;
                for msg in msgs {
                    if !first && !self.bucket.try_take(now) {
                        metrics.received(ReceivedKind::Invalid, format);
                        self.rate_limited(now, Some("batch"), &mut replies);
                        continue;
                    }
                    first = false;
                    match msg {
                        Ok(msg) => self.on_message(msg, format, now, &mut replies).await,
                        Err(e) => {
                            metrics.received(ReceivedKind::Invalid, format);
                            replies.push(error_msg(e.code(), e.to_string(), e.reference()));
                        }
                    }
                }
            }
        }
        self.reply(replies).await
    }

    fn rate_limited(
        &mut self,
        now: Instant,
        reference: Option<&'static str>,
        replies: &mut Vec<ServerMsg<'static>>,
    ) {
        if self.rate_refused(now) {
            replies.push(error_msg(
                ErrorCode::RateLimited,
                "over the message rate; messages were dropped".to_string(),
                reference,
            ));
        }
    }

    async fn on_message(
        &mut self,
        msg: ClientMsg<'_>,
        format: Format,
        now: Instant,
        replies: &mut Vec<ServerMsg<'static>>,
    ) {
        let state = self.state.clone();
        let metrics = state.metrics();
        match msg {
            ClientMsg::Join { swarm, want } => {
                metrics.received(ReceivedKind::Join, format);
                let already = self.proto.joined.iter().any(|s| **s == *swarm);
                if !already
                    && self.proto.joined.len() >= state.config().limits.max_swarms_per_connection
                {
                    replies.push(error_msg(
                        ErrorCode::SwarmLimit,
                        format!(
                            "already in {} swarms, the most allowed",
                            self.proto.joined.len()
                        ),
                        Some("join"),
                    ));
                    return;
                }
                let joined = state.membership().join(self.id, &swarm, want).await;
                if !already {
                    self.proto.joined.push(joined.swarm.clone());
                }
                replies.push(ServerMsg::Peers {
                    swarm: Cow::Owned(joined.swarm.to_string()),
                    peers: joined.peers,
                });
                self.guard.viewer_joined();
                metrics.join_seconds.record(now.elapsed().as_secs_f64());
            }
            ClientMsg::Leave { swarm } => {
                metrics.received(ReceivedKind::Leave, format);
                if state.membership().leave(self.id, &swarm) {
                    self.proto.joined.retain(|s| **s != *swarm);
                }
            }
            ClientMsg::Offer(s) => {
                metrics.received(ReceivedKind::Offer, format);
                let body = Body::Sdp(s.m.into());
                self.signal(
                    SignalKind::Offer,
                    &s.swarm,
                    s.to,
                    &s.sid,
                    body,
                    now,
                    replies,
                );
            }
            ClientMsg::Answer(s) => {
                metrics.received(ReceivedKind::Answer, format);
                let body = Body::Sdp(s.m.into());
                self.signal(
                    SignalKind::Answer,
                    &s.swarm,
                    s.to,
                    &s.sid,
                    body,
                    now,
                    replies,
                );
            }
            ClientMsg::Cands(c) => {
                metrics.received(ReceivedKind::Cands, format);
                let body = Body::Cands {
                    c: c.c.into_iter().map(Cow::into_owned).collect(),
                    end: c.end,
                };
                self.signal(
                    SignalKind::Cands,
                    &c.swarm,
                    c.to,
                    &c.sid,
                    body,
                    now,
                    replies,
                );
            }
            ClientMsg::Ping => {
                metrics.received(ReceivedKind::Ping, format);
                replies.push(ServerMsg::Pong);
            }
            // The decoder never yields a nested batch.
            ClientMsg::Batch { .. } => {
                metrics.received(ReceivedKind::Invalid, format);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn signal(
        &mut self,
        kind: SignalKind,
        swarm: &str,
        to: PeerId,
        sid: &str,
        body: Body,
        now: Instant,
        replies: &mut Vec<ServerMsg<'static>>,
    ) {
        let Some(swarm) = self.proto.joined.iter().find(|s| ***s == *swarm) else {
            self.state.metrics().dropped(DropReason::SenderNotInSwarm);
            replies.push(signal_error(
                ErrorCode::NotInSwarm,
                "join the swarm before signaling in it",
                kind,
                sid,
            ));
            return;
        };
        let signal = Box::new(Signal {
            kind,
            swarm: Arc::clone(swarm),
            from: self.id,
            to,
            sid: sid.into(),
            body,
            received_at: now,
        });
        match self.state.relay().send(signal) {
            Ok(()) => {}
            Err(SendError::UnknownPeer) => replies.push(signal_error(
                ErrorCode::UnknownPeer,
                "target peer is gone or not in that swarm",
                kind,
                sid,
            )),
            Err(SendError::Overloaded) => replies.push(signal_error(
                ErrorCode::Overloaded,
                "target peer is not keeping up; the message was dropped",
                kind,
                sid,
            )),
        }
    }
}

fn error_msg(code: ErrorCode, msg: String, reference: Option<&'static str>) -> ServerMsg<'static> {
    ServerMsg::Error {
        code,
        msg: Cow::Owned(msg),
        reference: reference.map(Cow::Borrowed),
        sid: None,
    }
}

/// The refusal of one signal, naming its negotiation so the sender can abandon it.
fn signal_error(
    code: ErrorCode,
    msg: &'static str,
    kind: SignalKind,
    sid: &str,
) -> ServerMsg<'static> {
    ServerMsg::Error {
        code,
        msg: Cow::Borrowed(msg),
        reference: Some(Cow::Borrowed(kind.as_str())),
        sid: Some(Cow::Owned(sid.to_string())),
    }
}
