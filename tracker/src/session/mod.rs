//! One WebSocket connection, whatever protocol it speaks.
//!
//! The session task is the only writer to its socket. It `select!`s over the next frame from the
//! client, its bounded outbox in the peer table (signals other sessions or the relay queued for
//! it), one timer (ping, idle check, drain close) and the drain or stop token. Every write has a
//! timeout: a client that doesn't read is closed as a slow consumer, so it can never hold up
//! anyone else (senders only ever `try_send` into the outbox).
//!
//! The loop is shared; what a frame means, how queued signals are written and how a drain is
//! announced belong to the [`Protocol`]: [`Native`] (protocol v1 on `/v1/ws`) or
//! [`crate::webtorrent::WebTorrent`] (on `/announce` and `/`).

mod native;
mod rate;
mod write;

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{Instrument, debug};

use crate::metrics::{CloseReason, DropReason};
use crate::protocol::{Format, PeerId, close};
use crate::relay::{Signal, TakeLimits};
use crate::shutdown::ConnectionGuard;
use crate::state::AppState;

pub use native::Native;
pub use rate::TokenBucket;

/// How often a client is told it is rate limited, at most; further refusals are only counted.
const RATE_ERROR_INTERVAL: Duration = Duration::from_secs(1);

/// How long the closing handshake may take once the session is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a protocol adds to the shared connection loop. Each handler runs boxed from the loop,
/// so its future is allocated only while it works (see [`Session::run`]).
pub trait Protocol: Sized + Send + 'static {
    /// Runs once before the loop: native clients get `welcome`.
    fn start(s: &mut Session<Self>) -> impl Future<Output = Result<(), Ending>> + Send;

    /// Handles one data frame; `format` is the frame's type (text: JSON, binary: MessagePack).
    fn on_frame(
        s: &mut Session<Self>,
        frame: &[u8],
        format: Format,
    ) -> impl Future<Output = Result<(), Ending>> + Send;

    /// Writes the signals taken from the outbox, and empties `queued`.
    // Boxed signals move from sender to outbox to here without copying ~100-byte structs.
    #[allow(clippy::vec_box)]
    fn flush_outbox(
        s: &mut Session<Self>,
        queued: &mut Vec<Box<Signal>>,
    ) -> impl Future<Output = Result<(), Ending>> + Send;

    /// The drain reached this session: tell the client if the protocol can, and return how
    /// long it has before it is closed.
    fn on_drain(s: &mut Session<Self>) -> impl Future<Output = Result<Duration, Ending>> + Send;

    /// Periodic upkeep, at each server ping.
    fn on_tick(_s: &mut Session<Self>, _now: Instant) {}

    /// Leaves every swarm: the session is over.
    fn leave_all(s: &mut Session<Self>);
}

/// One client's connection state, owned by its task.
pub struct Session<P> {
    pub(crate) state: AppState,
    socket: WebSocket,
    pub(crate) id: PeerId,
    pub(crate) bucket: TokenBucket,
    last_rate_error: Option<Instant>,
    last_seen: Instant,
    /// The protocol's own state.
    pub(crate) proto: P,
    /// The connection slot; also marks the connection a viewer at its first join.
    pub(crate) guard: ConnectionGuard,
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
    /// The client sent something, or the socket ended.
    Frame(Option<Result<Message, axum::Error>>),
}

/// Why the loop ended, and how to close the socket.
pub struct Ending {
    reason: CloseReason,
    close: Option<(u16, &'static str)>,
}

impl Ending {
    /// The client ended it (or the socket failed): nothing to send.
    pub(crate) fn quiet(reason: CloseReason) -> Self {
        Self {
            reason,
            close: None,
        }
    }

    /// The server ends it with a close frame.
    pub(crate) fn with(reason: CloseReason, code: u16, text: &'static str) -> Self {
        Self {
            reason,
            close: Some((code, text)),
        }
    }
}

impl<P: Protocol> Session<P> {
    /// Registers the client and prepares its task; `guard` holds its connection slot and
    /// `tracked` its place in the session tracker.
    pub fn new(
        state: AppState,
        socket: WebSocket,
        proto: P,
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
            last_rate_error: None,
            last_seen: Instant::now(),
            proto,
            guard,
            _tracked: tracked,
        }
    }

    /// Runs the connection to its end, then removes the client from every swarm.
    pub fn run(self) -> impl Future<Output = ()> + Send {
        // A debug span: free at the default `info` level, where an info span would keep a
        // registry entry alive for every idle connection.
        let span = tracing::debug_span!("session", peer = %self.id);
        // Boxed because an async fn lays out a by-value argument twice (the argument and its
        // local copy): 1 KB of a 504-byte struct per connection, as measured.
        Box::new(self).run_inner().instrument(span)
    }

    // This future lives as long as the connection, so its size is per-client memory (it was
    // 3 KB when written naively). Only the loop's state is laid out inline; the one-off start
    // and ending, and every handler the loop calls, run boxed, allocated only while they work.
    async fn run_inner(mut self: Box<Self>) {
        self.state.metrics().connections_opened.increment(1);
        let ending = match Box::pin(P::start(&mut self)).await {
            Ok(()) => self.serve().await,
            Err(e) => e,
        };
        Box::pin(self.finish(ending)).await;
    }

    /// Leaves every swarm, then closes the socket.
    async fn finish(mut self: Box<Self>, ending: Ending) {
        // Leave first: from here on nobody is paired with this client or signals to it.
        P::leave_all(&mut self);
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
                // The client closed: tungstenite queued the echo of its close frame; send it.
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
                // Queued output goes before more input: a client that floods can't starve the
                // signals others sent it, and what was queued first is written first.
                () = poll_fn(|cx| peers.poll_outbox(self.id, cx, &mut queued, take)) => Event::Outbox,
                frame = self.socket.recv() => Event::Frame(frame),
            };
            let result = match event {
                Event::Cancelled if close_at.is_some() => {
                    return Ending::with(CloseReason::Drain, close::RESTART, "shutting down");
                }
                Event::Cancelled => match Box::pin(P::on_drain(self)).await {
                    Ok(delay) => {
                        close_at = Some(Instant::now() + delay);
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                Event::Timer if close_at.is_some_and(|c| c <= Instant::now()) => {
                    return Ending::with(CloseReason::Drain, close::RESTART, "draining");
                }
                Event::Timer => {
                    let now = Instant::now();
                    next_ping = now + ping_interval;
                    if self.last_seen.elapsed() >= idle_timeout {
                        return Ending::with(CloseReason::Idle, close::POLICY, "idle timeout");
                    }
                    P::on_tick(self, now);
                    Box::pin(self.send_frame(Message::Ping(Default::default()), 0)).await
                }
                Event::Outbox => Box::pin(P::flush_outbox(self, &mut queued)).await,
                Event::Frame(frame) => {
                    self.last_seen = Instant::now();
                    match frame {
                        None => return Ending::quiet(CloseReason::Client),
                        Some(Err(e)) => return read_error(e),
                        Some(Ok(Message::Text(text))) => {
                            Box::pin(P::on_frame(self, text.as_bytes(), Format::Json)).await
                        }
                        Some(Ok(Message::Binary(bytes))) => {
                            Box::pin(P::on_frame(self, &bytes, Format::MsgPack)).await
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

    /// Counts a message refused for the rate, and says whether to tell the client: refusals
    /// are counted always but answered at most once a second, so a flood can't turn this
    /// instance into a reflector.
    pub(crate) fn rate_refused(&mut self, now: Instant) -> bool {
        self.state.metrics().dropped(DropReason::RateLimited);
        let tell = self
            .last_rate_error
            .is_none_or(|t| now.saturating_duration_since(t) >= RATE_ERROR_INTERVAL);
        if tell {
            self.last_rate_error = Some(now);
        }
        tell
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
