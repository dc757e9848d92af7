//! The WebTorrent tracker protocol on `/announce` and `/`: what bittorrent-tracker,
//! p2p-media-loader and aquatic_ws clients speak, so existing P2P players work unchanged.
//!
//! A WebTorrent connection is a session like a native one: it has a server peer id, an outbox,
//! and swarm membership through the shared [`Membership`](crate::swarm::Membership), under a
//! key no native swarm id can take ([`crate::swarm_key::webtorrent_key`]). So its offers and
//! answers cross instances through the same batched Redis relay, and pairing is local-first
//! like native joins.
//!
//! - announce: [`announce`] holds the rules.
//! - scrape: this instance's counts.
//!
//! docs/WEBTORRENT.md lists where this differs from the reference server, and why.

mod announce;
pub mod id;
pub mod request;
mod response;
mod routes;

use std::time::Duration;

use rand::Rng;
use tracing::debug;

use crate::metrics::{FailureKind, ReceivedKind};
use crate::session::{Conn, Ending, Protocol};
use crate::signal::{Payload, Refusal, SendError, Signal, SignalKind};
use crate::swarm_key::{WEBTORRENT_KEY_LEN, WEBTORRENT_KEY_PREFIX};
use crate::viewer::Viewer;
use crate::ws::Message;
use crate::ws::frame::Opcode;
use announce::Reply;
use id::Id20;
use request::{Failure, Request, RequestLimits};
use routes::Routes;
use swarmtrack_protocol::Format;

/// A WebTorrent client's own state.
pub struct WebTorrent {
    routes: Routes,
    /// A viewer from its first announce.
    viewer: Viewer,
}

impl WebTorrent {
    /// A client that becomes `viewer` at its first announce.
    pub fn new(viewer: Viewer) -> Self {
        Self {
            routes: Routes::default(),
            viewer,
        }
    }
}

impl Protocol for WebTorrent {
    fn start(&mut self, _cx: &mut Conn<'_>) {
        // The protocol has no greeting: the client speaks first.
    }

    /// An announce may join swarms, which waits for the directory: every frame is handled
    /// in [`Protocol::resume`].
    type Pending = Message;

    fn on_message(&mut self, _cx: &mut Conn<'_>, msg: Message) -> Result<Option<Message>, Ending> {
        Ok(Some(msg))
    }

    async fn resume(&mut self, cx: &mut Conn<'_>, msg: Message) -> Result<(), Ending> {
        on_frame(cx, self, &msg).await;
        if !cx.swarms.is_empty() {
            // In a swarm after this frame: it announced.
            self.viewer.joined(cx.metrics());
        }
        Ok(())
    }

    fn on_signals(&mut self, cx: &mut Conn<'_>, signals: &mut Vec<Signal>) {
        let metrics = cx.metrics();
        for s in signals.iter() {
            let w = match &s.payload {
                Payload::WebTorrent(w) => w,
                Payload::Refused(r) => {
                    refused_on_another_instance(cx, s.kind, r);
                    continue;
                }
                // Only WebTorrent sessions are members of WebTorrent swarms.
                Payload::Native(_) => continue,
            };
            if s.kind == SignalKind::Offer {
                // Its answer finds the offerer by this, on another instance or once it left.
                let (offer_id, peer_id) = w.ids();
                let offer = cx.instance().connections.offer_fingerprint(offer_id);
                self.routes.learn(s.swarm, *peer_id, s.from, offer);
            }
            cx.out().frame(Opcode::Text, 1, |buf| w.write_frame(buf));
        }
        for s in signals.drain(..) {
            if !matches!(s.payload, Payload::Refused(_)) {
                metrics.relay_seconds(s.received_at.elapsed().as_secs_f64());
            }
        }
    }

    fn on_drain(&mut self, cx: &mut Conn<'_>) -> Duration {
        // The protocol has no `reconnect`: close with 1012 at a random time in the window,
        // and the client's own reconnect logic spreads the load over the other instances.
        let configured = cx.config().drain.reconnect_window_ms;
        let window = cx.instance().lifecycle.reconnect_window_ms(configured);
        Duration::from_millis(rand::rng().random_range(0..=window))
    }

    fn on_tick(&mut self, cx: &mut Conn<'_>) {
        let ttl = Duration::from_secs(cx.config().webtorrent.peer_ttl_secs);
        let now = cx.now;
        let instance = cx.instance();
        let metrics = cx.metrics();
        loop {
            let expired = cx.swarms.iter().position(|m| {
                m.wt.is_some_and(|w| now.saturating_duration_since(w.last_announce) >= ttl)
            });
            let Some(i) = expired else { break };
            debug!("peer expired: no announce within the TTL");
            instance.membership.leave_at(cx.swarms, cx.id, i, metrics);
        }
    }
}

/// Handles one frame: the rate, the size, then the request.
async fn on_frame(cx: &mut Conn<'_>, wt: &mut WebTorrent, msg: &Message) {
    let frame = msg.bytes();
    let metrics = cx.metrics();
    let config = &cx.config().webtorrent;
    metrics.bytes_received(frame.len() as u64);
    if !cx.take_token() {
        metrics.received(ReceivedKind::Invalid, Format::Json);
        if cx.rate_refused() {
            let f = Failure::new(
                FailureKind::RateLimited,
                "over the message rate; messages were dropped",
            );
            send_failure(cx, &f);
        }
        return;
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
        send_failure(cx, &f);
        return;
    }
    let limits = RequestLimits {
        max_offers: config.max_offers,
        max_scrape_hashes: config.max_scrape_hashes,
    };
    // Binary frames are read as JSON too, as the reference does.
    let text = simdutf8::basic::from_utf8(frame)
        .map_err(|_| Failure::new(FailureKind::Invalid, "invalid JSON: not UTF-8"));
    match text.and_then(|t| request::parse(t, &limits)) {
        Err(f) => {
            metrics.received(ReceivedKind::Invalid, Format::Json);
            debug!(reason = %f.reason, "refused request");
            send_failure(cx, &f);
        }
        Ok(Request::Scrape(hashes)) => {
            metrics.received(ReceivedKind::Scrape, Format::Json);
            scrape(cx, &hashes);
        }
        Ok(Request::Announce(a)) => {
            let kind = if a.answer.is_some() {
                ReceivedKind::Answer
            } else {
                ReceivedKind::Announce
            };
            metrics.received(kind, Format::Json);
            let started = cx.now;
            match announce::announce(cx, wt, frame, a).await {
                Reply::None => {}
                Reply::Announce(info_hash, counts) => {
                    let interval = config.interval_secs;
                    let id = cx.instance().id;
                    cx.out().frame(Opcode::Text, 1, |buf| {
                        response::announce(buf, &info_hash, counts, interval, id)
                    });
                }
                Reply::Failure(f) => send_failure(cx, &f),
            }
            metrics.announce_seconds(started.elapsed().as_secs_f64());
        }
    }
}

/// A scrape: this instance's counts of each swarm.
fn scrape(cx: &mut Conn<'_>, hashes: &[Id20]) {
    let membership = &cx.instance().membership;
    let files: Vec<(Id20, crate::swarm::Counts)> = hashes
        .iter()
        .map(|h| {
            let mut buf = [0; WEBTORRENT_KEY_LEN];
            (*h, membership.counts(h.swarm_key(&mut buf)))
        })
        .collect();
    let interval = cx.config().webtorrent.interval_secs;
    cx.out().frame(Opcode::Text, 1, |buf| {
        response::scrape(buf, &files, interval)
    });
}

/// An answer this client sent was refused on its offerer's instance: the `failure reason` it
/// would get if both were on this one (an offer refused there only stops awaiting its answer,
/// which the relay did; an answer dropped for a full outbox gets nothing, as here).
fn refused_on_another_instance(cx: &mut Conn<'_>, kind: SignalKind, r: &Refusal) {
    let failure = match (kind, r.error) {
        (SignalKind::Answer, SendError::UnknownPeer) => FailureKind::PeerGone,
        (SignalKind::Answer, SendError::UnexpectedAnswer) => FailureKind::UnknownOffer,
        _ => return,
    };
    let info_hash = r
        .swarm_key
        .strip_prefix(WEBTORRENT_KEY_PREFIX)
        .and_then(|hex| {
            let mut id = [0u8; 20];
            for (i, b) in id.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(Id20(id))
        });
    let f = Failure {
        kind: failure,
        reason: announce::failure_text(failure).into(),
        action: Some(request::Action::Announce),
        info_hash,
    };
    send_failure(cx, &f);
}

fn send_failure(cx: &mut Conn<'_>, f: &Failure) {
    cx.metrics().webtorrent_failure(f.kind);
    cx.out()
        .frame(Opcode::Text, 1, |buf| response::failure(buf, f));
}
