//! One WebSocket connection, whatever protocol it speaks: the task that owns its socket.
//!
//! The session task is the only writer to its socket. It waits on one thing at a time that
//! can wake it: the drain or stop flag (read when woken), one timer (ping, idle check, write
//! timeout, drain close), its outbox in [`Connections`] (signals others queued for it), and the
//! socket. Queued output goes before more input, so a client that floods can't starve the
//! signals others sent it. A client that doesn't read is closed as a slow consumer once its
//! unsent output is over the bound or older than the write timeout, so it can never hold up
//! anyone else (senders only ever enqueue without waiting).
//!
//! What a message means belongs to the [`Protocol`]: [`crate::native`] (protocol v1 on
//! `/v1/ws`) or [`crate::webtorrent`] (on `/announce` and `/`). A protocol sees the connection
//! through a [`Conn`]: its id, its swarms, its rate, the instance's handles and a buffer for
//! what to write; it never touches the socket.

mod conn;
mod rate;

use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::debug;

use crate::connections::TakeLimits;
use crate::lifecycle::ConnectionGuard;
use crate::metrics::{CloseReason, DropReason};
use crate::signal::Signal;
use crate::swarm::ViewerSwarms;
use crate::worker::Worker;
use crate::ws::{Event, Message, WsConn, WsError};
use swarmtrack_protocol::{PeerId, close};

pub use conn::{Conn, Outgoing};
use rate::Limiter;
pub use rate::TokenBucket;

/// How long the closing handshake may take once the session is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a protocol adds to the connection loop.
pub trait Protocol: Sized + 'static {
    /// Runs once before the loop: native clients get `welcome`.
    fn start(&mut self, cx: &mut Conn<'_>);

    /// What a message leaves to wait for (a join, for the directory), to be finished by
    /// [`Protocol::resume`].
    type Pending: 'static;

    /// Handles one message as far as it can without waiting, and returns what must wait.
    /// Most messages (signals) never wait: handled here, they cost no future and no
    /// allocation.
    fn on_message(
        &mut self,
        cx: &mut Conn<'_>,
        msg: Message,
    ) -> Result<Option<Self::Pending>, Ending>;

    /// Finishes a message that had to wait.
    fn resume(
        &mut self,
        cx: &mut Conn<'_>,
        pending: Self::Pending,
    ) -> impl Future<Output = Result<(), Ending>>;

    /// Writes the signals taken from the outbox, and empties `signals`.
    fn on_signals(&mut self, cx: &mut Conn<'_>, signals: &mut Vec<Signal>);

    /// The drain reached this session: tell the client if the protocol can, and return how
    /// long it has before it is closed.
    fn on_drain(&mut self, cx: &mut Conn<'_>) -> Duration;

    /// Periodic upkeep, at each server ping.
    fn on_tick(&mut self, _cx: &mut Conn<'_>) {}
}

/// Why the loop ended, and how to close the socket.
#[derive(Debug)]
pub struct Ending {
    reason: CloseReason,
    close: Option<(u16, &'static str)>,
}

impl Ending {
    /// The client ended it (or the socket failed): nothing to send.
    pub fn quiet(reason: CloseReason) -> Self {
        Self {
            reason,
            close: None,
        }
    }

    /// The server ends it with a close frame.
    pub fn with(reason: CloseReason, code: u16, text: &'static str) -> Self {
        Self {
            reason,
            close: Some((code, text)),
        }
    }
}

impl From<WsError> for Ending {
    fn from(e: WsError) -> Self {
        match e {
            WsError::TooBig => Ending::with(CloseReason::TooBig, close::TOO_BIG, "frame too large"),
            WsError::Utf8 => Ending::with(
                CloseReason::Protocol,
                close::INVALID_PAYLOAD,
                "invalid UTF-8 in text frame",
            ),
            WsError::Protocol(_) => Ending::with(
                CloseReason::Protocol,
                close::PROTOCOL_ERROR,
                "protocol error",
            ),
            WsError::Slow => Ending::with(CloseReason::Slow, close::POLICY, "slow consumer"),
            WsError::Io(_) => Ending::quiet(CloseReason::Client),
        }
    }
}

/// One client's connection, owned by its task.
pub struct Session<P> {
    ws: WsConn,
    id: PeerId,
    worker: Rc<Worker>,
    swarms: ViewerSwarms,
    limiter: Limiter,
    last_seen: Instant,
    proto: P,
    _guard: ConnectionGuard,
    /// Keeps the session tracker non-empty until this session is over.
    _tracked: TaskTrackerToken,
}

/// A session's times: its next ping, its drain close, and the bounds they are checked against.
struct Clock {
    next_ping: Instant,
    /// Set once the drain reached this session: when it must be gone.
    close_at: Option<Instant>,
    /// While the connection is in no swarm (from its start until it joins): when it is closed
    /// for that. A deadline rather than a start and a timeout: 16 bytes less in every
    /// connection's task.
    join_by: Option<Instant>,
    ping_interval: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
}

impl Clock {
    fn new(config: &crate::config::Config) -> Self {
        let ws = &config.websocket;
        let ping_interval = Duration::from_secs(ws.ping_interval_secs);
        let now = Instant::now();
        Self {
            next_ping: now + ping_interval,
            close_at: None,
            join_by: Some(now + join_timeout(config)),
            ping_interval,
            idle_timeout: Duration::from_secs(ws.idle_timeout_secs),
            write_timeout: Duration::from_secs(ws.write_timeout_secs),
        }
    }

    /// Notes whether the connection is in a swarm now: a connection in none is closed after
    /// `limits.join_timeout_secs`, so a socket that only answers pings can't hold a slot.
    fn note_swarms(&mut self, in_none: bool, config: &crate::config::Config) {
        self.join_by = match (in_none, self.join_by) {
            (false, _) => None,
            (true, Some(by)) => Some(by),
            (true, None) => Some(Instant::now() + join_timeout(config)),
        };
    }

    /// When the timer must fire next, output having waited since `stalled` and a fragmented
    /// message having started at `fragments` (if they have).
    fn deadline(&self, stalled: Option<Instant>, fragments: Option<Instant>) -> Instant {
        [
            Some(self.next_ping),
            self.close_at,
            stalled.map(|t| t + self.write_timeout),
            fragments.map(|t| t + self.write_timeout),
            self.join_by,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_ping)
    }
}

/// How long a connection may stay in no swarm.
fn join_timeout(config: &crate::config::Config) -> Duration {
    Duration::from_secs(config.limits.join_timeout_secs)
}

/// What woke the session.
enum Wake {
    /// The drain reached it, or (once draining) the stop.
    Lifecycle,
    /// The ping, idle, write-timeout or drain-close time came.
    Timer,
    /// Signals were taken from the outbox, or the client sent something (events), or both.
    Work,
    /// The socket or the framing failed.
    Failed(WsError),
}

impl<P: Protocol> Session<P> {
    /// Registers the client; `guard` holds its connection slot and `tracked` its place in the
    /// session tracker.
    pub fn new(
        worker: Rc<Worker>,
        ws: WsConn,
        proto: P,
        guard: ConnectionGuard,
        tracked: TaskTrackerToken,
    ) -> Self {
        let instance = &worker.instance;
        let id = instance.connections.register();
        let limits = &instance.config.limits;
        Self {
            limiter: Limiter::new(TokenBucket::new(limits.messages_per_sec, limits.burst)),
            ws,
            id,
            swarms: ViewerSwarms::default(),
            last_seen: Instant::now(),
            proto,
            _guard: guard,
            _tracked: tracked,
            worker,
        }
    }

    /// Runs the connection to its end, then leaves every swarm and closes the socket.
    ///
    /// The future is what every connection's task holds while idle, so its size is memory per
    /// viewer (`scripts/heap-profile`). Written as a block rather than an `async fn`, which
    /// would keep a second copy of `self` in it; and the close is boxed: its future (socket,
    /// timeout, a read buffer for the client's close) would otherwise double every task's size
    /// for a moment that comes once.
    #[allow(clippy::manual_async_fn)] // the point: see above
    pub fn run(mut self) -> impl Future<Output = ()> {
        async move {
            self.worker.metrics.connection_opened();
            let ending = match self.call_sync(|p, cx| p.start(cx)) {
                Ok(()) => self.serve().await,
                Err(e) => e,
            };
            Box::pin(self.finish(ending)).await;
        }
    }

    /// Writes the signals taken from the outbox, then handles the client's events, and sends
    /// all they produced at once.
    async fn work(
        &mut self,
        queued: &mut Vec<Signal>,
        events: &mut Vec<Event>,
    ) -> Result<(), Ending> {
        let worker = Rc::clone(&self.worker);
        let mut out = Outgoing::new(worker.take_buffer());
        let result = {
            let mut cx = Conn::new(
                self.id,
                &worker,
                &mut self.swarms,
                &mut self.limiter,
                &mut out,
            );
            let proto = &mut self.proto;
            if !queued.is_empty() {
                proto.on_signals(&mut cx, queued);
            }
            let mut result = Ok(());
            for event in events.drain(..) {
                match event {
                    Event::Message(msg) => {
                        // Boxed: what waits is allocated only while it waits, rather than laid
                        // out in every idle connection's task; and made before the await, in a
                        // block, so that no `Pending` is kept in the task across it either.
                        let waiting = match proto.on_message(&mut cx, msg) {
                            Ok(None) => None,
                            Ok(Some(pending)) => Some(Box::pin(proto.resume(&mut cx, pending))),
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        };
                        if let Some(waiting) = waiting {
                            result = waiting.await;
                            if result.is_err() {
                                break;
                            }
                        }
                    }
                    Event::Ping => {
                        // A ping takes a token like a message: a ping flood eats the rate its
                        // sender's messages would have (its pong is already written).
                        worker.metrics.ping_received();
                        if !cx.take_token() {
                            worker.metrics.ping_rate_limited();
                        }
                    }
                    Event::Pong => {}
                    Event::Closed => {
                        result = Err(Ending::quiet(CloseReason::Client));
                        break;
                    }
                }
            }
            events.clear();
            result
        };
        if result.is_ok() {
            self.last_seen = Instant::now();
        }
        let sent = self.send(&out);
        worker.give_buffer(out.into_buffer());
        result.and(sent)
    }

    /// Runs a synchronous protocol step with a [`Conn`], then writes what it produced.
    fn call_sync(&mut self, f: impl FnOnce(&mut P, &mut Conn<'_>)) -> Result<(), Ending> {
        let worker = Rc::clone(&self.worker);
        let mut out = Outgoing::new(worker.take_buffer());
        {
            let mut cx = Conn::new(
                self.id,
                &worker,
                &mut self.swarms,
                &mut self.limiter,
                &mut out,
            );
            f(&mut self.proto, &mut cx);
        }
        let sent = self.send(&out);
        worker.give_buffer(out.into_buffer());
        sent
    }

    /// Writes the frames of `out` and counts them.
    fn send(&mut self, out: &Outgoing) -> Result<(), Ending> {
        if out.is_empty() {
            return Ok(());
        }
        self.ws.send(out.bytes())?;
        let (frames, messages, bytes) = out.counts();
        self.worker.metrics.sent(frames, messages, bytes);
        Ok(())
    }

    /// Leaves every swarm, frees the connection's slot, then closes the socket.
    async fn finish(self, ending: Ending) {
        // Leave first: from here on nobody is paired with this client or signals to it.
        let Self {
            ws,
            id,
            worker,
            mut swarms,
            _guard,
            _tracked,
            ..
        } = self;
        let instance = &worker.instance;
        let metrics = &worker.metrics;
        instance.membership.leave_all(&mut swarms, id, metrics);
        let (lost, lost_bytes) = instance.connections.unregister(id);
        if lost > 0 {
            metrics.dropped(DropReason::TargetClosed, lost as u64);
            metrics.dropped_bytes(DropReason::TargetClosed, lost_bytes as u64);
        }
        metrics.closed(ending.reason);
        // The connection is over for the tracker; what is left is the client's to finish.
        drop(_guard);
        debug!(peer = %id, reason = ?ending.reason, "session ended");
        let (code, text) = match ending.close {
            Some((code, text)) => (Some(code), text),
            None => (None, ""),
        };
        ws.close(code, text, CLOSE_TIMEOUT).await;
        drop(_tracked);
    }

    async fn serve(&mut self) -> Ending {
        let worker = Rc::clone(&self.worker);
        let ws_config = &worker.instance.config.websocket;
        let take = TakeLimits {
            max_signals: ws_config.max_coalesce,
            max_bytes: ws_config.max_coalesce_bytes,
        };
        let mut clock = Clock::new(&worker.instance.config);
        let timer = tokio::time::sleep_until(clock.next_ping);
        tokio::pin!(timer);
        let mut queued: Vec<Signal> = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        loop {
            let deadline = clock.deadline(self.ws.stalled_since(), self.ws.fragments_since());
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let wake = poll_fn(|cx| {
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                self.poll_wake(cx, clock.close_at.is_some(), take, &mut queued, &mut events)
            })
            .await;
            let result = match wake {
                Wake::Failed(e) => return e.into(),
                Wake::Lifecycle if worker.instance.lifecycle.is_stopping() => {
                    return Ending::with(CloseReason::Drain, close::RESTART, "shutting down");
                }
                Wake::Lifecycle => {
                    let mut delay = Duration::ZERO;
                    let sent = self.call_sync(|p, cx| delay = p.on_drain(cx));
                    clock.close_at = Some(Instant::now() + delay);
                    sent
                }
                Wake::Timer => {
                    let r = self.on_timer(&mut clock);
                    clock.note_swarms(self.swarms.is_empty(), &worker.instance.config);
                    r
                }
                Wake::Work => {
                    let r = self.work(&mut queued, &mut events).await;
                    clock.note_swarms(self.swarms.is_empty(), &worker.instance.config);
                    r
                }
            };
            if let Err(e) = result {
                return e;
            }
        }
    }

    /// What woke the session, besides its timer: the drain or stop (unless `draining` is
    /// already known), a socket error, or work (`queued` signals, client `events`).
    fn poll_wake(
        &mut self,
        cx: &mut Context<'_>,
        draining: bool,
        take: TakeLimits,
        queued: &mut Vec<Signal>,
        events: &mut Vec<Event>,
    ) -> Poll<Wake> {
        let worker = &*self.worker;
        let instance = &worker.instance;
        let lifecycle = &instance.lifecycle;
        if lifecycle.is_stopping() || (!draining && lifecycle.is_draining()) {
            return Poll::Ready(Wake::Lifecycle);
        }
        worker.signals.fill(queued);
        worker.events.fill(events);
        if self.ws.has_unsent()
            && let Poll::Ready(Err(e)) = self.ws.poll_flush(cx)
        {
            return Poll::Ready(Wake::Failed(e));
        }
        // Both the outbox and the socket are polled every time, so neither starves the other:
        // a viewer sent signals without pause still has its requests read, and a viewer that
        // floods still gets what others sent it (written first).
        if self.ws.has_unsent() {
            // Nothing more is taken from the outbox until the client reads what it was sent:
            // the outbox fills and senders get `overloaded`, instead of this buffer growing.
            // Its waker stays registered for the drain. Requests are still read: their replies
            // are bounded by `max_unsent_bytes`.
            instance.connections.register_waker(self.id, cx.waker());
        } else {
            let _ = instance.connections.poll_outbox(self.id, cx, queued, take);
        }
        let ws = &mut self.ws;
        match self
            .worker
            .with_read_buffer(|buf| ws.poll_read(cx, buf, events))
        {
            Poll::Ready(Err(e)) => return Poll::Ready(Wake::Failed(e)),
            Poll::Ready(Ok(())) if events.is_empty() => {
                // Part of a frame: read again soon.
                cx.waker().wake_by_ref();
            }
            _ => {}
        }
        if queued.is_empty() && events.is_empty() {
            // Waiting: the lists go back to the thread's pool (an idle session holds none).
            worker.signals.reclaim(queued);
            worker.events.reclaim(events);
            Poll::Pending
        } else {
            Poll::Ready(Wake::Work)
        }
    }

    /// The timer fired: close a draining, stalled or idle connection, else ping it.
    fn on_timer(&mut self, clock: &mut Clock) -> Result<(), Ending> {
        let now = Instant::now();
        if clock.close_at.is_some_and(|c| c <= now) {
            return Err(Ending::with(CloseReason::Drain, close::RESTART, "draining"));
        }
        if self
            .ws
            .stalled_since()
            .is_some_and(|t| now >= t + clock.write_timeout)
        {
            return Err(Ending::with(
                CloseReason::Slow,
                close::POLICY,
                "slow consumer",
            ));
        }
        // A message sent in fragments must be whole within the write timeout too: fragments
        // kept coming (or pings between them) can't hold its buffer forever.
        if self
            .ws
            .fragments_since()
            .is_some_and(|t| now >= t + clock.write_timeout)
        {
            return Err(Ending::with(
                CloseReason::Protocol,
                close::POLICY,
                "message too slow",
            ));
        }
        // In no swarm for too long: never joined or announced, or left every swarm and
        // stayed (a socket that only answers pings).
        if clock.join_by.is_some_and(|by| now >= by) {
            return Err(Ending::with(
                CloseReason::NoJoin,
                close::POLICY,
                "no join within the time allowed",
            ));
        }
        if now < clock.next_ping {
            return Ok(());
        }
        clock.next_ping = now + clock.ping_interval;
        if self.last_seen.elapsed() >= clock.idle_timeout {
            return Err(Ending::with(
                CloseReason::Idle,
                close::POLICY,
                "idle timeout",
            ));
        }
        self.call_sync(|p, cx| {
            p.on_tick(cx);
            cx.out().ping();
        })
    }
}

/// A connection without a socket, for unit tests of protocol rules: what they write is kept.
#[cfg(test)]
pub struct TestConn {
    /// The connection's id.
    pub id: PeerId,
    /// Its swarms.
    pub swarms: ViewerSwarms,
    worker: Rc<Worker>,
    limiter: Limiter,
    out: Outgoing,
}

#[cfg(test)]
impl TestConn {
    /// A new connection of the worker's instance.
    pub fn new(worker: &Rc<Worker>) -> Self {
        let limits = &worker.instance.config.limits;
        Self {
            id: worker.instance.connections.register(),
            swarms: ViewerSwarms::default(),
            limiter: Limiter::new(TokenBucket::new(limits.messages_per_sec, limits.burst)),
            out: Outgoing::new(Vec::new()),
            worker: Rc::clone(worker),
        }
    }

    /// The context a handler gets.
    pub fn cx(&mut self) -> Conn<'_> {
        Conn::new(
            self.id,
            &self.worker,
            &mut self.swarms,
            &mut self.limiter,
            &mut self.out,
        )
    }

    /// What was written, as WebSocket frames' payloads; cleared.
    pub fn written(&mut self) -> Vec<Vec<u8>> {
        let bytes = std::mem::replace(&mut self.out, Outgoing::new(Vec::new())).into_buffer();
        let mut frames = Vec::new();
        let mut at = 0;
        while at + 2 <= bytes.len() {
            let (len, header) = match bytes[at + 1] {
                126 => (
                    usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])),
                    4,
                ),
                127 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&bytes[at + 2..at + 10]);
                    (u64::from_be_bytes(n) as usize, 10)
                }
                n => (usize::from(n), 2),
            };
            frames.push(bytes[at + header..at + header + len].to_vec());
            at += header + len;
        }
        frames
    }

    /// Takes what is queued in this connection's outbox.
    pub fn outbox(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let all = TakeLimits {
            max_signals: usize::MAX,
            max_bytes: usize::MAX,
        };
        let _ = self
            .worker
            .instance
            .connections
            .poll_outbox(self.id, &mut cx, &mut out, all);
        out
    }
}
