//! One viewer's WebSocket connection.
//!
//! The session task is the only writer to its socket. It `select!`s over the next frame from the
//! viewer, its bounded outbox in the peer table (signals other sessions or the relay queued for
//! it), one timer (ping, idle check, drain close) and the drain or stop token. Queued signals are coalesced into one `batch` frame. Every
//! write has a timeout: a viewer that doesn't read is closed as a slow consumer, so it can never
//! hold up anyone else (senders only ever `try_send` into the outbox).

mod rate;
mod write;

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use rand::Rng;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{Instrument, debug};

use crate::metrics::{CloseReason, DropReason, ReceivedKind};
use crate::protocol::{
    ClientMsg, Decoded, ErrorCode, Format, PeerId, ServerMsg, WelcomeLimits, close, decode_client,
};
use crate::relay::{Body, SendError, Signal, SignalKind, TakeLimits};
use crate::shutdown::ConnectionGuard;
use crate::state::AppState;

pub use rate::TokenBucket;

/// How often a viewer is told it is rate limited, at most; further refusals are only counted.
const RATE_ERROR_INTERVAL: Duration = Duration::from_secs(1);

/// How long the closing handshake may take once the session is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// One viewer's connection state, owned by its task.
pub struct Session {
    state: AppState,
    socket: WebSocket,
    id: PeerId,
    format: Format,
    bucket: TokenBucket,
    last_rate_error: Option<Instant>,
    joined: Vec<Arc<str>>,
    last_seen: Instant,
    _guard: ConnectionGuard,
    /// Keeps the session tracker non-empty until this session is over.
    _tracked: TaskTrackerToken,
}

/// What woke the session loop.
enum Event {
    /// The token being watched was cancelled: the drain started, or (once draining) the stop.
    Cancelled,
    /// The ping, idle or drain-close time came.
    Timer,
    /// Signals were taken from the outbox.
    Outbox,
    /// The viewer sent something, or the socket ended.
    Frame(Option<Result<Message, axum::Error>>),
}

/// Why the loop ended, and how to close the socket.
struct Ending {
    reason: CloseReason,
    close: Option<(u16, &'static str)>,
}

impl Ending {
    fn quiet(reason: CloseReason) -> Self {
        Self {
            reason,
            close: None,
        }
    }

    fn with(reason: CloseReason, code: u16, text: &'static str) -> Self {
        Self {
            reason,
            close: Some((code, text)),
        }
    }
}

impl Session {
    /// Registers the viewer and prepares its task; `format` is used until the viewer sends a
    /// frame, `guard` holds its connection slot and `tracked` its place in the session tracker.
    pub fn new(
        state: AppState,
        socket: WebSocket,
        format: Format,
        guard: ConnectionGuard,
        tracked: TaskTrackerToken,
    ) -> Self {
        let id = state.peers().register();
        let limits = &state.config().limits;
        Self {
            bucket: TokenBucket::new(limits.messages_per_sec, limits.burst),
            state,
            socket,
            id,
            format,
            last_rate_error: None,
            joined: Vec::new(),
            last_seen: Instant::now(),
            _guard: guard,
            _tracked: tracked,
        }
    }

    /// Runs the connection to its end, then removes the viewer from every swarm.
    pub fn run(self) -> impl Future<Output = ()> + Send {
        // A debug span: free at the default `info` level, where an info span would keep a
        // registry entry alive for every idle connection.
        let span = tracing::debug_span!("session", peer = %self.id);
        // Boxed because an async fn lays out a by-value argument twice (the argument and its
        // local copy): 1 KB of a 504-byte struct per connection, as measured.
        Box::new(self).run_inner().instrument(span)
    }

    // This future lives as long as the connection, so its size is per-viewer memory (it was
    // 3 KB when written naively). Only the loop's state is laid out inline; the one-off welcome
    // and ending, and every handler the loop calls, run boxed, allocated only while they work.
    async fn run_inner(mut self: Box<Self>) {
        self.state.metrics().connections_opened.increment(1);
        let ending = match Box::pin(self.welcome()).await {
            Ok(()) => self.serve().await,
            Err(e) => e,
        };
        Box::pin(self.finish(ending)).await;
    }

    async fn welcome(&mut self) -> Result<(), Ending> {
        let limits = &self.state.config().limits;
        let welcome = ServerMsg::Welcome {
            peer: self.id,
            instance: self.state.instance(),
            limits: WelcomeLimits {
                want: limits.max_want,
                max_message: u32::try_from(limits.max_message_bytes).unwrap_or(u32::MAX),
                rate: limits.messages_per_sec,
                burst: limits.burst,
            },
        };
        self.write(&welcome).await
    }

    /// Leaves every swarm, then closes the socket.
    async fn finish(mut self: Box<Self>, ending: Ending) {
        // Leave first: from here on nobody is paired with this viewer or signals to it.
        for swarm in std::mem::take(&mut self.joined) {
            self.state.membership().leave(self.id, &swarm);
        }
        self.state.peers().unregister(self.id);
        self.state.metrics().closed(ending.reason);
        let closing = async {
            match ending.close {
                Some((code, text)) => {
                    let frame = Message::Close(Some(CloseFrame {
                        code,
                        reason: text.into(),
                    }));
                    let _ = self.socket.send(frame).await;
                }
                // The viewer closed: tungstenite queued the echo of its close frame; send it.
                None => {
                    let _ = futures_util::SinkExt::flush(&mut self.socket).await;
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
        debug!(reason = ?ending.reason, "session ended");
    }

    async fn serve(&mut self) -> Ending {
        let state = self.state.clone();
        let config = state.config();

        // The select only decides what happened; handlers run boxed (see `run_inner`). One timer
        // serves pings, the idle check and the drain's close; one token is watched at a time.
        let lifecycle = Arc::clone(state.lifecycle());
        let peers = Arc::clone(state.peers());
        let ws = &config.websocket;
        let ping_interval = Duration::from_secs(ws.ping_interval_secs);
        let idle_timeout = Duration::from_secs(ws.idle_timeout_secs);
        let take = TakeLimits {
            max_signals: ws.max_coalesce,
            max_bytes: ws.max_coalesce_bytes,
        };
        let mut next_ping = Instant::now() + ping_interval;
        // Set once the drain reached this session: when it must be gone.
        let mut close_at: Option<Instant> = None;
        let timer = tokio::time::sleep_until(next_ping);
        tokio::pin!(timer);
        let mut queued: Vec<Box<Signal>> = Vec::new();

        loop {
            let deadline = close_at.map_or(next_ping, |c| c.min(next_ping));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let cancel = match close_at {
                None => &lifecycle.draining,
                Some(_) => &lifecycle.stop,
            };
            let event = tokio::select! {
                biased;
                () = cancel.cancelled() => Event::Cancelled,
                () = &mut timer => Event::Timer,
                // Queued output goes before more input: a viewer that floods can't starve the
                // signals others sent it, and what was queued first is written first.
                () = poll_fn(|cx| peers.poll_outbox(self.id, cx, &mut queued, take)) => Event::Outbox,
                frame = self.socket.recv() => Event::Frame(frame),
            };
            let result = match event {
                Event::Cancelled if close_at.is_some() => {
                    return Ending::with(CloseReason::Drain, close::RESTART, "shutting down");
                }
                Event::Cancelled => {
                    let after_ms = rand::rng().random_range(0..=config.drain.reconnect_window_ms);
                    close_at = Some(
                        Instant::now()
                            + Duration::from_millis(after_ms + config.drain.close_grace_ms),
                    );
                    Box::pin(self.write(&ServerMsg::Reconnect { after_ms })).await
                }
                Event::Timer if close_at.is_some_and(|c| c <= Instant::now()) => {
                    return Ending::with(CloseReason::Drain, close::RESTART, "draining");
                }
                Event::Timer => {
                    next_ping = Instant::now() + ping_interval;
                    if self.last_seen.elapsed() >= idle_timeout {
                        return Ending::with(CloseReason::Idle, close::POLICY, "idle timeout");
                    }
                    Box::pin(self.send_frame(Message::Ping(Default::default()), 0)).await
                }
                Event::Outbox => Box::pin(self.flush_outbox(&mut queued)).await,
                Event::Frame(frame) => {
                    self.last_seen = Instant::now();
                    match frame {
                        None => return Ending::quiet(CloseReason::Client),
                        Some(Err(e)) => return read_error(e),
                        Some(Ok(Message::Text(text))) => {
                            Box::pin(self.on_frame(text.as_bytes(), Format::Json)).await
                        }
                        Some(Ok(Message::Binary(bytes))) => {
                            Box::pin(self.on_frame(&bytes, Format::MsgPack)).await
                        }
                        Some(Ok(Message::Close(_))) => return Ending::quiet(CloseReason::Client),
                        // Pings are answered by tungstenite; both only prove liveness.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                return e;
            }
        }
    }

    /// Handles one data frame; replies go out as one frame.
    async fn on_frame(&mut self, frame: &[u8], format: Format) -> Result<(), Ending> {
        self.format = format;
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
        // Refusals are counted always but answered at most once a second, so a flood can't turn
        // this instance into a reflector.
        self.state.metrics().dropped(DropReason::RateLimited);
        if self
            .last_rate_error
            .is_none_or(|t| now.saturating_duration_since(t) >= RATE_ERROR_INTERVAL)
        {
            self.last_rate_error = Some(now);
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
                let already = self.joined.iter().any(|s| **s == *swarm);
                if !already && self.joined.len() >= state.config().limits.max_swarms_per_connection
                {
                    replies.push(error_msg(
                        ErrorCode::SwarmLimit,
                        format!("already in {} swarms, the most allowed", self.joined.len()),
                        Some("join"),
                    ));
                    return;
                }
                let joined = state.membership().join(self.id, &swarm, want).await;
                if !already {
                    self.joined.push(joined.swarm.clone());
                }
                replies.push(ServerMsg::Peers {
                    swarm: Cow::Owned(joined.swarm.to_string()),
                    peers: joined.peers,
                });
                metrics.join_seconds.record(now.elapsed().as_secs_f64());
            }
            ClientMsg::Leave { swarm } => {
                metrics.received(ReceivedKind::Leave, format);
                if state.membership().leave(self.id, &swarm) {
                    self.joined.retain(|s| **s != *swarm);
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
        let Some(swarm) = self.joined.iter().find(|s| ***s == *swarm) else {
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

/// Maps a read error to how the connection ends.
fn read_error(e: axum::Error) -> Ending {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            Ending::with(CloseReason::TooBig, close::TOO_BIG, "frame too large")
        }
        Some(tungstenite::Error::Utf8(_)) => Ending::with(
            CloseReason::Protocol,
            close::INVALID_PAYLOAD,
            "invalid UTF-8 in text frame",
        ),
        Some(tungstenite::Error::Protocol(_)) => Ending::with(
            CloseReason::Protocol,
            close::PROTOCOL_ERROR,
            "protocol error",
        ),
        _ => Ending::quiet(CloseReason::Client),
    }
}
