//! What the native mode measures: its counters, latency histograms and reason maps (the
//! harness's [`Schema`]), and the three relayed message kinds.

use serde::{Deserialize, Serialize};

use crate::harness::stats::Schema;

/// The three relayed message kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An SDP offer.
    Offer,
    /// An SDP answer.
    Answer,
    /// A batch of ICE candidates.
    Cands,
}

impl Kind {
    /// The kind a `ref` in an error names, if it is a relayed one.
    pub fn from_ref(r: &str) -> Option<Kind> {
        match r {
            "offer" => Some(Kind::Offer),
            "answer" => Some(Kind::Answer),
            "cands" => Some(Kind::Cands),
            _ => None,
        }
    }

    /// Its sent counter.
    pub fn sent(self) -> C {
        match self {
            Kind::Offer => C::SentOffer,
            Kind::Answer => C::SentAnswer,
            Kind::Cands => C::SentCands,
        }
    }

    /// Its delivered counter.
    pub fn delivered(self) -> C {
        match self {
            Kind::Offer => C::DeliveredOffer,
            Kind::Answer => C::DeliveredAnswer,
            Kind::Cands => C::DeliveredCands,
        }
    }

    /// Its latency histogram.
    pub fn latency(self) -> L {
        match self {
            Kind::Offer => L::Offer,
            Kind::Answer => L::Answer,
            Kind::Cands => L::Cands,
        }
    }
}

crate::names! {
    /// The native mode's counters.
    pub enum C {
        /// WebSocket upgrades that succeeded.
        Connects = "connects",
        /// Connection attempts that failed (TCP, upgrade, or no `welcome`).
        ConnectFailures = "connect_failures",
        /// `join` messages sent.
        Joins = "joins",
        /// `peers` replies received.
        Peers = "peers",
        /// Negotiations started as offerer.
        Negotiations = "negotiations",
        /// Extra negotiations the pacer asked for (renegotiations).
        Renegotiations = "renegotiations",
        /// Renegotiations skipped because the chosen viewer was busy.
        RenegotiationsSkipped = "renegotiations_skipped",
        /// Offers sent.
        SentOffer = "sent_offer",
        /// Answers sent.
        SentAnswer = "sent_answer",
        /// `cands` messages sent.
        SentCands = "sent_cands",
        /// Offers received.
        DeliveredOffer = "delivered_offer",
        /// Answers received.
        DeliveredAnswer = "delivered_answer",
        /// `cands` messages received.
        DeliveredCands = "delivered_cands",
        /// Sent messages the tracker refused with an error naming them.
        Refused = "refused",
        /// Sent messages never delivered nor refused within the lost-after bound.
        Lost = "lost",
        /// Messages that arrived after they had been counted lost.
        Late = "late",
        /// Received relayed messages whose kind didn't match what was sent in that position.
        Misordered = "misordered",
        /// Received relayed messages no viewer of this process sent.
        Unmatched = "unmatched",
        /// `reconnect` messages followed.
        Reconnects = "reconnects",
        /// Connections the tracker closed or broke while the viewer was watching.
        Disconnects = "disconnects",
        /// Frames sent.
        FramesOut = "frames_out",
        /// Frames received.
        FramesIn = "frames_in",
        /// Payload bytes sent.
        BytesOut = "bytes_out",
        /// Payload bytes received.
        BytesIn = "bytes_in",
        /// Frames from the tracker that didn't decode.
        BadFrames = "bad_frames",
    }
}

crate::names! {
    /// The native mode's latency histograms, µs.
    pub enum L {
        /// TCP connect + upgrade + `welcome`.
        Connect = "connect",
        /// `join` sent to `peers` received.
        Join = "join",
        /// Offer sent to offer received.
        Offer = "offer",
        /// Answer sent to answer received.
        Answer = "answer",
        /// `cands` sent to `cands` received.
        Cands = "cands",
    }
}

crate::names! {
    /// The native mode's counts by reason.
    pub enum M {
        /// `error` messages received, by code.
        Errors = "errors",
        /// Closes initiated by the tracker, by close code (`eof` for a broken connection).
        Closes = "closes",
        /// Failed connection attempts, by cause.
        ConnectFailures = "connect_failures",
    }
}

/// The native mode's schema.
pub static SCHEMA: Schema = Schema {
    counters: C::NAMES,
    latencies: L::NAMES,
    maps: M::NAMES,
};
