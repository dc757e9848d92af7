//! The announce rules: what an announce does to the connection's swarms, which offers and
//! answers it relays, and what the announcer is told.
//!
//! - An announce joins (or refreshes) the swarm under one `peer_id` per connection; `stopped`
//!   leaves it.
//! - Each offer goes to a distinct random other peer. Before it goes, the offerer's record
//!   counts an answer due from that peer ([`crate::connections`]); an offerer already awaiting
//!   answers from as many peers as allowed sends no offer to another until some are answered
//!   or expire.
//! - An answer goes to the connection of the peer it names (found in the swarm here, or
//!   remembered from its offer) and is delivered only if that peer awaits an answer from this
//!   connection: it sent it an offer, unexpired and not yet answered.
//!
//! A target that left, or that can't keep up, misses an offer as with the reference server
//! (counted). An answer that can't be queued because its offerer doesn't read is counted, not
//! failed: the answerer did nothing wrong.

use bytes::Bytes;

use super::WebTorrent;
use super::id::Id20;
use super::request::{Action, Announce, Event, Failure};
use super::response::{Carries, forward_head};
use crate::metrics::{DropReason, FailureKind};
use crate::relay::SendError;
use crate::session::Conn;
use crate::signal::{Payload, Signal, SignalKind, Span, WtPayload};
use crate::swarm::{Counts, JoinError, JoinRequest, WtAnnounce, WtJoin};
use crate::swarm_key::WEBTORRENT_KEY_LEN;

/// What the announcer is told.
#[derive(Debug)]
pub enum Reply {
    /// Nothing (an answer was forwarded, or dropped for a reason that isn't the sender's).
    None,
    /// The swarm's counts.
    Announce(Id20, Counts),
    /// A refusal.
    Failure(Failure),
}

/// Applies one announce.
pub async fn announce(
    cx: &mut Conn<'_>,
    wt: &mut WebTorrent,
    frame: &Bytes,
    a: Announce<'_>,
) -> Reply {
    let mut key_buf = [0; WEBTORRENT_KEY_LEN];
    let key = a.info_hash.swarm_key(&mut key_buf);
    let fail = |kind, reason: &'static str| {
        let mut f = Failure::new(kind, reason);
        f.action = Some(Action::Announce);
        f.info_hash = Some(a.info_hash);
        Reply::Failure(f)
    };
    let member_peer_id = cx.swarms.get(key).and_then(|m| m.wt).map(|w| w.peer_id);
    if member_peer_id.is_some_and(|p| p != a.peer_id.0) {
        return fail(
            FailureKind::PeerIdConflict,
            "this connection announced another peer_id in this swarm",
        );
    }
    let instance = cx.instance();
    let metrics = cx.metrics();
    let config = &instance.config.webtorrent;
    if a.event == Event::Stopped {
        let counts = instance
            .membership
            .leave(cx.swarms, cx.id, key, metrics)
            .unwrap_or_else(|| instance.membership.counts(key));
        return match a.answer {
            Some(_) => Reply::None,
            None => Reply::Announce(a.info_hash, counts),
        };
    }
    let request = join_request(key, &a, config.max_swarms_per_connection, cx.now);
    let joined = match instance
        .membership
        .join(cx.swarms, cx.id, request, metrics)
        .await
    {
        Ok(j) => j,
        Err(JoinError::SwarmLimit) => {
            return fail(
                FailureKind::SwarmLimit,
                "this connection is in as many swarms as allowed",
            );
        }
        Err(JoinError::PeerIdTaken) => {
            return fail(
                FailureKind::PeerIdConflict,
                "peer_id is in use by another connection in this swarm",
            );
        }
    };
    if let Some(answer) = &a.answer {
        return match forward_answer(cx, wt, frame, &a, answer, joined.id, key) {
            Ok(()) => Reply::None,
            Err(kind) => fail(kind, failure_text(kind)),
        };
    }
    send_offers(cx, frame, &a, joined.id, &joined.peers);
    Reply::Announce(a.info_hash, joined.counts)
}

/// The join an announce makes: offers want as many peers (at most `numwant`); an answer wants
/// none, it only refreshes the membership.
fn join_request<'k>(
    key: &'k str,
    a: &Announce<'_>,
    max_swarms: usize,
    now: tokio::time::Instant,
) -> JoinRequest<'k> {
    let want = match &a.answer {
        Some(_) => 0,
        None => a.offers.len().min(a.numwant.unwrap_or(usize::MAX)),
    };
    JoinRequest {
        key,
        want: u32::try_from(want).unwrap_or(u32::MAX),
        max_swarms,
        wt: Some(WtJoin {
            announce: WtAnnounce {
                peer_id: a.peer_id.0,
                seeder: a.seeder,
                completed: a.event == Event::Completed,
            },
            now,
        }),
        // A peer that announced reads its reply as "I am in the swarm": others must find it
        // fleet-wide from then on.
        register_now: true,
    }
}

pub(super) fn failure_text(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::PeerGone => "the offering peer is gone",
        _ => "no unexpired offer with that offer_id from to_peer_id was sent to this peer",
    }
}

/// Offers go to their targets before the reply: when the announcer reads its reply, every
/// offer to a peer of this instance is already queued.
fn send_offers(
    cx: &mut Conn<'_>,
    frame: &Bytes,
    a: &Announce<'_>,
    swarm: crate::swarm_key::SwarmId,
    targets: &[swarmtrack_protocol::PeerId],
) {
    let n = a.offers.len().min(targets.len());
    if n == 0 {
        return;
    }
    let instance = cx.instance();
    let metrics = cx.metrics();
    // Each further offer costs a token, like each message of a native batch. Offers over the
    // rate are dropped and counted, without a second reply to this announce: a client can't
    // tell a late failure from the refusal of its next request.
    let mut allowed = 1;
    while allowed < n && cx.take_token() {
        allowed += 1;
    }
    if allowed < n {
        metrics.dropped(DropReason::RateLimited, (n - allowed) as u64);
    }
    let connections = &instance.connections;
    let fingerprints: Vec<(u64, u32)> = a.offers[..allowed]
        .iter()
        .zip(targets)
        .map(|(o, &to)| {
            (
                connections.peer_fingerprint(to),
                connections.offer_fingerprint(&o.offer_id.0),
            )
        })
        .collect();
    let awaited = connections.await_answers(cx.id, &fingerprints, cx.now);
    if awaited < allowed {
        metrics.dropped(DropReason::TooManyPendingOffers, (allowed - awaited) as u64);
    }
    let head = Bytes::from(forward_head(&a.info_hash, &a.peer_id, Carries::Offer));
    let mut undelivered = Vec::new();
    for (i, (offer, &to)) in a.offers[..awaited].iter().zip(targets).enumerate() {
        let signal = Signal {
            kind: SignalKind::Offer,
            swarm,
            from: cx.id,
            to,
            received_at: cx.now,
            payload: Payload::WebTorrent(WtPayload::Parts {
                head: head.clone(),
                frame: frame.clone(),
                sdp: Span::of(frame, offer.offer.get().as_bytes()),
                offer_id: offer.offer_id.0,
                peer_id: a.peer_id.0,
                info_hash: a.info_hash.0,
            }),
        };
        // A target that left or can't keep up misses this offer; the relay counts it.
        if instance.relay.send(signal, metrics).is_err() {
            undelivered.push(fingerprints[i]);
        }
    }
    connections.forget_answers(cx.id, &undelivered);
}

/// Sends an answer to its offerer.
fn forward_answer(
    cx: &mut Conn<'_>,
    wt: &mut WebTorrent,
    frame: &Bytes,
    a: &Announce<'_>,
    answer: &super::request::Answer<'_>,
    swarm: crate::swarm_key::SwarmId,
    key: &str,
) -> Result<(), FailureKind> {
    let instance = cx.instance();
    let metrics = cx.metrics();
    // The peer that holds that peer_id here, or, when it is on another instance or gone, the
    // one that offered to this connection under it.
    let offer = instance.connections.offer_fingerprint(&answer.offer_id.0);
    let offerer = match instance.membership.owner_of(key, &answer.to_peer_id.0) {
        Some((_, owner)) => Some(owner),
        None => wt
            .routes
            .answer(swarm, &answer.to_peer_id.0, offer, instance.id),
    };
    let Some(to) = offerer else {
        metrics.dropped(DropReason::UnexpectedAnswer, 1);
        return Err(FailureKind::UnknownOffer);
    };
    let head = Bytes::from(forward_head(&a.info_hash, &a.peer_id, Carries::Answer));
    let signal = Signal {
        kind: SignalKind::Answer,
        swarm,
        from: cx.id,
        to,
        received_at: cx.now,
        payload: Payload::WebTorrent(WtPayload::Parts {
            head,
            frame: frame.clone(),
            sdp: Span::of(frame, answer.answer.get().as_bytes()),
            offer_id: answer.offer_id.0,
            peer_id: a.peer_id.0,
            info_hash: a.info_hash.0,
        }),
    };
    match instance.relay.send(signal, metrics) {
        Ok(()) => {
            // Answers are driven by other peers' offers, which their own buckets already paid
            // for: a popular peer must not lose its answers to its own rate limit.
            cx.refund_token();
            Ok(())
        }
        Err(SendError::UnknownPeer) => Err(FailureKind::PeerGone),
        Err(SendError::UnexpectedAnswer) => Err(FailureKind::UnknownOffer),
        Err(SendError::Overloaded) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
