//! One simulated WebTorrent peer: one WebSocket, a closed loop of requests, and answers to the
//! offers it receives.
//!
//! The peer keeps one request in flight: when its announce (or scrape) response comes in, it
//! sends the next one, no sooner than `--request-rate` allows; a request without a response
//! after the lost-after bound (one the tracker refused or dropped) times out and the loop goes
//! on. Offers it receives it answers at once (with `--answer-probability`). The task is the
//! only writer to its socket. A close with 1012 (the tracker drains) brings it back on a new
//! connection at once, announcing afresh (`started`); other closes and failed attempts, after
//! a jittered backoff. It keeps its `peer_id` across connections, as a browser does.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, sleep_until};

use super::ledger::Receipt;
use super::measure::{Count, Latency, Reasons};
use super::shared::Ctx;
use super::wire::{self, Announce, Event, OfferId, Received};
use crate::native::payload::Browser;
use crate::target::source_addr;
use crate::websocket::{Frame, Kind as WsKind, Outbox, WsClient};

/// How long the TCP + WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff after a failure: from this, doubling, up to [`BACKOFF_MAX`], jittered.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A drained peer comes back within this (jittered), like a browser client's quick retry.
const RECONNECT_MAX: Duration = Duration::from_millis(250);
/// Torrents a scrape asks about.
const SCRAPE_HASHES: usize = 3;
/// Bound on closing the socket politely.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// How a connection ended.
enum Outcome {
    /// Closed with 1012: come back now.
    Reconnect,
    /// Failed or closed otherwise: come back after a backoff.
    Broken,
    /// The run is over.
    Done,
}

/// The request in flight.
struct Pending {
    at: Instant,
    /// The torrent of an announce (`None` for a scrape).
    announce: Option<(u64, u64)>,
}

/// Runs peer `conn` until the run ends.
pub async fn run(ctx: Arc<Ctx>, conn: u32) {
    let mut rng =
        StdRng::seed_from_u64(ctx.job.seed ^ u64::from(conn).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let browser = if rng.random_bool(ctx.plan().firefox_share) {
        Browser::Firefox
    } else {
        Browser::Chrome
    };
    let target = &ctx.targets[conn as usize % ctx.targets.len()];
    let source = source_addr(ctx.job.worker, u64::from(conn), ctx.plan().sources);
    let torrents = (0..ctx.plan().torrents_per_peer)
        .map(|_| ctx.torrent(&mut rng))
        .collect();
    let mut peer = Peer {
        peer_id: wire::peer_id(ctx.tag, conn),
        torrents,
        ctx: Arc::clone(&ctx),
        conn,
        browser,
        rng,
        seq: 0,
    };
    let mut failures = 0u32;
    loop {
        if ctx.winding.finish.is_cancelled() {
            return;
        }
        let started = Instant::now();
        let pause =
            match WsClient::connect(target, target.url(), source, CONNECT_TIMEOUT, &mut peer.rng)
                .await
            {
                Err(e) => {
                    ctx.stats.count(Count::ConnectFailures, 1);
                    ctx.stats.bump(Reasons::ConnectFailures, &e.label());
                    failures += 1;
                    backoff(failures, &mut peer.rng)
                }
                Ok(ws) => {
                    ctx.stats.count(Count::Connects, 1);
                    ctx.stats.latency(Latency::Connect, started.elapsed());
                    match peer.session(ws).await {
                        Outcome::Done => return,
                        Outcome::Reconnect => {
                            ctx.stats.count(Count::Reconnects, 1);
                            failures = 0;
                            RECONNECT_MAX.mul_f64(peer.rng.random_range(0.0..=1.0))
                        }
                        Outcome::Broken => {
                            failures += 1;
                            backoff(failures, &mut peer.rng)
                        }
                    }
                }
            };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ctx.winding.finish.cancelled() => return,
        }
    }
}

fn backoff(failures: u32, rng: &mut StdRng) -> Duration {
    let exp = BACKOFF_MIN
        .saturating_mul(1 << failures.min(6))
        .min(BACKOFF_MAX);
    // Full jitter, so peers that failed together don't come back together.
    exp.mul_f64(rng.random_range(0.5..=1.0))
}

/// Counts a connection as open for as long as it lives.
struct Open<'a>(&'a Ctx);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.stats.connected(false);
    }
}

/// What outlives a connection.
struct Peer {
    ctx: Arc<Ctx>,
    conn: u32,
    peer_id: String,
    browser: Browser,
    rng: StdRng,
    /// Announces sent, over every connection: the `offer_id`s stay unique.
    seq: u32,
    /// The torrents it is in (empty: a fresh draw for each request).
    torrents: Vec<u64>,
}

impl Peer {
    /// The torrent of the next announce.
    fn torrent(&mut self) -> u64 {
        if self.torrents.is_empty() {
            return self.ctx.torrent(&mut self.rng);
        }
        let i = self.rng.random_range(0..self.torrents.len());
        self.torrents[i]
    }
}

/// One connection's state.
struct Session<'a> {
    peer: &'a mut Peer,
    /// Frames queued by the handlers, written once per wake-up.
    out: Outbox,
    /// Torrents announced in on this connection (bounded by the catalogue).
    joined: HashSet<u64>,
    pending: Option<Pending>,
    next_at: Instant,
    /// No new requests: the run is winding down.
    quiet: bool,
}

impl Peer {
    async fn session(&mut self, mut ws: WsClient) -> Outcome {
        let ctx = Arc::clone(&self.ctx);
        ctx.stats.connected(true);
        let _open = Open(&ctx);
        let interval = ctx.interval();
        // A random first request time, so peers that connected together don't stay in step.
        let first = Instant::now() + interval.mul_f64(self.rng.random_range(0.0..1.0));
        let out = Outbox::new(&mut self.rng);
        let mut s = Session {
            peer: self,
            out,
            joined: HashSet::new(),
            pending: None,
            next_at: first,
            quiet: ctx.winding.quiesce.is_cancelled(),
        };
        let lost_after = Duration::from_millis(ctx.job.lost_after_ms);
        let never = Instant::now() + Duration::from_secs(86_400);
        // One timer, reset only when the wake-up time changes, and the wind-down's futures
        // made once: made anew for each frame they cost a timer registration and two
        // cancellation waiters each time round (perf).
        let timer = sleep_until(never);
        tokio::pin!(timer);
        let finish = ctx.winding.finish.cancelled();
        tokio::pin!(finish);
        let quiesce = ctx.winding.quiesce.cancelled();
        tokio::pin!(quiesce);
        loop {
            let wake = match &s.pending {
                Some(p) => p.at + lost_after,
                None if s.quiet => never,
                None => s.next_at,
            };
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let step = tokio::select! {
                biased;
                () = &mut finish => {
                    s.out.close();
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.flush(&mut s.out)).await;
                    return Outcome::Done;
                }
                frame = ws.next() => match frame {
                    Ok(frame) => s.on_frame(&ws, &frame),
                    Err(_) => {
                        ctx.stats.count(Count::Disconnects, 1);
                        ctx.stats.bump(Reasons::Closes, "eof");
                        Err(Outcome::Broken)
                    }
                },
                () = &mut quiesce, if !s.quiet => {
                    s.quiet = true;
                    Ok(())
                }
                () = &mut timer => s.on_timer(),
            };
            if let Err(outcome) = step {
                return outcome;
            }
            // What this wake-up produced, in one write.
            if ws.flush(&mut s.out).await.is_err() {
                ctx.stats.count(Count::Disconnects, 1);
                ctx.stats.bump(Reasons::Closes, "eof");
                return Outcome::Broken;
            }
        }
    }
}

type Step = Result<(), Outcome>;

impl Session<'_> {
    fn ctx(&self) -> &Ctx {
        &self.peer.ctx
    }

    /// Queues a frame; the session loop writes it.
    fn send(&mut self, frame: &str) -> Step {
        let len = self.out.text(frame.as_bytes());
        self.ctx().stats.count(Count::FramesOut, 1);
        self.ctx().stats.count(Count::BytesOut, len as u64);
        Ok(())
    }

    fn on_timer(&mut self) -> Step {
        let now = Instant::now();
        if let Some(p) = &self.pending {
            if now >= p.at + Duration::from_millis(self.ctx().job.lost_after_ms) {
                self.ctx().stats.count(Count::RequestTimeouts, 1);
                self.pending = None;
                self.next_at = now;
            }
            return Ok(());
        }
        if self.quiet || now < self.next_at {
            return Ok(());
        }
        self.request(now)
    }

    /// Sends the next request: an announce with offers, or now and then a scrape.
    fn request(&mut self, now: Instant) -> Step {
        self.next_at = now + self.ctx().interval();
        let ctx = Arc::clone(&self.peer.ctx);
        let plan = ctx.plan();
        if self.peer.rng.random_bool(plan.scrape_share) {
            let hashes: Vec<String> = (0..SCRAPE_HASHES)
                .map(|_| wire::info_hash(ctx.tag, ctx.torrent(&mut self.peer.rng)))
                .collect();
            self.pending = Some(Pending {
                at: now,
                announce: None,
            });
            ctx.stats.count(Count::Scrapes, 1);
            return self.send(&wire::scrape(&hashes));
        }
        let rank = self.peer.torrent();
        self.peer.seq = self.peer.seq.wrapping_add(1);
        let seq = self.peer.seq;
        let ids: Vec<String> = (0..plan.offers)
            .map(|idx| {
                OfferId {
                    conn: self.peer.conn,
                    seq,
                    idx,
                }
                .encode(ctx.tag)
            })
            .collect();
        let key = OfferId {
            conn: self.peer.conn,
            seq,
            idx: 0,
        }
        .announce();
        let frame = Announce {
            info_hash: &wire::info_hash(ctx.tag, rank),
            peer_id: &self.peer.peer_id,
            event: if self.joined.insert(rank) {
                Event::Started
            } else {
                Event::Update
            },
            seeder: self.peer.rng.random_bool(plan.seeders),
            offer_ids: &ids,
            sdp: ctx.offer_sdp(self.peer.browser),
        }
        .frame();
        // The entry goes in before the frame leaves: the receiver may be faster than us.
        let n = u64::from(plan.offers);
        if !ctx.ledger.offers_sent(key, plan.offers, now.into_std()) {
            ctx.stats.count(Count::OffersUntracked, n);
        }
        self.pending = Some(Pending {
            at: now,
            announce: Some((rank, key)),
        });
        ctx.stats.count(Count::Announces, 1);
        ctx.stats.count(Count::OffersSent, n);
        self.send(&frame)
    }

    /// The request in flight got its response: schedule the next.
    fn responded(&mut self) {
        self.pending = None;
    }

    fn on_frame(&mut self, ws: &WsClient, frame: &Frame) -> Step {
        let ctx = Arc::clone(&self.peer.ctx);
        ctx.stats.count(Count::FramesIn, 1);
        ctx.stats.count(Count::BytesIn, frame.wire_len as u64);
        let text = match frame.kind {
            // The reference server accepts JSON in binary frames; a tracker may send them too.
            WsKind::Text | WsKind::Binary => match std::str::from_utf8(ws.payload(frame)) {
                Ok(t) => t,
                Err(_) => {
                    ctx.stats.count(Count::BadFrames, 1);
                    return Ok(());
                }
            },
            WsKind::Close(code) => {
                if code == 1012 {
                    return Err(Outcome::Reconnect);
                }
                ctx.stats.count(Count::Disconnects, 1);
                ctx.stats.bump(Reasons::Closes, &code.to_string());
                return Err(Outcome::Broken);
            }
        };
        let now = Instant::now();
        match wire::parse(text) {
            None => ctx.stats.count(Count::BadFrames, 1),
            Some(Received::Other) => {}
            Some(Received::AnnounceResponse {
                info_hash,
                complete,
                incomplete,
            }) => {
                ctx.stats.count(Count::AnnounceResponses, 1);
                match self
                    .pending
                    .as_ref()
                    .and_then(|p| Some((p.at, p.announce?)))
                {
                    Some((at, (rank, key))) if info_hash == wire::info_hash(ctx.tag, rank) => {
                        ctx.stats.latency(Latency::Announce, now - at);
                        ctx.ledger.swarm_size(key, complete + incomplete);
                        self.responded();
                    }
                    _ => ctx.stats.count(Count::UnexpectedResponses, 1),
                }
            }
            Some(Received::ScrapeResponse) => {
                ctx.stats.count(Count::ScrapeResponses, 1);
                if self.pending.as_ref().is_some_and(|p| p.announce.is_none()) {
                    self.responded();
                } else {
                    ctx.stats.count(Count::UnexpectedResponses, 1);
                }
            }
            Some(Received::Failure { reason, .. }) => {
                // A failure doesn't end the request in flight: swarmtrack also sends one after
                // an announce's response when it dropped some of its offers, so it can't be
                // told from a refusal. A refused request times out instead.
                ctx.stats.count(Count::Failures, 1);
                ctx.stats.bump(Reasons::Failures, &reason);
            }
            Some(Received::Offer {
                info_hash,
                peer_id,
                offer_id,
            }) => {
                let Some(id) = OfferId::decode(&offer_id, ctx.tag) else {
                    ctx.stats.count(Count::Unmatched, 1);
                    return Ok(());
                };
                if id.conn == self.peer.conn {
                    ctx.stats.count(Count::SelfOffers, 1);
                }
                match ctx
                    .ledger
                    .offer_received(id, self.peer.conn, now.into_std())
                {
                    Receipt::Delivered(l) => {
                        ctx.stats.count(Count::OffersReceived, 1);
                        ctx.stats.latency(Latency::Offer, l);
                    }
                    Receipt::DuplicateTarget(l) => {
                        ctx.stats.count(Count::OffersReceived, 1);
                        ctx.stats.count(Count::DuplicateTargets, 1);
                        ctx.stats.latency(Latency::Offer, l);
                    }
                    Receipt::Duplicate => ctx.stats.count(Count::Duplicates, 1),
                    Receipt::Unknown => ctx.stats.count(Count::Late, 1),
                }
                if !wire::is_plain_id(&info_hash) || !wire::is_plain_id(&peer_id) {
                    ctx.stats.count(Count::BadFrames, 1);
                    return Ok(());
                }
                if !self.peer.rng.random_bool(ctx.plan().answer_probability) {
                    ctx.stats.count(Count::OffersIgnored, 1);
                    return Ok(());
                }
                let frame = wire::answer(
                    &info_hash,
                    &self.peer.peer_id,
                    &peer_id,
                    &offer_id,
                    ctx.answer_sdp(self.peer.browser),
                );
                if !ctx.ledger.answer_sent(id, now.into_std()) {
                    ctx.stats.count(Count::AnswersUntracked, 1);
                }
                ctx.stats.count(Count::AnswersSent, 1);
                self.send(&frame)?;
            }
            Some(Received::Answer { offer_id }) => {
                let Some(id) = OfferId::decode(&offer_id, ctx.tag) else {
                    ctx.stats.count(Count::Unmatched, 1);
                    return Ok(());
                };
                if id.conn != self.peer.conn {
                    ctx.stats.count(Count::Misrouted, 1);
                }
                match ctx.ledger.answer_received(id, now.into_std()) {
                    Receipt::Delivered(l) | Receipt::DuplicateTarget(l) => {
                        ctx.stats.count(Count::AnswersReceived, 1);
                        ctx.stats.latency(Latency::Answer, l);
                    }
                    Receipt::Duplicate => ctx.stats.count(Count::Duplicates, 1),
                    Receipt::Unknown => ctx.stats.count(Count::Late, 1),
                }
            }
        }
        // Unpaced, or the pace allows it: the next request now.
        if self.pending.is_none() && !self.quiet && now >= self.next_at {
            return self.request(now);
        }
        Ok(())
    }
}
