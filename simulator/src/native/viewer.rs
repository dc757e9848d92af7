//! One simulated viewer: a browser player's signaling, from connect to leave.
//!
//! A viewer connects, waits for `welcome`, joins its video's swarm, offers to every peer it is
//! given, answers every offer it receives, and trickles its candidates on the capture's
//! timeline. When its watch time is up (or the run winds down) it finishes what it started,
//! sends `leave`, lingers to receive what is still in flight, and closes. `reconnect` sends it
//! back to the same URL after `after_ms`; a broken connection, after a jittered backoff.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use swarmtrack_protocol::{ClientMsg, Format, PeerId};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::ledger::{Dir, Key, Receipt};
use super::measure::{C, Kind, L, M};
use super::payload::Browser;
use super::shared::{Command, Ctx};
use super::wire::{self, Incoming, Relayed};
use crate::target::source_addr;
use crate::websocket::{Frame, Kind as WsKind, Outbox, WsClient};

/// How long a leaving viewer keeps reading what is still in flight to it.
const LINGER: Duration = Duration::from_millis(500);
/// How long to wait for `welcome` and for the TCP + WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff after a failure: from this, doubling, up to [`BACKOFF_MAX`], jittered.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Renegotiation requests a viewer may have queued.
pub const COMMAND_QUEUE: usize = 4;

/// How a connection ended.
enum Outcome {
    /// The tracker asked for a reconnect after this delay.
    Reconnect(Duration),
    /// The connection failed or was closed by the tracker.
    Broken,
    /// The viewer left.
    Done,
}

/// Runs viewer `id` until it has watched its time or the run winds down.
pub async fn run(ctx: Arc<Ctx>, id: u64) {
    let mut rng = StdRng::seed_from_u64(ctx.job.seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407));
    let browser = if rng.random_bool(ctx.spec().firefox_share) {
        Browser::Firefox
    } else {
        Browser::Chrome
    };
    let swarm = ctx.swarm_for(&mut rng);
    let (lo, hi) = ctx.spec().watch_ms;
    let watch = Duration::from_millis(rng.random_range(lo..=hi));
    let deadline = Instant::now() + watch;
    let target = &ctx.targets[(id as usize) % ctx.targets.len()];
    let url = target.url_for(&swarm);
    // Back because a draining tracker said `reconnect`: the tracker counts such a viewer as
    // moved, not new (`?reconnect=1`, as the browser SDK does), until it has connected again.
    let moved_url = format!("{url}&reconnect=1");
    let mut moved = false;
    let source = source_addr(ctx.job.worker, id, ctx.spec().sources);
    let mut failures = 0u32;
    loop {
        if ctx.winding.finish.is_cancelled() || Instant::now() >= deadline {
            return;
        }
        let started = Instant::now();
        let this_url = if moved { &moved_url } else { &url };
        let ws = match WsClient::connect(target, this_url, source, CONNECT_TIMEOUT, &mut rng).await
        {
            Ok(ws) => ws,
            Err(e) => {
                ctx.stats.count(C::ConnectFailures, 1);
                ctx.stats.bump(M::ConnectFailures, &e.label());
                failures += 1;
                if !pause(&ctx, backoff(failures, &mut rng), deadline).await {
                    return;
                }
                continue;
            }
        };
        let session = Session {
            ctx: &ctx,
            swarm: &swarm,
            browser,
            deadline,
            started,
            rng: &mut rng,
        };
        moved = false;
        match session.run(ws).await {
            Outcome::Done => return,
            Outcome::Reconnect(after) => {
                ctx.stats.count(C::Reconnects, 1);
                moved = true;
                failures = 0;
                if !pause(&ctx, after, deadline).await {
                    return;
                }
            }
            Outcome::Broken => {
                failures += 1;
                if !pause(&ctx, backoff(failures, &mut rng), deadline).await {
                    return;
                }
            }
        }
    }
}

fn backoff(failures: u32, rng: &mut StdRng) -> Duration {
    let exp = BACKOFF_MIN
        .saturating_mul(1 << failures.min(6))
        .min(BACKOFF_MAX);
    // Full jitter, so viewers that failed together don't come back together.
    exp.mul_f64(rng.random_range(0.5..=1.0))
}

/// Waits `d`, unless the run winds down or the watch time ends first; false then.
async fn pause(ctx: &Ctx, d: Duration, deadline: Instant) -> bool {
    let until = Instant::now() + d;
    if until >= deadline {
        return false;
    }
    tokio::select! {
        () = sleep_until(until) => true,
        () = ctx.winding.finish.cancelled() => false,
    }
}

/// A negotiation this viewer takes part in.
struct Nego {
    /// The other viewer.
    peer: PeerId,
    /// The `sid` on the wire.
    sid: String,
    /// True when this viewer made the offer.
    offerer: bool,
    /// Messages sent so far (the next one's position).
    sent_n: u32,
    /// Messages received so far.
    recv_n: u32,
    /// Positions and kinds sent, for matching refusals.
    sent: VecDeque<(u32, Kind)>,
    /// The tracker refused a message of it: send nothing more.
    abandoned: bool,
}

impl Nego {
    fn out_dir(&self) -> Dir {
        if self.offerer {
            Dir::ToAnswerer
        } else {
            Dir::ToOfferer
        }
    }

    fn in_dir(&self) -> Dir {
        if self.offerer {
            Dir::ToOfferer
        } else {
            Dir::ToAnswerer
        }
    }
}

/// A message due at a time.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    seq: u64,
    nego: u64,
    /// `None`: the offer or answer; `Some(i)`: candidate batch `i`.
    batch: Option<usize>,
}

struct Session<'a> {
    ctx: &'a Ctx,
    swarm: &'a str,
    browser: Browser,
    deadline: Instant,
    started: Instant,
    rng: &'a mut StdRng,
}

/// The state of one connection.
struct Live<'a> {
    ctx: &'a Ctx,
    swarm: &'a str,
    browser: Browser,
    format: Format,
    /// Frames queued by the handlers, written once per wake-up.
    out: Outbox,
    negos: HashMap<u64, Nego>,
    due: BinaryHeap<Reverse<Due>>,
    seq: u64,
    /// `join`s sent and not yet answered, with when they were sent.
    joins: VecDeque<Instant>,
    /// No new negotiations (the run is winding down); offers in flight are still answered.
    quiet: bool,
    /// Leave once nothing is due.
    finishing: bool,
    /// Counted in `ctx.busy`: something is due or a join is unanswered.
    busy: bool,
}

impl Live<'_> {
    /// Keeps `ctx.busy` (viewers with work in progress) up to date.
    fn update_busy(&mut self) {
        let busy = !self.due.is_empty() || !self.joins.is_empty();
        if busy != self.busy {
            self.busy = busy;
            if busy {
                self.ctx.busy.fetch_add(1, Relaxed);
            } else {
                self.ctx.busy.fetch_sub(1, Relaxed);
            }
        }
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        if self.busy {
            self.ctx.busy.fetch_sub(1, Relaxed);
        }
    }
}

/// Counts a viewer as connected for as long as it lives.
struct Connected<'a>(&'a Ctx);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.stats.connected(false);
    }
}

impl Session<'_> {
    async fn run(self, mut ws: WsClient) -> Outcome {
        let ctx = self.ctx;
        // welcome first; anything else is a broken tracker.
        let welcome = tokio::time::timeout(CONNECT_TIMEOUT, ws.next()).await;
        let ok = match welcome {
            Ok(Ok(frame)) => {
                count_in(ctx, &frame);
                decode(&ws, &frame).is_some_and(|m| m.t == "welcome")
            }
            _ => false,
        };
        if !ok {
            ctx.stats.bump(M::ConnectFailures, "no_welcome");
            ctx.stats.count(C::ConnectFailures, 1);
            return Outcome::Broken;
        }
        ctx.stats.count(C::Connects, 1);
        ctx.stats.latency(L::Connect, self.started.elapsed());
        ctx.stats.connected(true);
        let _connected = Connected(ctx);
        let (tx, mut commands) = mpsc::channel(COMMAND_QUEUE);
        let _registered = ctx.renegotiating.then(|| ctx.registry.register(tx));
        let mut live = Live {
            ctx,
            swarm: self.swarm,
            browser: self.browser,
            format: if ctx.spec().msgpack {
                Format::MsgPack
            } else {
                Format::Json
            },
            out: Outbox::new(self.rng),
            negos: HashMap::new(),
            due: BinaryHeap::new(),
            seq: 0,
            joins: VecDeque::new(),
            quiet: ctx.winding.quiesce.is_cancelled(),
            finishing: false,
            busy: false,
        };
        if live.join(ctx.spec().want).is_err() || ws.flush(&mut live.out).await.is_err() {
            return Outcome::Broken;
        }
        // One timer for everything due (a message, the end of the watch time, the end of the
        // linger), reset only when that changes; and the wind-down's futures made once. A
        // select! that made them anew each time round cost a timer registration and two
        // cancellation waiters per frame (perf).
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);
        let quiesce = ctx.winding.quiesce.cancelled();
        tokio::pin!(quiesce);
        let finish = ctx.winding.finish.cancelled();
        tokio::pin!(finish);
        let mut linger_until: Option<Instant> = None;
        loop {
            let next_due = live.due.peek().map(|Reverse(d)| d.at);
            let wake = [
                next_due,
                linger_until,
                (!live.finishing).then_some(self.deadline),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(wake) = wake
                && timer.deadline() != wake
            {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                biased;
                frame = ws.next() => {
                    let frame = match frame {
                        Ok(f) => f,
                        Err(_) => {
                            if linger_until.is_some() {
                                return Outcome::Done;
                            }
                            live.ctx.stats.count(C::Disconnects, 1);
                            live.ctx.stats.bump(M::Closes, "eof");
                            return Outcome::Broken;
                        }
                    };
                    count_in(ctx, &frame);
                    if let WsKind::Close(code) = frame.kind {
                        if linger_until.is_some() {
                            return Outcome::Done;
                        }
                        ctx.stats.count(C::Disconnects, 1);
                        ctx.stats.bump(M::Closes, &code.to_string());
                        return Outcome::Broken;
                    }
                    match decode(&ws, &frame) {
                        Some(msg) => {
                            if let Some(after) = live.on_message(msg, self.rng) {
                                live.out.close();
                                let _ = ws.flush(&mut live.out).await;
                                return Outcome::Reconnect(after);
                            }
                        }
                        None => ctx.stats.count(C::BadFrames, 1),
                    }
                }
                () = &mut timer, if wake.is_some() => {
                    let now = Instant::now();
                    if linger_until.is_some_and(|l| now >= l) {
                        live.out.close();
                        let _ = ws.flush(&mut live.out).await;
                        return Outcome::Done;
                    }
                    if !live.finishing && now >= self.deadline {
                        live.finish();
                    }
                    if live.send_due(now).is_err() {
                        ctx.stats.count(C::Disconnects, 1);
                        ctx.stats.bump(M::Closes, "eof");
                        return Outcome::Broken;
                    }
                }
                Some(Command::Renegotiate) = commands.recv(), if ctx.renegotiating && !live.quiet => {
                    ctx.stats.count(C::Renegotiations, 1);
                    if live.join(1).is_err() {
                        return Outcome::Broken;
                    }
                }
                () = &mut quiesce, if !live.quiet => live.quiet = true,
                () = &mut finish, if !live.finishing => live.finish(),
            }
            // What the frame just read asked for goes out now, with everything queued, in one
            // write.
            if live
                .due
                .peek()
                .is_some_and(|Reverse(d)| d.at <= Instant::now())
                && live.send_due(Instant::now()).is_err()
            {
                ctx.stats.count(C::Disconnects, 1);
                ctx.stats.bump(M::Closes, "eof");
                return Outcome::Broken;
            }
            live.update_busy();
            // Finished what it started: leave, then linger for what is in flight to it.
            if live.finishing
                && linger_until.is_none()
                && live.due.is_empty()
                && live.joins.is_empty()
            {
                let leave = ClientMsg::Leave {
                    swarm: Cow::Borrowed(live.swarm),
                };
                if live.send(&leave).is_err() || ws.flush(&mut live.out).await.is_err() {
                    return Outcome::Done;
                }
                linger_until = Some(Instant::now() + LINGER);
            }
            if ws.flush(&mut live.out).await.is_err() {
                if linger_until.is_some() {
                    return Outcome::Done;
                }
                ctx.stats.count(C::Disconnects, 1);
                ctx.stats.bump(M::Closes, "eof");
                return Outcome::Broken;
            }
        }
    }
}

fn count_in(ctx: &Ctx, frame: &Frame) {
    ctx.stats.count(C::FramesIn, 1);
    ctx.stats.count(C::BytesIn, frame.wire_len as u64);
}

fn decode<'w>(ws: &'w WsClient, frame: &Frame) -> Option<Incoming<'w>> {
    match frame.kind {
        WsKind::Text => Incoming::json_bytes(ws.payload(frame)),
        WsKind::Binary => Incoming::msgpack(ws.payload(frame)),
        WsKind::Close(_) => None,
    }
}

fn parse_sid(sid: &str) -> Option<u64> {
    u64::from_str_radix(sid, 16).ok()
}

impl Live<'_> {
    fn finish(&mut self) {
        self.quiet = true;
        self.finishing = true;
    }

    fn send(&mut self, msg: &ClientMsg<'_>) -> Result<(), ()> {
        let len = wire::control_into(&mut self.out, self.format, msg).map_err(|_| ())?;
        self.ctx.stats.count(C::FramesOut, 1);
        self.ctx.stats.count(C::BytesOut, len as u64);
        Ok(())
    }

    fn join(&mut self, want: u32) -> Result<(), ()> {
        let msg = ClientMsg::Join {
            swarm: Cow::Borrowed(self.swarm),
            want,
        };
        self.send(&msg)?;
        self.ctx.stats.count(C::Joins, 1);
        self.joins.push_back(Instant::now());
        Ok(())
    }

    /// Schedules this side's SDP now and its candidate batches on the capture's timeline.
    fn schedule(&mut self, nego: u64, offerer: bool) {
        let now = Instant::now();
        let (side, _) = self.ctx.side(self.browser, offerer);
        self.seq += 1;
        self.due.push(Reverse(Due {
            at: now,
            seq: self.seq,
            nego,
            batch: None,
        }));
        for (i, b) in side.batches.iter().enumerate() {
            self.seq += 1;
            self.due.push(Reverse(Due {
                at: now + b.after,
                seq: self.seq,
                nego,
                batch: Some(i),
            }));
        }
    }

    fn offer_to(&mut self, peer: PeerId) {
        let id = self.ctx.new_nego();
        self.negos.insert(
            id,
            Nego {
                peer,
                sid: format!("{id:x}"),
                offerer: true,
                sent_n: 0,
                recv_n: 0,
                sent: VecDeque::new(),
                abandoned: false,
            },
        );
        self.ctx.stats.count(C::Negotiations, 1);
        self.schedule(id, true);
    }

    /// Queues every message due by `now` (the loop writes them in one write).
    fn send_due(&mut self, now: Instant) -> Result<(), ()> {
        while let Some(Reverse(d)) = self.due.peek() {
            if d.at > now {
                break;
            }
            let Some(Reverse(d)) = self.due.pop() else {
                break;
            };
            self.send_one(&d)?;
        }
        Ok(())
    }

    fn send_one(&mut self, d: &Due) -> Result<(), ()> {
        let ctx = self.ctx;
        let Some(nego) = self.negos.get_mut(&d.nego) else {
            return Ok(());
        };
        if nego.abandoned {
            return Ok(());
        }
        let (side, encoded) = ctx.side(self.browser, nego.offerer);
        let (kind, what) = match d.batch {
            None if nego.offerer => (Kind::Offer, Relayed::Sdp { offer: true }),
            None => (Kind::Answer, Relayed::Sdp { offer: false }),
            Some(i) => (Kind::Cands, Relayed::Cands(i)),
        };
        // In the ledger before it is written, so even the fastest receiver finds it.
        let len = wire::relayed_into(
            &mut self.out,
            self.format,
            side,
            encoded,
            what,
            self.swarm,
            nego.peer,
            &nego.sid,
        )
        .map_err(|_| ())?;
        let key = Key {
            nego: d.nego,
            dir: nego.out_dir(),
            n: nego.sent_n,
        };
        nego.sent.push_back((nego.sent_n, kind));
        nego.sent_n += 1;
        ctx.ledger.sent(key, kind, std::time::Instant::now());
        ctx.stats.count(kind.sent(), 1);
        ctx.stats.count(C::FramesOut, 1);
        ctx.stats.count(C::BytesOut, len as u64);
        Ok(())
    }

    /// Handles one message; returns the delay of a `reconnect`.
    fn on_message(&mut self, msg: Incoming<'_>, rng: &mut StdRng) -> Option<Duration> {
        match &*msg.t {
            "batch" => {
                for m in msg.msgs.unwrap_or_default() {
                    if let Some(after) = self.on_message(m, rng) {
                        return Some(after);
                    }
                }
            }
            "peers" => {
                if let Some(sent) = self.joins.pop_front() {
                    self.ctx.stats.latency(L::Join, sent.elapsed());
                }
                self.ctx.stats.count(C::Peers, 1);
                if !self.quiet {
                    for p in msg.peers.unwrap_or_default() {
                        self.offer_to(p);
                    }
                }
            }
            t @ ("offer" | "answer" | "cands") => {
                let kind = Kind::from_ref(t).unwrap_or(Kind::Cands);
                match (msg.sid.as_deref(), msg.from) {
                    (Some(sid), Some(from)) => self.on_relayed(kind, sid, from),
                    _ => self.ctx.stats.count(C::BadFrames, 1),
                }
            }
            "reconnect" => {
                let after_ms = msg.after_ms.unwrap_or(0);
                // Spread as the server asked; a little jitter of our own on top is harmless.
                let jitter = rng.random_range(0..=after_ms / 10 + 1);
                return Some(Duration::from_millis(after_ms + jitter));
            }
            "error" => {
                self.ctx
                    .stats
                    .bump(M::Errors, msg.code.as_deref().unwrap_or("none"));
                if let (Some(kind), Some(nego)) = (
                    msg.reference.as_deref().and_then(Kind::from_ref),
                    msg.sid.as_deref().and_then(parse_sid),
                ) {
                    self.on_refused(nego, kind);
                }
            }
            _ => {}
        }
        None
    }

    fn on_relayed(&mut self, kind: Kind, sid: &str, from: PeerId) {
        let ctx = self.ctx;
        let Some(id) = parse_sid(sid) else {
            ctx.stats.count(C::Unmatched, 1);
            return;
        };
        let mut answer = false;
        let nego = match self.negos.get_mut(&id) {
            Some(n) => n,
            None if kind == Kind::Offer => {
                answer = !self.finishing;
                self.negos.entry(id).or_insert(Nego {
                    peer: from,
                    sid: sid.to_string(),
                    offerer: false,
                    sent_n: 0,
                    recv_n: 0,
                    sent: VecDeque::new(),
                    abandoned: false,
                })
            }
            None => {
                // Candidates or an answer for a negotiation this connection doesn't know: the
                // viewer reconnected since, and the message was sent before.
                ctx.stats.count(C::Unmatched, 1);
                return;
            }
        };
        let key = Key {
            nego: id,
            dir: nego.in_dir(),
            n: nego.recv_n,
        };
        nego.recv_n += 1;
        match ctx.ledger.received(key, kind, std::time::Instant::now()) {
            Receipt::Delivered {
                latency,
                misordered,
            } => {
                ctx.stats.count(kind.delivered(), 1);
                ctx.stats.latency(kind.latency(), latency);
                if misordered {
                    ctx.stats.count(C::Misordered, 1);
                }
            }
            Receipt::Unknown => ctx.stats.count(C::Late, 1),
        }
        if answer {
            self.schedule(id, false);
        }
    }

    /// The tracker refused a message of negotiation `id`: account for the oldest one of that
    /// kind still outstanding, and send nothing more in it.
    fn on_refused(&mut self, id: u64, kind: Kind) {
        let ctx = self.ctx;
        let Some(nego) = self.negos.get_mut(&id) else {
            return;
        };
        nego.abandoned = true;
        let dir = nego.out_dir();
        let found = nego
            .sent
            .iter()
            .position(|&(n, k)| k == kind && ctx.ledger.refused(Key { nego: id, dir, n }));
        if let Some(i) = found {
            nego.sent.remove(i);
            ctx.stats.count(C::Refused, 1);
        }
    }
}
