//! Decoding and validating client frames, encoding server messages.
//!
//! Decoding is one pass into a flat [`Raw`] struct that borrows strings from the frame (those
//! without escapes), then a validation step that builds the typed [`ClientMsg`]. This avoids
//! serde's internally-tagged enums, which buffer every message into an intermediate tree before
//! looking at `t`.

use std::borrow::Cow;

use serde::Deserialize;

use super::{
    Cands, ClientMsg, ErrorCode, MAX_SID_BYTES, MAX_SWARM_ID_BYTES, PeerId, ServerMsg, Signal,
};

/// The two frame formats of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A text frame holding one JSON object.
    Json,
    /// A binary frame holding one MessagePack map.
    MsgPack,
}

impl Format {
    /// The metric label for this format.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::MsgPack => "msgpack",
        }
    }
}

/// The limits the decoder enforces; they come from the tracker's config.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The largest `want` accepted.
    pub max_want: u32,
    /// The longest swarm id, in bytes (at most [`MAX_SWARM_ID_BYTES`]).
    pub max_swarm_id_bytes: usize,
    /// The most messages in one `batch`.
    pub max_batch: usize,
}

/// Why a client message was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtocolError {
    /// Not JSON/MessagePack, or not an object with a string `t`.
    #[error("not a valid message: {0}")]
    Malformed(String),
    /// A `t` this protocol doesn't have.
    #[error("unknown message type")]
    UnknownType,
    /// A known `t` whose fields are missing or out of range.
    #[error("{t}: {reason}")]
    Invalid {
        /// The message type.
        t: &'static str,
        /// What is wrong.
        reason: Cow<'static, str>,
    },
    /// A `batch` with more messages than allowed.
    #[error("batch of {len} messages is over the limit of {max}")]
    BatchTooLarge {
        /// Messages in the batch.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl ProtocolError {
    /// The contract's error code for this cause.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::BatchTooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadMessage,
        }
    }

    /// The offending message type, when known.
    pub fn reference(&self) -> Option<&'static str> {
        match self {
            ProtocolError::Invalid { t, .. } => Some(t),
            ProtocolError::BatchTooLarge { .. } => Some("batch"),
            _ => None,
        }
    }
}

/// A decoded frame: one message, or a batch whose messages were validated one by one.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A single message.
    One(ClientMsg<'a>),
    /// The messages of a `batch`, each valid or with its own error.
    Batch(Vec<Result<ClientMsg<'a>, ProtocolError>>),
}

/// Every field any client message may carry, as found in one map; unknown keys are ignored
/// for forward compatibility. Hand-written rather than derived for two reasons: serde's derive
/// accepts a struct as an array too (`["join","v",3]`), which the contract doesn't allow, and it
/// copies every `Option<Cow<str>>` instead of borrowing it from the frame.
#[derive(Default)]
struct Raw<'a> {
    t: Option<Cow<'a, str>>,
    swarm: Option<Cow<'a, str>>,
    want: Option<i64>,
    to: Option<Cow<'a, str>>,
    sid: Option<Cow<'a, str>>,
    m: Option<Cow<'a, str>>,
    c: Option<Vec<Cow<'a, str>>>,
    end: Option<bool>,
    msgs: Option<Vec<Raw<'a>>>,
    /// Inside a batch: a `msgs` field was present (and skipped, so batches can't nest).
    nested_msgs: bool,
}

/// A string borrowed from the frame when it has no escapes, copied otherwise.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A list of strings, each borrowed where possible.
struct StrList<'a>(Vec<Cow<'a, str>>);

impl<'de> Deserialize<'de> for StrList<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items: Vec<Str<'de>> = Vec::deserialize(d)?;
        Ok(StrList(items.into_iter().map(|s| s.0).collect()))
    }
}

/// Deserializes a [`Raw`] from a map only; `top` says whether `msgs` may hold a batch.
struct RawSeed {
    top: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for RawSeed {
    type Value = Raw<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RawSeed {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let mut raw = Raw::default();
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "t" => raw.t = Some(map.next_value::<Str<'de>>()?.0),
                "swarm" => raw.swarm = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                "want" => raw.want = map.next_value()?,
                "to" => raw.to = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                "sid" => raw.sid = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                "m" => raw.m = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                "c" => raw.c = map.next_value::<Option<StrList<'de>>>()?.map(|l| l.0),
                "end" => raw.end = map.next_value()?,
                "msgs" if self.top => raw.msgs = Some(map.next_value_seed(RawList)?),
                "msgs" => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    raw.nested_msgs = true;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

/// The `msgs` list of a batch: messages that may not themselves be batches.
struct RawList;

impl<'de> serde::de::DeserializeSeed<'de> for RawList {
    type Value = Vec<Raw<'de>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RawList {
    type Value = Vec<Raw<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of messages")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Bounded by the frame size; the batch limit is checked after decoding.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(raw) = seq.next_element_seed(RawSeed { top: false })? {
            out.push(raw);
        }
        Ok(out)
    }
}

/// MessagePack nesting allowed; a valid message needs 3 levels (batch, list, message).
const MAX_MSGPACK_DEPTH: usize = 16;

/// Decodes and validates one client frame.
///
/// # Errors
/// [`ProtocolError`] when the frame isn't a message, or when a single message (not inside a
/// batch) is invalid. Invalid messages inside a batch are returned in [`Decoded::Batch`].
pub fn decode_client<'a>(
    frame: &'a [u8],
    format: Format,
    limits: &DecodeLimits,
) -> Result<Decoded<'a>, ProtocolError> {
    use serde::de::DeserializeSeed;
    let seed = RawSeed { top: true };
    let raw: Raw<'a> = match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_slice(frame);
            let raw = seed
                .deserialize(&mut de)
                .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            de.end()
                .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            raw
        }
        Format::MsgPack => {
            let mut de = rmp_serde::Deserializer::from_read_ref(frame);
            de.set_max_depth(MAX_MSGPACK_DEPTH);
            seed.deserialize(&mut de)
                .map_err(|e| ProtocolError::Malformed(e.to_string()))?
        }
    };
    if raw.t.as_deref() == Some("batch") {
        let msgs = raw.msgs.ok_or(ProtocolError::Invalid {
            t: "batch",
            reason: "missing field `msgs`".into(),
        })?;
        if msgs.len() > limits.max_batch {
            return Err(ProtocolError::BatchTooLarge {
                len: msgs.len(),
                max: limits.max_batch,
            });
        }
        let out = msgs
            .into_iter()
            .map(|m| {
                if m.t.as_deref() == Some("batch") || m.nested_msgs {
                    return Err(ProtocolError::Invalid {
                        t: "batch",
                        reason: "batches can't nest".into(),
                    });
                }
                validate(m, limits)
            })
            .collect();
        return Ok(Decoded::Batch(out));
    }
    Ok(Decoded::One(validate(raw, limits)?))
}

fn invalid(t: &'static str, reason: impl Into<Cow<'static, str>>) -> ProtocolError {
    ProtocolError::Invalid {
        t,
        reason: reason.into(),
    }
}

fn field<T>(t: &'static str, name: &'static str, v: Option<T>) -> Result<T, ProtocolError> {
    v.ok_or_else(|| invalid(t, format!("missing field `{name}`")))
}

fn swarm_id<'a>(
    t: &'static str,
    v: Option<Cow<'a, str>>,
    limits: &DecodeLimits,
) -> Result<Cow<'a, str>, ProtocolError> {
    let swarm = field(t, "swarm", v)?;
    let max = limits.max_swarm_id_bytes.min(MAX_SWARM_ID_BYTES);
    if swarm.is_empty() || swarm.len() > max {
        return Err(invalid(t, format!("`swarm` must be 1..={max} bytes")));
    }
    // Control characters are reserved: the tracker keys WebTorrent swarms with one, so a
    // native swarm id can never name a WebTorrent swarm.
    if swarm.chars().any(char::is_control) {
        return Err(invalid(t, "`swarm` must not contain control characters"));
    }
    Ok(swarm)
}

fn target(t: &'static str, v: Option<Cow<'_, str>>) -> Result<PeerId, ProtocolError> {
    let to = field(t, "to", v)?;
    PeerId::parse(&to).ok_or_else(|| invalid(t, "`to` is not a peer id"))
}

fn sid<'a>(t: &'static str, v: Option<Cow<'a, str>>) -> Result<Cow<'a, str>, ProtocolError> {
    let sid = field(t, "sid", v)?;
    if sid.len() > MAX_SID_BYTES {
        return Err(invalid(
            t,
            format!("`sid` must be at most {MAX_SID_BYTES} bytes"),
        ));
    }
    Ok(sid)
}

fn validate<'a>(f: Raw<'a>, limits: &DecodeLimits) -> Result<ClientMsg<'a>, ProtocolError> {
    let Some(t) = f.t else {
        return Err(ProtocolError::Malformed("missing field `t`".into()));
    };
    match &*t {
        "join" => {
            let swarm = swarm_id("join", f.swarm, limits)?;
            let want = field("join", "want", f.want)?;
            if want < 1 || want > i64::from(limits.max_want) {
                return Err(invalid(
                    "join",
                    format!("`want` must be 1..={}", limits.max_want),
                ));
            }
            Ok(ClientMsg::Join {
                swarm,
                // In range 1..=max_want (a u32) per the check above.
                want: u32::try_from(want).unwrap_or(limits.max_want),
            })
        }
        "leave" => Ok(ClientMsg::Leave {
            swarm: swarm_id("leave", f.swarm, limits)?,
        }),
        kind @ ("offer" | "answer") => {
            let t = if kind == "offer" { "offer" } else { "answer" };
            let signal = Signal {
                swarm: swarm_id(t, f.swarm, limits)?,
                to: target(t, f.to)?,
                sid: sid(t, f.sid)?,
                m: field(t, "m", f.m)?,
            };
            Ok(if t == "offer" {
                ClientMsg::Offer(signal)
            } else {
                ClientMsg::Answer(signal)
            })
        }
        "cands" => Ok(ClientMsg::Cands(Cands {
            swarm: swarm_id("cands", f.swarm, limits)?,
            to: target("cands", f.to)?,
            sid: sid("cands", f.sid)?,
            c: field("cands", "c", f.c)?,
            end: f.end,
        })),
        "ping" => Ok(ClientMsg::Ping),
        _ => Err(ProtocolError::UnknownType),
    }
}

/// An encoded message, ready to become a WebSocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// JSON, for a text frame.
    Text(String),
    /// MessagePack, for a binary frame.
    Binary(Vec<u8>),
}

impl Frame {
    /// The encoded length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    /// True for an empty encoding (never produced by [`encode`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes a server message in the given format.
///
/// `size_hint` is the payload size the caller knows of (SDP, candidates); the buffer is sized
/// for it up front so that encoding a relayed SDP doesn't grow the buffer several times.
///
/// # Errors
/// Only if serialization itself fails, which the message types make impossible in practice.
pub fn encode(msg: &ServerMsg<'_>, format: Format, size_hint: usize) -> Result<Frame, EncodeError> {
    // Field names, ids and JSON escaping of SDP line ends; measured on the fixtures.
    let mut buf = Vec::with_capacity(size_hint + size_hint / 16 + 128);
    match format {
        Format::Json => {
            serde_json::to_writer(&mut buf, msg).map_err(|e| EncodeError(e.to_string()))?;
            // serde_json writes UTF-8 only; checking again is the price of forbidding unsafe.
            String::from_utf8(buf)
                .map(Frame::Text)
                .map_err(|e| EncodeError(e.to_string()))
        }
        Format::MsgPack => {
            let mut ser = rmp_serde::Serializer::new(&mut buf).with_struct_map();
            serde::Serialize::serialize(msg, &mut ser).map_err(|e| EncodeError(e.to_string()))?;
            Ok(Frame::Binary(buf))
        }
    }
}

/// Encodes a client message in the given format (for clients, tests and the simulator).
///
/// # Errors
/// Only if serialization itself fails.
pub fn encode_client(msg: &ClientMsg<'_>, format: Format) -> Result<Vec<u8>, EncodeError> {
    match format {
        Format::Json => serde_json::to_vec(msg).map_err(|e| EncodeError(e.to_string())),
        Format::MsgPack => rmp_serde::to_vec_named(msg).map_err(|e| EncodeError(e.to_string())),
    }
}

/// A server message could not be serialized.
#[derive(Debug, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(String);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InstanceId, RelayedCands, RelayedSignal, WelcomeLimits};
    use proptest::prelude::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_want: 16,
        max_swarm_id_bytes: 256,
        max_batch: 64,
    };

    fn peer() -> PeerId {
        PeerId::new(InstanceId(7), 3, 99)
    }

    fn json(s: &str) -> Result<Decoded<'_>, ProtocolError> {
        decode_client(s.as_bytes(), Format::Json, &LIMITS)
    }

    fn one(s: &str) -> ClientMsg<'_> {
        match json(s) {
            Ok(Decoded::One(m)) => m,
            other => panic!("expected one message, got {other:?}"),
        }
    }

    fn err(s: &str) -> ProtocolError {
        match json(s) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn decodes_every_message_type() {
        assert_eq!(
            one(r#"{"t":"join","swarm":"v1","want":5}"#),
            ClientMsg::Join {
                swarm: "v1".into(),
                want: 5
            }
        );
        assert_eq!(
            one(r#"{"t":"leave","swarm":"v1"}"#),
            ClientMsg::Leave { swarm: "v1".into() }
        );
        let to = peer().to_string();
        let text = format!(r#"{{"t":"offer","swarm":"v","to":"{to}","sid":"s1","m":"v=0\r\n"}}"#);
        let offer = one(&text);
        assert_eq!(
            offer,
            ClientMsg::Offer(Signal {
                swarm: "v".into(),
                to: peer(),
                sid: "s1".into(),
                m: "v=0\r\n".into()
            })
        );
        let text = format!(
            r#"{{"t":"cands","swarm":"v","to":"{to}","sid":"s","c":["a","b"],"end":true}}"#
        );
        let cands = one(&text);
        assert!(
            matches!(cands, ClientMsg::Cands(Cands { end: Some(true), ref c, .. }) if c.len() == 2)
        );
        assert_eq!(one(r#"{"t":"ping","extra":[1,2,{}]}"#), ClientMsg::Ping);
    }

    #[test]
    fn refuses_wrong_shapes_with_bad_message() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"t":5}"#,
            r#"{"t":"nope"}"#,
            r#"{"t":"join","want":3}"#,
            r#"{"t":"join","swarm":"","want":3}"#,
            r#"{"t":"join","swarm":"x","want":0}"#,
            r#"{"t":"join","swarm":"x","want":17}"#,
            r#"{"t":"join","swarm":"x","want":1e30}"#,
            r#"{"t":"join","swarm":"x","want":-1}"#,
            r#"{"t":"offer","swarm":"x","to":"short","sid":"s","m":"x"}"#,
            r#"{"t":"cands","swarm":"x","sid":"s","c":[]}"#,
            r#"{"t":"join","swarm":"\ud800","want":1}"#,
            r#"{"t":"join","swarm":"wt\u001fabc","want":1}"#,
        ] {
            let e = err(bad);
            assert_eq!(e.code(), ErrorCode::BadMessage, "{bad}: {e}");
        }
        let long = "x".repeat(257);
        let e = err(&format!(r#"{{"t":"join","swarm":"{long}","want":1}}"#));
        assert_eq!(e.reference(), Some("join"));
        let to = peer().to_string();
        let sid = "s".repeat(33);
        let e = err(&format!(
            r#"{{"t":"answer","swarm":"x","to":"{to}","sid":"{sid}","m":""}}"#
        ));
        assert_eq!(e.reference(), Some("answer"));
    }

    #[test]
    fn only_maps_are_messages() {
        assert!(json(r#"["ping"]"#).is_err());
        assert!(json(r#"["join","v",3]"#).is_err());
        let arr = rmp_serde::to_vec(&("join", "v", 3)).expect("encode");
        assert!(decode_client(&arr, Format::MsgPack, &LIMITS).is_err());
        assert!(json(r#"{"t":"ping"} trailing"#).is_err());
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_frame() {
        let to = peer().to_string();
        let text = format!(r#"{{"t":"offer","swarm":"v","to":"{to}","sid":"s","m":"a\r\nb"}}"#);
        let Ok(Decoded::One(ClientMsg::Offer(s))) = json(&text) else {
            panic!("expected an offer")
        };
        assert!(matches!(s.swarm, Cow::Borrowed(_)));
        assert!(matches!(s.sid, Cow::Borrowed(_)));
        assert!(matches!(s.m, Cow::Owned(_)), "escapes need a copy");
        assert_eq!(s.m, "a\r\nb");
        let msg = ClientMsg::Offer(Signal {
            m: "v=0\r\n".into(),
            ..s.clone()
        });
        let bytes = rmp_serde::to_vec_named(&msg).expect("encode");
        let Ok(Decoded::One(ClientMsg::Offer(p))) = decode_client(&bytes, Format::MsgPack, &LIMITS)
        else {
            panic!("expected an offer")
        };
        assert!(
            matches!(p.m, Cow::Borrowed(_)),
            "MessagePack strings are always borrowed"
        );
    }

    #[test]
    fn batches_are_validated_per_message_and_bounded() {
        let Ok(Decoded::Batch(msgs)) =
            json(r#"{"t":"batch","msgs":[{"t":"ping"},{"t":"bogus"},{"t":"batch","msgs":[]}]}"#)
        else {
            panic!("expected a batch");
        };
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0], Ok(ClientMsg::Ping));
        assert_eq!(msgs[1], Err(ProtocolError::UnknownType));
        assert!(matches!(
            &msgs[2],
            Err(ProtocolError::Invalid { t: "batch", .. })
        ));

        let many = vec![r#"{"t":"ping"}"#; 65].join(",");
        let e = err(&format!(r#"{{"t":"batch","msgs":[{many}]}}"#));
        assert_eq!(e.code(), ErrorCode::TooLarge);
    }

    #[test]
    fn msgpack_decodes_like_json() {
        let msg = ClientMsg::Batch {
            msgs: vec![
                ClientMsg::Join {
                    swarm: "v".into(),
                    want: 2,
                },
                ClientMsg::Cands(Cands {
                    swarm: "v".into(),
                    to: peer(),
                    sid: "s".into(),
                    c: vec!["candidate:1".into()],
                    end: None,
                }),
            ],
        };
        let bytes = rmp_serde::to_vec_named(&msg).expect("encode");
        let Ok(Decoded::Batch(msgs)) = decode_client(&bytes, Format::MsgPack, &LIMITS) else {
            panic!("expected a batch");
        };
        let ClientMsg::Batch { msgs: want } = msg else {
            unreachable!()
        };
        assert_eq!(msgs, want.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn deep_msgpack_nesting_is_refused_not_overflowed() {
        // 5,000 nested one-element arrays inside `c`.
        let mut bytes = vec![0x82, 0xa1, b't', 0xa4, b'p', b'i', b'n', b'g', 0xa1, b'c'];
        bytes.extend(std::iter::repeat_n(0x91, 5_000));
        bytes.push(0xc0);
        assert!(decode_client(&bytes, Format::MsgPack, &LIMITS).is_err());
    }

    #[test]
    fn server_messages_round_trip_in_both_formats() {
        let cands = vec!["candidate:1 1 udp 1 1.2.3.4 5 typ host".to_string()];
        let msgs = vec![
            ServerMsg::Welcome {
                peer: peer(),
                instance: InstanceId(0xdead_beef),
                limits: WelcomeLimits {
                    want: 16,
                    max_message: 16384,
                    rate: 50,
                    burst: 200,
                },
            },
            ServerMsg::Peers {
                swarm: "v".into(),
                peers: vec![peer()],
            },
            ServerMsg::Batch {
                msgs: vec![
                    ServerMsg::Offer(RelayedSignal {
                        swarm: "v".into(),
                        from: peer(),
                        sid: "s".into(),
                        m: "v=0".into(),
                    }),
                    ServerMsg::Cands(RelayedCands {
                        swarm: "v".into(),
                        from: peer(),
                        sid: "s".into(),
                        c: Cow::Borrowed(&cands),
                        end: Some(true),
                    }),
                ],
            },
            ServerMsg::Error {
                code: ErrorCode::UnknownPeer,
                msg: "gone".into(),
                reference: Some("offer".into()),
                sid: Some("s1".into()),
            },
            ServerMsg::Reconnect { after_ms: 1500 },
            ServerMsg::Pong,
        ];
        for msg in &msgs {
            let Ok(Frame::Text(j)) = encode(msg, Format::Json, 0) else {
                panic!("json")
            };
            let back: ServerMsg<'_> = serde_json::from_str(&j).expect("json back");
            assert_eq!(&back, msg);
            let Ok(Frame::Binary(p)) = encode(msg, Format::MsgPack, 0) else {
                panic!("msgpack")
            };
            let back: ServerMsg<'_> = rmp_serde::from_slice(&p).expect("msgpack back");
            assert_eq!(&back, msg);
        }
        assert_eq!(
            encode(&msgs[3], Format::Json, 0).expect("json"),
            Frame::Text(
                r#"{"t":"error","code":"unknown_peer","msg":"gone","ref":"offer","sid":"s1"}"#
                    .into()
            )
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_client(&bytes, Format::Json, &LIMITS);
            let _ = decode_client(&bytes, Format::MsgPack, &LIMITS);
        }

        #[test]
        fn arbitrary_json_messages_never_panic(
            t in prop_oneof![Just("join".to_string()), Just("leave".to_string()),
                             Just("offer".to_string()), Just("answer".to_string()),
                             Just("cands".to_string()), Just("batch".to_string()),
                             Just("ping".to_string()), ".{0,8}"],
            swarm in proptest::option::of(".{0,300}"),
            want in proptest::option::of(any::<i64>()),
            to in proptest::option::of(".{0,30}"),
            sid in proptest::option::of(".{0,40}"),
            c in proptest::option::of(proptest::collection::vec(".{0,20}", 0..4)),
        ) {
            let v = serde_json::json!({"t": t, "swarm": swarm, "want": want, "to": to,
                                       "sid": sid, "m": "x", "c": c,
                                       "msgs": [{"t": t, "swarm": swarm, "want": want}]});
            let bytes = serde_json::to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = decode_client(&bytes, Format::Json, &LIMITS);
            let packed = rmp_serde::to_vec_named(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = decode_client(&packed, Format::MsgPack, &LIMITS);
        }
    }
}
