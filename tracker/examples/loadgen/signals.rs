//! The two halves of each relayed connection, and the counters they share.
//!
//! A [`Sender`] paces and writes one viewer's signals to its peer: closed loop, it holds a
//! permit of its window per message in flight, and the peer's [`Receiver`] gives the permit
//! back when the message arrives; open loop, it follows a fixed schedule. A [`Receiver`] reads
//! one viewer's frames, times the peer's signals from the `sid` stamp and counts errors.
//! Counters are atomics; the histogram is per receiver and merged at the end, so nothing on the
//! message path takes a lock.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracker::protocol::{Cands, ClientMsg, Format, PeerId, ServerMsg, Signal};

use crate::conn::{self, Ws};
use crate::payload::Payload;

/// A closed-loop sender that has heard nothing back for this long assumes its in-flight
/// messages were dropped (a refusal it wasn't told about) and refills its window.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Latencies above this are recorded as this, in microseconds (one minute).
const MAX_LATENCY_US: u64 = 60_000_000;

/// Timestamps: nanoseconds since the process started.
#[derive(Debug, Clone, Copy)]
pub struct Clock(pub Instant);

impl Clock {
    /// `t` as a stamp.
    pub fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.0).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The current stamp.
    pub fn now(&self) -> u64 {
        self.ns(Instant::now())
    }
}

/// Counters shared by all senders and receivers.
pub struct Shared {
    /// The stamp clock.
    pub clock: Clock,
    /// The measured window, as stamps.
    window: (u64, u64),
    /// Messages stamped in the window.
    pub sent: AtomicU64,
    /// Of those, the ones that arrived.
    pub received: AtomicU64,
    /// Closed-loop windows refilled after a stall.
    pub stalls: AtomicU64,
    /// Connections that ended early.
    pub closed: AtomicU64,
    /// Open loop: the largest delay between a message's due time and its send time.
    pub max_lag_ns: AtomicU64,
    /// Rare events only (errors, closes): a lock is fine.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    /// Counters for a run measuring from `start` to `end`.
    pub fn new(clock: Clock, start: Instant, end: Instant) -> Self {
        Self {
            clock,
            window: (clock.ns(start), clock.ns(end)),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            max_lag_ns: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    fn in_window(&self, stamp: u64) -> bool {
        (self.window.0..self.window.1).contains(&stamp)
    }

    /// Counts one event of kind `what` (an error code or a failure of this process).
    pub fn count(&self, what: impl Into<String>) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(what.into()).or_default() += 1;
        }
    }

    /// The events counted so far, by kind.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// An empty latency histogram (microseconds, 3 significant digits).
///
/// # Errors
/// Never with these bounds.
pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// The writing half of a connection.
pub type Sink = SplitSink<Ws, Message>;

/// Which side of the negotiation a sender plays.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Sends offers and the offerer's candidates.
    Offerer,
    /// Sends answers and the answerer's candidates.
    Answerer,
}

/// When a sender may send its next message.
pub enum Pacing {
    /// Closed loop: a permit per message in flight, returned by the other side on arrival;
    /// with `together`, all the messages the window allows are written at once.
    Window {
        /// Free places in the window.
        permits: Arc<Semaphore>,
        /// The window's size.
        size: usize,
        /// Write what the window allows in one go.
        together: bool,
    },
    /// Open loop: message k is due at `first + k * period`.
    Rate {
        /// Time between two messages.
        period: Duration,
        /// When message 0 is due.
        first: Instant,
    },
}

/// One direction of a pair: writes one viewer's signals to the other.
pub struct Sender {
    /// Where this viewer's frames go.
    pub sink: Sink,
    /// The pair's swarm.
    pub swarm: Arc<str>,
    /// The peer.
    pub to: PeerId,
    /// Offerer or answerer.
    pub role: Role,
    /// What to send.
    pub payload: Arc<Payload>,
    /// Frame format.
    pub format: Format,
    /// When to send.
    pub pacing: Pacing,
    /// Counters.
    pub shared: Arc<Shared>,
}

impl Sender {
    /// Sends until `stop` (a write blocked past `hard_stop` is abandoned); returns the sink so
    /// the connection can be closed once the replies are in.
    pub async fn run(mut self, stop: Instant, hard_stop: Instant) -> Sink {
        let mut k: u32 = 0;
        'sending: while let Some(stamp) = self.next_slot(k, stop).await {
            // Closed loop: messages the window already allows go out in one write. Each is
            // still its own frame, which the tracker decodes and relays on its own; one write
            // per message (`--flush-each`) makes this process, not the tracker, the bottleneck
            // on a small machine.
            let more = self.take_ready();
            for n in 0..=more {
                let stamp = if n == 0 {
                    stamp
                } else {
                    self.shared.clock.now()
                };
                let sid = stamp.to_string();
                let frame = match conn::frame(&self.message(k, &sid), self.format) {
                    Ok(f) => f,
                    Err(e) => {
                        self.shared.count(format!("{e:#}"));
                        break 'sending;
                    }
                };
                // Counted before the write: a message that can't be written is lost all the
                // same.
                if self.shared.in_window(stamp) {
                    self.shared.sent.fetch_add(1, Ordering::Relaxed);
                }
                if !io(&self.shared, hard_stop, self.sink.feed(frame)).await {
                    break 'sending;
                }
                k = k.wrapping_add(1);
            }
            if !io(&self.shared, hard_stop, self.sink.flush()).await {
                break;
            }
        }
        self.sink
    }

    /// Closed loop, writing together: takes every window permit available right now and
    /// returns how many.
    fn take_ready(&self) -> usize {
        let Pacing::Window {
            permits,
            size,
            together: true,
        } = &self.pacing
        else {
            return 0;
        };
        let n = permits.available_permits().min(*size);
        match u32::try_from(n).map(|n| permits.try_acquire_many(n)) {
            Ok(Ok(taken)) => {
                taken.forget();
                n
            }
            _ => 0,
        }
    }

    /// Waits until message `k` may go and returns its stamp; `None` once `stop` is reached.
    async fn next_slot(&self, k: u32, stop: Instant) -> Option<u64> {
        match &self.pacing {
            Pacing::Window { permits, size, .. } => loop {
                let now = Instant::now();
                if now >= stop {
                    return None;
                }
                let wake = (now + STALL_TIMEOUT).min(stop);
                match tokio::time::timeout_at(wake.into(), permits.acquire()).await {
                    Ok(Ok(permit)) => {
                        // The permit comes back through the peer's receiver, not on drop.
                        permit.forget();
                        return Some(self.shared.clock.now());
                    }
                    Ok(Err(_)) => return None,
                    Err(_) if Instant::now() >= stop => return None,
                    Err(_) => {
                        self.shared.stalls.fetch_add(1, Ordering::Relaxed);
                        permits.add_permits(size.saturating_sub(permits.available_permits()));
                    }
                }
            },
            Pacing::Rate { period, first } => {
                let due = *first + period.saturating_mul(k);
                if due >= stop {
                    return None;
                }
                tokio::time::sleep_until(due.into()).await;
                // Stamped when actually sent: the timer's millisecond granularity would
                // otherwise add up to 1 ms to every latency.
                let now = Instant::now();
                if self.shared.in_window(self.shared.clock.ns(due)) {
                    let lag = u64::try_from(now.saturating_duration_since(due).as_nanos());
                    self.shared
                        .max_lag_ns
                        .fetch_max(lag.unwrap_or(u64::MAX), Ordering::Relaxed);
                }
                Some(self.shared.clock.ns(now))
            }
        }
    }

    /// Message `k` of this side: offer (or answer) and candidates, alternately.
    fn message<'a>(&'a self, k: u32, sid: &'a str) -> ClientMsg<'a> {
        let (sdp, cands) = match self.role {
            Role::Offerer => (self.payload.offer, &self.payload.offerer_cands),
            Role::Answerer => (self.payload.answer, &self.payload.answerer_cands),
        };
        if k % 2 == 1 {
            return ClientMsg::Cands(Cands {
                swarm: (&*self.swarm).into(),
                to: self.to,
                sid: sid.into(),
                c: cands.iter().map(|c| c.as_str().into()).collect(),
                end: Some(true),
            });
        }
        let signal = Signal {
            swarm: (&*self.swarm).into(),
            to: self.to,
            sid: sid.into(),
            m: sdp.into(),
        };
        match self.role {
            Role::Offerer => ClientMsg::Offer(signal),
            Role::Answerer => ClientMsg::Answer(signal),
        }
    }
}

/// Awaits a write to a connection until `hard_stop`; false when its sender must stop.
async fn io<E>(
    shared: &Shared,
    hard_stop: Instant,
    write: impl Future<Output = Result<(), E>>,
) -> bool {
    match tokio::time::timeout_at(hard_stop.into(), write).await {
        Ok(Ok(())) => true,
        // The receiving half sees the close and counts it.
        Ok(Err(_)) => false,
        Err(_) => {
            shared.count("send_timeout");
            false
        }
    }
}

/// One viewer's incoming side: times the peer's signals and counts errors.
pub struct Receiver {
    /// Where this viewer's frames come from.
    pub stream: SplitStream<Ws>,
    /// Who should be signaling this viewer.
    pub peer: PeerId,
    /// The peer's window, refilled by each of its messages that arrives (closed loop).
    pub peer_window: Option<Arc<Semaphore>>,
    /// This viewer's own window, refilled when the tracker refuses one of its messages.
    pub own_window: Option<Arc<Semaphore>>,
    /// Counters.
    pub shared: Arc<Shared>,
    /// Latencies of the peer's signals stamped in the window.
    pub hist: Histogram<u64>,
}

impl Receiver {
    /// Reads until `done` or the connection ends; returns the latencies it recorded.
    pub async fn run(mut self, done: CancellationToken) -> Histogram<u64> {
        loop {
            let frame = tokio::select! {
                biased;
                () = done.cancelled() => break,
                f = self.stream.next() => f,
            };
            match frame {
                None => {
                    self.shared.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Err(e)) => {
                    self.shared.closed.fetch_add(1, Ordering::Relaxed);
                    self.shared.count(format!("read error: {e}"));
                    break;
                }
                Some(Ok(Message::Close(close))) => {
                    self.shared.closed.fetch_add(1, Ordering::Relaxed);
                    let code = close.map_or(1005, |c| u16::from(c.code));
                    self.shared.count(format!("closed_{code}"));
                    break;
                }
                Some(Ok(frame)) => match conn::decode(&frame) {
                    Ok(Some(msg)) => self.handle(msg),
                    Ok(None) => {}
                    Err(_) => self.shared.count("undecodable"),
                },
            }
        }
        self.hist
    }

    fn handle(&mut self, msg: ServerMsg<'_>) {
        match msg {
            ServerMsg::Batch { msgs } => msgs.into_iter().for_each(|m| self.handle(m)),
            ServerMsg::Offer(s) | ServerMsg::Answer(s) => self.arrived(s.from, &s.sid),
            ServerMsg::Cands(c) => self.arrived(c.from, &c.sid),
            ServerMsg::Error { code, .. } => {
                self.shared.count(code.as_str());
                // One of this viewer's messages was refused: it won't arrive to refill.
                if let Some(w) = &self.own_window {
                    w.add_permits(1);
                }
            }
            ServerMsg::Reconnect { .. } => self.shared.count("reconnect"),
            ServerMsg::Welcome { .. } | ServerMsg::Peers { .. } | ServerMsg::Pong => {}
        }
    }

    fn arrived(&mut self, from: PeerId, sid: &str) {
        let now = self.shared.clock.now();
        if let Some(w) = &self.peer_window {
            w.add_permits(1);
        }
        if from != self.peer {
            self.shared.count("wrong_from");
            return;
        }
        let Ok(stamp) = sid.parse::<u64>() else {
            self.shared.count("bad_sid");
            return;
        };
        if self.shared.in_window(stamp) {
            self.shared.received.fetch_add(1, Ordering::Relaxed);
            let us = now.saturating_sub(stamp) / 1000;
            self.hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
        }
    }
}
