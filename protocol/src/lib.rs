//! The native wire protocol v1 (`GET /v1/ws`), shared by the tracker, its tests and the simulator.
//!
//! A text frame holds one JSON object, a binary frame the same object in MessagePack (maps with
//! the same keys). Every message has a type field `t`. [`ClientMsg`] is what a viewer sends,
//! [`ServerMsg`] what the tracker sends. `m` (SDP) and `c` (ICE candidates) are opaque strings:
//! the tracker relays them without parsing. See docs/ARCHITECTURE.md for the full contract.

mod codec;
mod control;
mod decode;
mod peer_id;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

pub use codec::{DecodeLimits, EncodeError, Format, Frame, ProtocolError, encode, encode_client};
pub use control::{json_has_control, plain_has_control, plain_list_has_control};
pub use decode::{
    CandsIn, Decoded, Incoming, RawList, RawText, SignalIn, check_swarm_id, decode_client,
    decode_json, decode_msgpack,
};
pub use peer_id::{InstanceId, PEER_ID_LEN, PeerId};

/// Longest negotiation id (`sid`) a client may use, in bytes.
pub const MAX_SID_BYTES: usize = 32;

/// Longest swarm id the protocol allows, in bytes; config may lower it.
pub const MAX_SWARM_ID_BYTES: usize = 256;

/// A message from a viewer, validated.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClientMsg<'a> {
    /// Enter a swarm and ask for up to `want` peers to offer to.
    Join {
        /// The swarm (video) id, 1..=256 bytes.
        #[serde(borrow)]
        swarm: Cow<'a, str>,
        /// How many peers to return, 1..=the server's cap.
        want: u32,
    },
    /// Leave a swarm.
    Leave {
        /// The swarm id.
        #[serde(borrow)]
        swarm: Cow<'a, str>,
    },
    /// An SDP offer for peer `to`.
    Offer(#[serde(borrow)] Signal<'a>),
    /// An SDP answer for peer `to`.
    Answer(#[serde(borrow)] Signal<'a>),
    /// A batch of trickled ICE candidates for peer `to`.
    Cands(#[serde(borrow)] Cands<'a>),
    /// Several messages in one frame (never nested).
    Batch {
        /// The messages, at most the server's batch cap.
        #[serde(borrow)]
        msgs: Vec<ClientMsg<'a>>,
    },
    /// Liveness check; the server replies `pong`.
    Ping,
}

/// An offer or answer sent by a viewer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Signal<'a> {
    /// The swarm both viewers are in.
    #[serde(borrow)]
    pub swarm: Cow<'a, str>,
    /// The receiving peer.
    pub to: PeerId,
    /// Names the negotiation, at most 32 bytes.
    #[serde(borrow)]
    pub sid: Cow<'a, str>,
    /// The SDP (plain or minified by the SDK); opaque to the tracker.
    #[serde(borrow)]
    pub m: Cow<'a, str>,
}

/// Trickled ICE candidates sent by a viewer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Cands<'a> {
    /// The swarm both viewers are in.
    #[serde(borrow)]
    pub swarm: Cow<'a, str>,
    /// The receiving peer.
    pub to: PeerId,
    /// Names the negotiation, at most 32 bytes.
    #[serde(borrow)]
    pub sid: Cow<'a, str>,
    /// The candidates; opaque to the tracker.
    #[serde(borrow)]
    pub c: Vec<Cow<'a, str>>,
    /// True when gathering is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

/// A message from the tracker to a viewer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    /// First message on every connection.
    Welcome {
        /// The viewer's id, assigned by the server.
        peer: PeerId,
        /// The instance that holds the connection.
        instance: InstanceId,
        /// The limits this connection runs under.
        limits: WelcomeLimits,
    },
    /// Reply to `join`: the viewer offers to these peers.
    Peers {
        /// The swarm joined.
        #[serde(borrow)]
        swarm: Cow<'a, str>,
        /// Up to `want` other viewers of the swarm, never the viewer itself.
        peers: Vec<PeerId>,
    },
    /// A relayed offer.
    Offer(#[serde(borrow)] RelayedSignal<'a>),
    /// A relayed answer.
    Answer(#[serde(borrow)] RelayedSignal<'a>),
    /// Relayed ICE candidates.
    Cands(#[serde(borrow)] RelayedCands<'a>),
    /// Several messages coalesced into one frame.
    Batch {
        /// The messages, in the order they were queued.
        #[serde(borrow)]
        msgs: Vec<ServerMsg<'a>>,
    },
    /// This instance is draining: reconnect (through the front end) after that delay.
    Reconnect {
        /// Delay before reconnecting, in milliseconds.
        after_ms: u64,
    },
    /// Something the viewer sent was refused; the connection stays open.
    Error {
        /// Machine-readable cause.
        code: ErrorCode,
        /// Human-readable detail.
        #[serde(borrow)]
        msg: Cow<'a, str>,
        /// The `t` of the offending message, when known.
        #[serde(
            rename = "ref",
            default,
            skip_serializing_if = "Option::is_none",
            borrow
        )]
        reference: Option<Cow<'a, str>>,
        /// The `sid` of the refused offer, answer or candidates, so the sender knows which
        /// negotiation failed; absent for other refusals.
        #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
        sid: Option<Cow<'a, str>>,
    },
    /// Reply to `ping`.
    Pong,
}

impl ServerMsg<'_> {
    /// The same message owning all its strings, for clients that keep messages around.
    pub fn into_owned(self) -> ServerMsg<'static> {
        fn own(s: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(s.into_owned())
        }
        match self {
            ServerMsg::Welcome {
                peer,
                instance,
                limits,
            } => ServerMsg::Welcome {
                peer,
                instance,
                limits,
            },
            ServerMsg::Peers { swarm, peers } => ServerMsg::Peers {
                swarm: own(swarm),
                peers,
            },
            ServerMsg::Offer(s) => ServerMsg::Offer(s.into_owned()),
            ServerMsg::Answer(s) => ServerMsg::Answer(s.into_owned()),
            ServerMsg::Cands(c) => ServerMsg::Cands(RelayedCands {
                swarm: own(c.swarm),
                from: c.from,
                sid: own(c.sid),
                c: Cow::Owned(c.c.into_owned()),
                end: c.end,
            }),
            ServerMsg::Batch { msgs } => ServerMsg::Batch {
                msgs: msgs.into_iter().map(ServerMsg::into_owned).collect(),
            },
            ServerMsg::Reconnect { after_ms } => ServerMsg::Reconnect { after_ms },
            ServerMsg::Error {
                code,
                msg,
                reference,
                sid,
            } => ServerMsg::Error {
                code,
                msg: own(msg),
                reference: reference.map(own),
                sid: sid.map(own),
            },
            ServerMsg::Pong => ServerMsg::Pong,
        }
    }
}

impl RelayedSignal<'_> {
    /// The same signal owning its strings.
    pub fn into_owned(self) -> RelayedSignal<'static> {
        RelayedSignal {
            swarm: Cow::Owned(self.swarm.into_owned()),
            from: self.from,
            sid: Cow::Owned(self.sid.into_owned()),
            m: Cow::Owned(self.m.into_owned()),
        }
    }
}

/// An offer or answer as relayed, with `from` set by the server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RelayedSignal<'a> {
    /// The swarm both viewers are in.
    #[serde(borrow)]
    pub swarm: Cow<'a, str>,
    /// The sending peer, set by the server.
    pub from: PeerId,
    /// The negotiation id, as sent.
    #[serde(borrow)]
    pub sid: Cow<'a, str>,
    /// The SDP, as sent.
    #[serde(borrow)]
    pub m: Cow<'a, str>,
}

/// ICE candidates as relayed, with `from` set by the server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RelayedCands<'a> {
    /// The swarm both viewers are in.
    #[serde(borrow)]
    pub swarm: Cow<'a, str>,
    /// The sending peer, set by the server.
    pub from: PeerId,
    /// The negotiation id, as sent.
    #[serde(borrow)]
    pub sid: Cow<'a, str>,
    /// The candidates, as sent.
    #[serde(borrow)]
    pub c: Cow<'a, [String]>,
    /// True when gathering is complete, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<bool>,
}

/// The limits announced in `welcome`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WelcomeLimits {
    /// The largest `want` accepted in `join`.
    pub want: u32,
    /// The largest message accepted, in bytes.
    pub max_message: u32,
    /// Messages per second allowed on average (a batch counts each message in it).
    pub rate: u32,
    /// Messages allowed in a burst above the rate.
    #[serde(default)]
    pub burst: u32,
}

/// The error codes of the contract.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON/MessagePack, or the wrong shape.
    BadMessage,
    /// A message or batch over the size limits.
    TooLarge,
    /// Over the connection's message rate.
    RateLimited,
    /// A signal for a swarm the sender hasn't joined.
    NotInSwarm,
    /// The target is gone or not in that swarm.
    UnknownPeer,
    /// Too many swarms on this connection.
    SwarmLimit,
    /// The server can't take this now.
    Overloaded,
}

impl ErrorCode {
    /// Every code, for metrics that must be present before the first error.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::BadMessage,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::NotInSwarm,
        ErrorCode::UnknownPeer,
        ErrorCode::SwarmLimit,
        ErrorCode::Overloaded,
    ];

    /// The wire name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotInSwarm => "not_in_swarm",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::SwarmLimit => "swarm_limit",
            ErrorCode::Overloaded => "overloaded",
        }
    }
}

/// WebSocket close codes the tracker uses.
pub mod close {
    /// A WebSocket protocol violation.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not valid UTF-8 (RFC 6455 requires failing the connection).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The viewer broke a rule: a slow consumer, or idle past the timeout.
    pub const POLICY: u16 = 1008;
    /// A frame too big to read at all.
    pub const TOO_BIG: u16 = 1009;
    /// This instance is restarting or draining: reconnect.
    pub const RESTART: u16 = 1012;
}
