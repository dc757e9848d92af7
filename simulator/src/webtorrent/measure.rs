//! What the WebTorrent mode measures: its counters, latency histograms and reason maps (the
//! harness's [`Schema`]).

use crate::harness::stats::Schema;

crate::names! {
    /// The WebTorrent mode's counters.
    pub enum Count {
        /// WebSocket upgrades that succeeded.
        Connects = "connects",
        /// Connection attempts that failed.
        ConnectFailures = "connect_failures",
        /// Reconnections after the tracker closed with 1012 (draining).
        Reconnects = "reconnects",
        /// Other closes and broken connections (each is followed by a reconnection with backoff).
        Disconnects = "disconnects",
        /// Announces sent.
        Announces = "announces",
        /// Scrapes sent.
        Scrapes = "scrapes",
        /// Announce responses received.
        AnnounceResponses = "announce_responses",
        /// Scrape responses received.
        ScrapeResponses = "scrape_responses",
        /// Announce responses that answered no request in flight (should be 0: answers get no
        /// reply; or the response of a request that had timed out).
        UnexpectedResponses = "unexpected_responses",
        /// Requests without a response within the lost-after bound (refused or dropped).
        RequestTimeouts = "request_timeouts",
        /// `failure reason` frames received.
        Failures = "failures",
        /// Offers sent (in announces).
        OffersSent = "offers_sent",
        /// Offers received from other peers.
        OffersReceived = "offers_received",
        /// Offers the swarm had no other peer for.
        OffersUndeliverable = "offers_undeliverable",
        /// Offers not received within the lost-after bound although the swarm had a peer for them.
        OffersLost = "offers_lost",
        /// Offers sent while the ledger was full.
        OffersUntracked = "offers_untracked",
        /// Answers sent.
        AnswersSent = "answers_sent",
        /// Answers received.
        AnswersReceived = "answers_received",
        /// Answers not received within the lost-after bound.
        AnswersLost = "answers_lost",
        /// Answers sent while the ledger was full.
        AnswersUntracked = "answers_untracked",
        /// Offers received and deliberately left unanswered (`--answer-probability`).
        OffersIgnored = "offers_ignored",
        /// Offers or answers received after they had been settled lost, or never tracked.
        Late = "late",
        /// An offer or answer received twice (should be 0).
        Duplicates = "duplicates",
        /// Two offers of one announce at the same peer (should be 0: peers are distinct).
        DuplicateTargets = "duplicate_targets",
        /// An offer relayed back to its own offerer (should be 0).
        SelfOffers = "self_offers",
        /// An answer delivered to a connection that didn't make the offer (should be 0).
        Misrouted = "misrouted",
        /// Offers and answers whose `offer_id` isn't this run's.
        Unmatched = "unmatched",
        /// Frames that weren't JSON of a known shape.
        BadFrames = "bad_frames",
        /// Frames sent.
        FramesOut = "frames_out",
        /// Frames received.
        FramesIn = "frames_in",
        /// Payload bytes sent.
        BytesOut = "bytes_out",
        /// Payload bytes received.
        BytesIn = "bytes_in",
    }
}

crate::names! {
    /// The WebTorrent mode's latency histograms, µs.
    pub enum Latency {
        /// TCP connect + WebSocket upgrade.
        Connect = "connect",
        /// Announce sent to its response received.
        Announce = "announce",
        /// Offer sent (in the announce) to received by the target peer.
        Offer = "offer",
        /// Answer sent to received by the offerer.
        Answer = "answer",
    }
}

crate::names! {
    /// The WebTorrent mode's counts by reason.
    pub enum Reasons {
        /// `failure reason`s received, by reason.
        Failures = "failures",
        /// Closes by the tracker, by close code (`eof` for a broken connection).
        Closes = "closes",
        /// Failed connection attempts, by cause.
        ConnectFailures = "connect_failures",
    }
}

/// The WebTorrent mode's schema.
pub static SCHEMA: Schema = Schema {
    counters: Count::NAMES,
    latencies: Latency::NAMES,
    maps: Reasons::NAMES,
};
