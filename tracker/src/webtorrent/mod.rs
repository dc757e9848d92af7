//! The WebTorrent tracker protocol on `/announce` and `/`: what bittorrent-tracker,
//! p2p-media-loader and aquatic_ws clients speak, so existing P2P players work unchanged.
//!
//! A WebTorrent connection is a [`Session`] like a native one: it has a server peer id, an
//! outbox in the peer table, and swarm membership through the shared
//! [`Membership`](crate::swarm::Membership), under a key no native swarm id can take
//! ([`id::swarm_key`]). So its offers and answers cross instances through the same batched
//! Redis relay, and pairing is local-first like native joins.
//!
//! - announce: the announcer is added to (or refreshed in) the swarm; each of its offers goes
//!   to a distinct random other peer, as a complete JSON frame built here and carried as the
//!   signal's body, so the target's session writes it without re-encoding. The signal's `sid`
//!   packs the offer id and the offerer's peer id ([`id::offer_sid`]).
//! - answer: the answerer's session recorded each offer it was sent ([`offers`]); an answer
//!   must match one of those, unexpired, and goes back to the connection the offer came from.
//! - scrape: this instance's counts ([`swarms`]).
//!
//! docs/WEBTORRENT.md lists where this differs from the reference server, and why.

pub mod id;
pub mod offers;
pub mod request;
pub mod response;
pub mod swarms;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message;
use rand::Rng;
use tokio::time::Instant;
use tracing::debug;

use crate::metrics::{DropReason, ReceivedKind};
use crate::protocol::Format;
use crate::relay::{Body, SendError, Signal, SignalKind};
use crate::session::{Ending, Protocol, Session};
use id::{Id20, offer_sid, parse_offer_sid, swarm_key};
use offers::PendingOffers;
use request::{Announce, Event, Failure, FailureKind, Request, RequestLimits};
use response::Forward;
use swarms::Counts;

pub use swarms::WebTorrentSwarms;

/// A swarm this connection announced in.
struct Joined {
    key: Arc<str>,
    info_hash: Id20,
    peer_id: Id20,
    last_announce: Instant,
}

/// A WebTorrent client's own state.
#[derive(Default)]
pub struct WebTorrent {
    joined: Vec<Joined>,
    pending: PendingOffers,
}

impl Protocol for WebTorrent {
    async fn start(_s: &mut Session<Self>) -> Result<(), Ending> {
        // The protocol has no greeting: the client speaks first.
        Ok(())
    }

    async fn on_frame(s: &mut Session<Self>, frame: &[u8], _format: Format) -> Result<(), Ending> {
        // Binary frames are read as JSON too, as the reference does.
        s.on_webtorrent_frame(frame).await
    }

    async fn flush_outbox(
        s: &mut Session<Self>,
        queued: &mut Vec<Box<Signal>>,
    ) -> Result<(), Ending> {
        let config = &s.state.config().webtorrent;
        let now = Instant::now();
        let expires = now + Duration::from_secs(config.offer_ttl_secs);
        let max = config.max_pending_offers;
        let n = queued.len();
        let mut frames = Vec::with_capacity(n);
        let mut latencies = Vec::with_capacity(n);
        for signal in queued.drain(..) {
            let Signal {
                kind,
                swarm,
                from,
                sid,
                body,
                received_at,
                ..
            } = *signal;
            if kind == SignalKind::Offer
                && let Some(ids) = parse_offer_sid(&sid)
            {
                s.proto
                    .pending
                    .record(ids, from, swarm, (now, expires), max);
            }
            // Only WebTorrent sessions are members of WebTorrent swarms, and they only ever
            // send complete frames; anything else can't reach this outbox.
            if let Body::Sdp(text) = body {
                frames.push(Message::Text(String::from(text).into()));
                latencies.push(received_at);
            }
        }
        s.send_frames(frames, n).await?;
        let metrics = s.state.metrics();
        for t in latencies {
            metrics.relay_seconds.record(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn on_drain(s: &mut Session<Self>) -> Result<Duration, Ending> {
        // The protocol has no `reconnect`: close with 1012 at a random time in the window,
        // and the client's own reconnect logic spreads the load over the other instances.
        let window = s.state.config().drain.reconnect_window_ms;
        Ok(Duration::from_millis(rand::rng().random_range(0..=window)))
    }

    fn on_tick(s: &mut Session<Self>, now: Instant) {
        let ttl = Duration::from_secs(s.state.config().webtorrent.peer_ttl_secs);
        while let Some(i) = s
            .proto
            .joined
            .iter()
            .position(|j| now.saturating_duration_since(j.last_announce) >= ttl)
        {
            debug!(swarm = %s.proto.joined[i].key, "peer expired: no announce within the TTL");
            s.leave(i);
        }
    }

    fn leave_all(s: &mut Session<Self>) {
        while !s.proto.joined.is_empty() {
            s.leave(s.proto.joined.len() - 1);
        }
    }
}

impl Session<WebTorrent> {
    async fn on_webtorrent_frame(&mut self, frame: &[u8]) -> Result<(), Ending> {
        let state = self.state.clone();
        let metrics = state.metrics();
        let config = &state.config().webtorrent;
        metrics.bytes_received.increment(frame.len() as u64);
        let now = Instant::now();
        if !self.bucket.try_take(now) {
            metrics.received(ReceivedKind::Invalid, Format::Json);
            if self.rate_refused(now) {
                let f = Failure::new(
                    FailureKind::RateLimited,
                    "over the message rate; messages were dropped",
                );
                return self.send_failure(&f).await;
            }
            return Ok(());
        }
        if frame.len() > config.max_message_bytes {
            metrics.received(ReceivedKind::Invalid, Format::Json);
            let f = Failure::new(
                FailureKind::TooLarge,
                format!(
                    "message of {} bytes is over the limit of {}",
                    frame.len(),
                    config.max_message_bytes
                ),
            );
            return self.send_failure(&f).await;
        }
        let limits = RequestLimits {
            max_offers: config.max_offers,
            max_scrape_hashes: config.max_scrape_hashes,
        };
        match request::parse(frame, &limits) {
            Err(f) => {
                metrics.received(ReceivedKind::Invalid, Format::Json);
                debug!(reason = %f.reason, "refused request");
                self.send_failure(&f).await
            }
            Ok(Request::Scrape(hashes)) => {
                metrics.received(ReceivedKind::Scrape, Format::Json);
                let files: Vec<(Id20, Counts)> = hashes
                    .into_iter()
                    .map(|h| (h, state.webtorrent().counts(&swarm_key(&h))))
                    .collect();
                let text = response::scrape(&files, config.interval_secs);
                self.send_text(text).await
            }
            Ok(Request::Announce(a)) => {
                let kind = if a.answer.is_some() {
                    ReceivedKind::Answer
                } else {
                    ReceivedKind::Announce
                };
                metrics.received(kind, Format::Json);
                let result = self.announce(a, now).await;
                metrics.announce_seconds.record(now.elapsed().as_secs_f64());
                result
            }
        }
    }

    async fn announce(&mut self, a: Announce<'_>, now: Instant) -> Result<(), Ending> {
        let state = self.state.clone();
        let config = &state.config().webtorrent;
        let fail = |kind, reason: &'static str| {
            let mut f = Failure::new(kind, reason);
            f.action = Some(request::Action::Announce);
            f.info_hash = Some(a.info_hash);
            f
        };
        let index = self
            .proto
            .joined
            .iter()
            .position(|j| j.info_hash == a.info_hash);
        if let Some(i) = index
            && self.proto.joined[i].peer_id != a.peer_id
        {
            let f = fail(
                FailureKind::PeerIdConflict,
                "this connection announced another peer_id in this swarm",
            );
            return self.send_failure(&f).await;
        }
        let key = match index {
            Some(i) => Arc::clone(&self.proto.joined[i].key),
            None => swarm_key(&a.info_hash),
        };

        if a.event == Event::Stopped {
            let counts = match index {
                Some(i) => self.leave(i),
                None => state.webtorrent().counts(&key),
            };
            if a.answer.is_some() {
                return Ok(());
            }
            let text = response::announce(
                &a.info_hash,
                counts,
                config.interval_secs,
                &state.instance().to_string(),
            );
            return self.send_text(text).await;
        }

        if index.is_none() && self.proto.joined.len() >= config.max_swarms_per_connection {
            let f = fail(
                FailureKind::SwarmLimit,
                "this connection is in as many swarms as allowed",
            );
            return self.send_failure(&f).await;
        }
        let counts = match state.webtorrent().announce(
            &key,
            a.peer_id,
            self.id,
            a.seeder,
            a.event == Event::Completed,
        ) {
            Ok(c) => c,
            Err(swarms::Taken) => {
                let f = fail(
                    FailureKind::PeerIdConflict,
                    "peer_id is in use by another connection in this swarm",
                );
                return self.send_failure(&f).await;
            }
        };
        let want = match &a.answer {
            Some(_) => 0,
            None => a.offers.len().min(a.numwant.unwrap_or(usize::MAX)),
        };
        let joined = state
            .membership()
            .join_registered(self.id, &key, u32::try_from(want).unwrap_or(u32::MAX))
            .await;
        match index {
            Some(i) => self.proto.joined[i].last_announce = now,
            None => self.proto.joined.push(Joined {
                key: Arc::clone(&joined.swarm),
                info_hash: a.info_hash,
                peer_id: a.peer_id,
                last_announce: now,
            }),
        }

        if let Some(answer) = &a.answer {
            let Some(route) =
                self.proto
                    .pending
                    .take(&answer.offer_id, &answer.to_peer_id, &joined.swarm, now)
            else {
                let f = fail(
                    FailureKind::UnknownOffer,
                    "no unexpired offer with that offer_id from to_peer_id was sent to this peer",
                );
                return self.send_failure(&f).await;
            };
            // Answers are driven by other peers' offers, which their own buckets already paid
            // for, and each needs an offer delivered here: a popular peer must not lose its
            // answers to its own rate limit.
            self.bucket.refund();
            let (info_hash, peer_id, offer_id) = (
                a.info_hash.to_string(),
                a.peer_id.to_string(),
                answer.offer_id.to_string(),
            );
            let text = Forward::answer(&info_hash, &peer_id, answer.answer, &offer_id).to_json();
            let signal = Box::new(Signal {
                kind: SignalKind::Answer,
                swarm: route.swarm,
                from: self.id,
                to: route.to,
                sid: offer_sid(&answer.offer_id, &a.peer_id),
                body: Body::Sdp(text.into()),
                received_at: now,
            });
            return match state.relay().send(signal) {
                Ok(()) => Ok(()),
                Err(SendError::UnknownPeer) => {
                    let f = fail(FailureKind::PeerGone, "the offering peer is gone");
                    self.send_failure(&f).await
                }
                Err(SendError::Overloaded) => {
                    let f = fail(
                        FailureKind::PeerGone,
                        "the offering peer is not keeping up; the answer was dropped",
                    );
                    self.send_failure(&f).await
                }
            };
        }

        // Offers go to their targets before the reply: when the announcer reads its reply,
        // every offer to a peer of this instance is already queued.
        let (info_hash, peer_id) = (a.info_hash.to_string(), a.peer_id.to_string());
        for (i, (offer, to)) in a.offers.iter().zip(joined.peers).enumerate() {
            // Each further offer costs a token, like each message of a native batch. Offers
            // over the rate are dropped and counted, without a second reply to this announce:
            // a client can't tell a late failure from the refusal of its next request.
            if i > 0 && !self.bucket.try_take(now) {
                state.metrics().dropped(DropReason::RateLimited);
                continue;
            }
            let offer_id = offer.offer_id.to_string();
            let text = Forward::offer(&info_hash, &peer_id, offer.offer, &offer_id).to_json();
            let signal = Box::new(Signal {
                kind: SignalKind::Offer,
                swarm: Arc::clone(&joined.swarm),
                from: self.id,
                to,
                sid: offer_sid(&offer.offer_id, &a.peer_id),
                body: Body::Sdp(text.into()),
                received_at: now,
            });
            // A target that left meanwhile or can't keep up just misses this offer, as with
            // the reference; the relay counts the drop.
            let _ = state.relay().send(signal);
        }
        let text = response::announce(
            &a.info_hash,
            counts,
            config.interval_secs,
            &state.instance().to_string(),
        );
        self.send_text(text).await
    }

    /// Leaves the `i`th joined swarm; returns its counts after.
    fn leave(&mut self, i: usize) -> Counts {
        let j = self.proto.joined.swap_remove(i);
        self.state.membership().leave(self.id, &j.key);
        self.state.webtorrent().remove(&j.key, j.peer_id, self.id)
    }

    async fn send_failure(&mut self, f: &Failure) -> Result<(), Ending> {
        self.state.metrics().webtorrent_failure(f.kind);
        self.send_text(response::failure(f)).await
    }

    async fn send_text(&mut self, text: String) -> Result<(), Ending> {
        if text.is_empty() {
            return Ok(());
        }
        self.send_frame(Message::Text(text.into()), 1).await
    }
}
