//! Decoding and validating client frames into [`Incoming`] messages.
//!
//! Decoding is one pass into a flat [`Fields`] struct that borrows from the frame, then a
//! validation step that builds the typed message. The relayed parts of a signal (`swarm`, `sid`,
//! `m`, `c`) are kept as they were sent ([`RawText`], [`RawList`]): a JSON token with its quotes
//! and escapes, or MessagePack's UTF-8 bytes. A relay that writes the same format forwards them
//! byte for byte, without unescaping an SDP only to escape it again.
//!
//! Hand-written visitors rather than derives, for two reasons: serde's derive accepts a struct
//! as an array too (`["join","v",3]`), which the contract doesn't allow, and it copies every
//! `Option<Cow<str>>` instead of borrowing it from the frame.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::codec::{DecodeLimits, Format, ProtocolError};
use super::control::{json_has_control, plain_has_control, plain_list_has_control};
use super::{Cands, ClientMsg, MAX_SID_BYTES, MAX_SWARM_ID_BYTES, PeerId, Signal};

/// A string as it appears in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawText<'a> {
    /// A JSON string token, quotes and escapes included (`"v=0\r\n"`).
    Json(&'a str),
    /// The string itself (MessagePack strings have no escapes).
    Plain(&'a str),
}

impl<'a> RawText<'a> {
    /// The string's value: borrowed unless JSON escapes had to be undone.
    pub fn value(&self) -> Cow<'a, str> {
        match *self {
            RawText::Plain(s) => Cow::Borrowed(s),
            // The token was validated as a JSON string when the frame was decoded.
            RawText::Json(token) => serde_json::from_str::<Str<'a>>(token)
                .map(|s| s.0)
                .unwrap_or_default(),
        }
    }

    /// The bytes as sent: the JSON token, or the plain string.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            RawText::Json(s) | RawText::Plain(s) => s.as_bytes(),
        }
    }
}

/// A list of strings (ICE candidates) as it appears in the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawList<'a> {
    /// A JSON array token of strings, brackets included.
    Json(&'a str),
    /// The strings (MessagePack).
    Plain(Vec<&'a str>),
}

impl<'a> RawList<'a> {
    /// The strings' values.
    pub fn values(&self) -> Vec<Cow<'a, str>> {
        match self {
            RawList::Plain(v) => v.iter().map(|s| Cow::Borrowed(*s)).collect(),
            RawList::Json(token) => serde_json::from_str::<Vec<Str<'a>>>(token)
                .map(|v| v.into_iter().map(|s| s.0).collect())
                .unwrap_or_default(),
        }
    }
}

/// An offer or answer as received.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalIn<'a> {
    /// The swarm, validated ([`check_swarm_id`]).
    pub swarm: Cow<'a, str>,
    /// The swarm as sent.
    pub swarm_raw: RawText<'a>,
    /// The receiving peer.
    pub to: PeerId,
    /// The negotiation id, at most [`MAX_SID_BYTES`] bytes.
    pub sid: Cow<'a, str>,
    /// The negotiation id as sent.
    pub sid_raw: RawText<'a>,
    /// The SDP as sent.
    pub m: RawText<'a>,
}

/// ICE candidates as received.
#[derive(Debug, Clone, PartialEq)]
pub struct CandsIn<'a> {
    /// The swarm, validated.
    pub swarm: Cow<'a, str>,
    /// The swarm as sent.
    pub swarm_raw: RawText<'a>,
    /// The receiving peer.
    pub to: PeerId,
    /// The negotiation id.
    pub sid: Cow<'a, str>,
    /// The negotiation id as sent.
    pub sid_raw: RawText<'a>,
    /// The candidates as sent.
    pub c: RawList<'a>,
    /// How many candidates `c` holds.
    pub count: usize,
    /// End of candidates, as sent.
    pub end: Option<bool>,
}

/// A validated client message, borrowing from its frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming<'a> {
    /// `join`.
    Join {
        /// The swarm id.
        swarm: Cow<'a, str>,
        /// Peers wanted, 1..=`max_want`.
        want: u32,
    },
    /// `leave`.
    Leave {
        /// The swarm id.
        swarm: Cow<'a, str>,
    },
    /// `offer`.
    Offer(SignalIn<'a>),
    /// `answer`.
    Answer(SignalIn<'a>),
    /// `cands`.
    Cands(CandsIn<'a>),
    /// `ping`.
    Ping,
}

impl Incoming<'_> {
    /// The same message as a [`ClientMsg`] owning its strings (for clients and tests).
    pub fn to_client_msg(&self) -> ClientMsg<'static> {
        fn own(s: &str) -> Cow<'static, str> {
            Cow::Owned(s.to_string())
        }
        match self {
            Incoming::Join { swarm, want } => ClientMsg::Join {
                swarm: own(swarm),
                want: *want,
            },
            Incoming::Leave { swarm } => ClientMsg::Leave { swarm: own(swarm) },
            Incoming::Offer(s) | Incoming::Answer(s) => {
                let signal = Signal {
                    swarm: own(&s.swarm),
                    to: s.to,
                    sid: own(&s.sid),
                    m: Cow::Owned(s.m.value().into_owned()),
                };
                match self {
                    Incoming::Offer(_) => ClientMsg::Offer(signal),
                    _ => ClientMsg::Answer(signal),
                }
            }
            Incoming::Cands(c) => ClientMsg::Cands(Cands {
                swarm: own(&c.swarm),
                to: c.to,
                sid: own(&c.sid),
                c: c.c
                    .values()
                    .into_iter()
                    .map(|s| Cow::Owned(s.into_owned()))
                    .collect(),
                end: c.end,
            }),
            Incoming::Ping => ClientMsg::Ping,
        }
    }
}

/// A decoded frame: one message, or a batch whose messages were validated one by one.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A single message.
    One(Incoming<'a>),
    /// The messages of a `batch`, each valid or with its own error.
    Batch(Vec<Result<Incoming<'a>, ProtocolError>>),
}

/// A string borrowed from the frame when it has no escapes, copied otherwise.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// What the bounds of a list of strings need to know of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListStats {
    /// How many strings.
    pub count: usize,
    /// The longest one, in bytes.
    pub longest: usize,
    /// Whether any holds a control character.
    pub control: bool,
}

/// One string of a list, looked at (its length, unescaped) but not kept. Control characters
/// are looked for once over the whole list token (see [`JsonFlavor`]'s `list`).
struct StrStat(usize);

impl<'de> Deserialize<'de> for StrStat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrStat;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, s: &str) -> Result<StrStat, E> {
                Ok(StrStat(s.len()))
            }
        }
        d.deserialize_str(V)
    }
}

/// The [`ListStats`] of a list of strings, refusing anything else in it.
struct StrList(ListStats);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut stats = ListStats::default();
                while let Some(StrStat(len)) = seq.next_element()? {
                    stats.count += 1;
                    stats.longest = stats.longest.max(len);
                }
                Ok(StrList(stats))
            }
        }
        d.deserialize_seq(V)
    }
}

/// How one frame format captures the relayed fields.
trait Flavor<'de> {
    /// A string field as sent.
    type Text: Deserialize<'de>;
    /// A list of strings as sent.
    type List: Deserialize<'de>;

    /// The text as a [`RawText`], if it is a string.
    fn text(t: Self::Text) -> Option<RawText<'de>>;

    /// The list as a [`RawList`] and what its bounds need, if it is a list of strings.
    fn list(l: Self::List) -> Option<(RawList<'de>, ListStats)>;
}

/// JSON: relayed fields stay tokens.
struct JsonFlavor;

impl<'de> Flavor<'de> for JsonFlavor {
    type Text = &'de RawValue;
    type List = &'de RawValue;

    fn text(t: &'de RawValue) -> Option<RawText<'de>> {
        // RawValue holds valid JSON, so a value starting with a quote is a whole string.
        let s = t.get();
        s.starts_with('"').then_some(RawText::Json(s))
    }

    fn list(l: &'de RawValue) -> Option<(RawList<'de>, ListStats)> {
        let s = l.get();
        let mut stats = serde_json::from_str::<StrList>(s).ok()?.0;
        // The token as sent, escapes and all, in one SIMD pass: no copy of a candidate.
        stats.control = json_has_control(s.as_bytes(), false);
        Some((RawList::Json(s), stats))
    }
}

/// MessagePack: strings are borrowed as they are.
struct MsgPackFlavor;

impl<'de> Flavor<'de> for MsgPackFlavor {
    type Text = &'de str;
    type List = Vec<&'de str>;

    fn text(t: &'de str) -> Option<RawText<'de>> {
        Some(RawText::Plain(t))
    }

    fn list(l: Vec<&'de str>) -> Option<(RawList<'de>, ListStats)> {
        let stats = ListStats {
            count: l.len(),
            longest: l.iter().map(|s| s.len()).max().unwrap_or(0),
            control: plain_list_has_control(l.iter().map(|s| s.as_bytes())),
        };
        Some((RawList::Plain(l), stats))
    }
}

/// Every field any client message may carry, as found in one map; unknown keys are ignored
/// for forward compatibility.
struct Fields<'a, F: Flavor<'a>> {
    t: Option<Cow<'a, str>>,
    swarm: Option<F::Text>,
    want: Option<i64>,
    to: Option<Cow<'a, str>>,
    sid: Option<F::Text>,
    m: Option<F::Text>,
    c: Option<F::List>,
    end: Option<bool>,
    msgs: Option<Vec<Fields<'a, F>>>,
    /// Inside a batch: a `msgs` field was present (and skipped, so batches can't nest).
    nested_msgs: bool,
}

impl<'a, F: Flavor<'a>> Default for Fields<'a, F> {
    fn default() -> Self {
        Self {
            t: None,
            swarm: None,
            want: None,
            to: None,
            sid: None,
            m: None,
            c: None,
            end: None,
            msgs: None,
            nested_msgs: false,
        }
    }
}

/// Deserializes [`Fields`] from a map only; `top` says whether `msgs` may hold a batch.
struct FieldsSeed<F> {
    top: bool,
    flavor: std::marker::PhantomData<F>,
}

impl<F> FieldsSeed<F> {
    fn new(top: bool) -> Self {
        Self {
            top,
            flavor: std::marker::PhantomData,
        }
    }
}

impl<'de, F: Flavor<'de>> DeserializeSeed<'de> for FieldsSeed<F> {
    type Value = Fields<'de, F>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: Flavor<'de>> Visitor<'de> for FieldsSeed<F> {
    type Value = Fields<'de, F>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = Fields::default();
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key.0 {
                "t" => raw.t = Some(map.next_value::<Str<'de>>()?.0),
                "swarm" => raw.swarm = map.next_value()?,
                "want" => raw.want = map.next_value()?,
                "to" => raw.to = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                "sid" => raw.sid = map.next_value()?,
                "m" => raw.m = map.next_value()?,
                "c" => raw.c = map.next_value()?,
                "end" => raw.end = map.next_value()?,
                "msgs" if self.top => raw.msgs = Some(map.next_value_seed(FieldsList::<F>::new())?),
                "msgs" => {
                    map.next_value::<IgnoredAny>()?;
                    raw.nested_msgs = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

/// The `msgs` list of a batch: messages that may not themselves be batches.
struct FieldsList<F>(std::marker::PhantomData<F>);

impl<F> FieldsList<F> {
    fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<'de, F: Flavor<'de>> DeserializeSeed<'de> for FieldsList<F> {
    type Value = Vec<Fields<'de, F>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: Flavor<'de>> Visitor<'de> for FieldsList<F> {
    type Value = Vec<Fields<'de, F>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // Bounded by the frame size; the batch limit is checked after decoding.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(raw) = seq.next_element_seed(FieldsSeed::<F>::new(false))? {
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
    match format {
        Format::Json => {
            let text =
                std::str::from_utf8(frame).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
            decode_json(text, limits)
        }
        Format::MsgPack => decode_msgpack(frame, limits),
    }
}

/// Decodes and validates a JSON frame already known to be UTF-8 (a WebSocket text frame):
/// no string in it is checked again.
///
/// # Errors
/// As [`decode_client`].
pub fn decode_json<'a>(text: &'a str, limits: &DecodeLimits) -> Result<Decoded<'a>, ProtocolError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = FieldsSeed::<JsonFlavor>::new(true)
        .deserialize(&mut de)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    de.end()
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    validate_frame(fields, limits)
}

/// Decodes and validates a MessagePack frame.
///
/// # Errors
/// As [`decode_client`].
pub fn decode_msgpack<'a>(
    frame: &'a [u8],
    limits: &DecodeLimits,
) -> Result<Decoded<'a>, ProtocolError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(frame);
    de.set_max_depth(MAX_MSGPACK_DEPTH);
    let fields = FieldsSeed::<MsgPackFlavor>::new(true)
        .deserialize(&mut de)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    validate_frame(fields, limits)
}

fn validate_frame<'a, F: Flavor<'a>>(
    mut fields: Fields<'a, F>,
    limits: &DecodeLimits,
) -> Result<Decoded<'a>, ProtocolError> {
    if fields.t.as_deref() != Some("batch") {
        return Ok(Decoded::One(validate(fields, limits)?));
    }
    let msgs = fields.msgs.take().ok_or(ProtocolError::Invalid {
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
                return Err(invalid("batch", "batches can't nest"));
            }
            validate(m, limits)
        })
        .collect();
    Ok(Decoded::Batch(out))
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

fn text<'a, F: Flavor<'a>>(
    t: &'static str,
    name: &'static str,
    v: Option<F::Text>,
) -> Result<RawText<'a>, ProtocolError> {
    let v = field(t, name, v)?;
    F::text(v).ok_or_else(|| invalid(t, format!("`{name}` must be a string")))
}

/// Checks a swarm id: 1..=`max_swarm_id_bytes` bytes, no control characters.
///
/// # Errors
/// [`ProtocolError::Invalid`] naming message type `t`.
pub fn check_swarm_id(
    t: &'static str,
    swarm: &str,
    limits: &DecodeLimits,
) -> Result<(), ProtocolError> {
    let max = limits.max_swarm_id_bytes.min(MAX_SWARM_ID_BYTES);
    if swarm.is_empty() || swarm.len() > max {
        return Err(invalid(t, format!("`swarm` must be 1..={max} bytes")));
    }
    // Control characters are reserved: the tracker keys WebTorrent swarms with one, so a
    // native swarm id can never name a WebTorrent swarm.
    if swarm.chars().any(char::is_control) {
        return Err(invalid(t, "`swarm` must not contain control characters"));
    }
    Ok(())
}

fn swarm<'a, F: Flavor<'a>>(
    t: &'static str,
    v: Option<F::Text>,
    limits: &DecodeLimits,
) -> Result<(Cow<'a, str>, RawText<'a>), ProtocolError> {
    let raw = text::<F>(t, "swarm", v)?;
    let swarm = raw.value();
    check_swarm_id(t, &swarm, limits)?;
    Ok((swarm, raw))
}

fn target(t: &'static str, v: Option<Cow<'_, str>>) -> Result<PeerId, ProtocolError> {
    let to = field(t, "to", v)?;
    PeerId::parse(&to).ok_or_else(|| invalid(t, "`to` is not a peer id"))
}

fn sid<'a, F: Flavor<'a>>(
    t: &'static str,
    v: Option<F::Text>,
) -> Result<(Cow<'a, str>, RawText<'a>), ProtocolError> {
    let raw = text::<F>(t, "sid", v)?;
    let sid = raw.value();
    if sid.len() > MAX_SID_BYTES {
        return Err(invalid(
            t,
            format!("`sid` must be at most {MAX_SID_BYTES} bytes"),
        ));
    }
    Ok((sid, raw))
}

/// The SDP of an offer or answer: a string without control characters but its line ends.
fn sdp<'a, F: Flavor<'a>>(
    t: &'static str,
    v: Option<F::Text>,
) -> Result<RawText<'a>, ProtocolError> {
    let m = text::<F>(t, "m", v)?;
    let control = match m {
        RawText::Json(token) => json_has_control(token.as_bytes(), true),
        RawText::Plain(s) => plain_has_control(s.as_bytes(), true),
    };
    if control {
        return Err(invalid(
            t,
            "`m` must not contain control characters (CR and LF excepted)",
        ));
    }
    Ok(m)
}

/// Checks a `cands` list against the limits: how many, how long, no control characters.
fn check_cands(stats: &ListStats, limits: &DecodeLimits) -> Result<(), ProtocolError> {
    if stats.count > limits.max_cands {
        return Err(invalid(
            "cands",
            format!("`c` must hold at most {} candidates", limits.max_cands),
        ));
    }
    if stats.longest > limits.max_cand_bytes {
        return Err(invalid(
            "cands",
            format!(
                "each candidate must be at most {} bytes",
                limits.max_cand_bytes
            ),
        ));
    }
    if stats.control {
        return Err(invalid(
            "cands",
            "candidates must not contain control characters",
        ));
    }
    Ok(())
}

fn validate<'a, F: Flavor<'a>>(
    f: Fields<'a, F>,
    limits: &DecodeLimits,
) -> Result<Incoming<'a>, ProtocolError> {
    let Some(t) = f.t else {
        return Err(ProtocolError::Malformed("missing field `t`".into()));
    };
    match &*t {
        "join" => {
            let (swarm, _) = swarm::<F>("join", f.swarm, limits)?;
            let want = field("join", "want", f.want)?;
            if want < 1 || want > i64::from(limits.max_want) {
                return Err(invalid(
                    "join",
                    format!("`want` must be 1..={}", limits.max_want),
                ));
            }
            Ok(Incoming::Join {
                swarm,
                // In range 1..=max_want (a u32) per the check above.
                want: u32::try_from(want).unwrap_or(limits.max_want),
            })
        }
        "leave" => Ok(Incoming::Leave {
            swarm: swarm::<F>("leave", f.swarm, limits)?.0,
        }),
        kind @ ("offer" | "answer") => {
            let t = if kind == "offer" { "offer" } else { "answer" };
            let (swarm, swarm_raw) = swarm::<F>(t, f.swarm, limits)?;
            let to = target(t, f.to)?;
            let (sid, sid_raw) = sid::<F>(t, f.sid)?;
            let signal = SignalIn {
                swarm,
                swarm_raw,
                to,
                sid,
                sid_raw,
                m: sdp::<F>(t, f.m)?,
            };
            Ok(if t == "offer" {
                Incoming::Offer(signal)
            } else {
                Incoming::Answer(signal)
            })
        }
        "cands" => {
            let (swarm, swarm_raw) = swarm::<F>("cands", f.swarm, limits)?;
            let to = target("cands", f.to)?;
            let (sid, sid_raw) = sid::<F>("cands", f.sid)?;
            let (c, stats) = F::list(field("cands", "c", f.c)?)
                .ok_or_else(|| invalid("cands", "`c` must be a list of strings"))?;
            check_cands(&stats, limits)?;
            let count = stats.count;
            Ok(Incoming::Cands(CandsIn {
                swarm,
                swarm_raw,
                to,
                sid,
                sid_raw,
                c,
                count,
                end: f.end,
            }))
        }
        "ping" => Ok(Incoming::Ping),
        _ => Err(ProtocolError::UnknownType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, InstanceId};
    use proptest::prelude::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_want: 16,
        max_swarm_id_bytes: 256,
        max_batch: 64,
        max_cands: 32,
        max_cand_bytes: 1024,
    };

    fn peer() -> PeerId {
        PeerId::new(InstanceId(7), 3, 99)
    }

    fn json(s: &str) -> Result<Decoded<'_>, ProtocolError> {
        decode_client(s.as_bytes(), Format::Json, &LIMITS)
    }

    fn one(s: &str) -> ClientMsg<'static> {
        match json(s) {
            Ok(Decoded::One(m)) => m.to_client_msg(),
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
    fn relayed_fields_are_kept_as_sent() {
        let to = peer().to_string();
        let text = format!(r#"{{"t":"offer","swarm":"v","to":"{to}","sid":"s","m":"a\r\nb"}}"#);
        let Ok(Decoded::One(Incoming::Offer(s))) = json(&text) else {
            panic!("expected an offer")
        };
        assert!(matches!(s.swarm, Cow::Borrowed(_)));
        assert!(matches!(s.sid, Cow::Borrowed(_)));
        assert_eq!(
            s.m,
            RawText::Json(r#""a\r\nb""#),
            "the JSON token, escapes and all"
        );
        assert_eq!(s.m.value(), "a\r\nb");
        let msg = ClientMsg::Offer(Signal {
            swarm: "v".into(),
            to: peer(),
            sid: "s".into(),
            m: "v=0\r\n".into(),
        });
        let bytes = rmp_serde::to_vec_named(&msg).expect("encode");
        let Ok(Decoded::One(Incoming::Offer(p))) = decode_client(&bytes, Format::MsgPack, &LIMITS)
        else {
            panic!("expected an offer")
        };
        assert_eq!(
            p.m,
            RawText::Plain("v=0\r\n"),
            "MessagePack strings are borrowed"
        );
        let cands =
            format!(r#"{{"t":"cands","swarm":"v","to":"{to}","sid":"s","c":["a\u00e9",  "b"]}}"#);
        let Ok(Decoded::One(Incoming::Cands(c))) = json(&cands) else {
            panic!("expected cands")
        };
        assert_eq!(c.c, RawList::Json(r#"["a\u00e9",  "b"]"#));
        assert_eq!(c.count, 2);
        assert_eq!(c.c.values(), vec!["aé", "b"]);
        for bad in [r#"[1]"#, r#""a""#, r#"["a",{}]"#] {
            let text = format!(r#"{{"t":"cands","swarm":"v","to":"{to}","sid":"s","c":{bad}}}"#);
            assert_eq!(err(&text).code(), ErrorCode::BadMessage, "{bad}");
        }
    }

    /// Every SDP and candidate of the real browser captures (`fixtures/`, from shared/fixtures).
    const SDPS: [&str; 16] = [
        include_str!("../../fixtures/chrome-av-answer-complete.sdp"),
        include_str!("../../fixtures/chrome-av-answer.sdp"),
        include_str!("../../fixtures/chrome-av-offer-complete.sdp"),
        include_str!("../../fixtures/chrome-av-offer.sdp"),
        include_str!("../../fixtures/chrome-datachannel-answer-complete.sdp"),
        include_str!("../../fixtures/chrome-datachannel-answer.sdp"),
        include_str!("../../fixtures/chrome-datachannel-offer-complete.sdp"),
        include_str!("../../fixtures/chrome-datachannel-offer.sdp"),
        include_str!("../../fixtures/chrome-nomdns-datachannel-offer-complete.sdp"),
        include_str!("../../fixtures/firefox-av-answer-complete.sdp"),
        include_str!("../../fixtures/firefox-av-answer.sdp"),
        include_str!("../../fixtures/firefox-av-offer-complete.sdp"),
        include_str!("../../fixtures/firefox-av-offer.sdp"),
        include_str!("../../fixtures/firefox-datachannel-answer-complete.sdp"),
        include_str!("../../fixtures/firefox-datachannel-offer-complete.sdp"),
        include_str!("../../fixtures/firefox-nomdns-datachannel-offer-complete.sdp"),
    ];
    const CANDIDATES: [&str; 8] = [
        include_str!("../../fixtures/chrome-av-candidates.jsonl"),
        include_str!("../../fixtures/chrome-datachannel-candidates.jsonl"),
        include_str!("../../fixtures/chrome-nomdns-datachannel-candidates.jsonl"),
        include_str!("../../fixtures/chrome-turn-datachannel-candidates.jsonl"),
        include_str!("../../fixtures/firefox-av-candidates.jsonl"),
        include_str!("../../fixtures/firefox-datachannel-candidates.jsonl"),
        include_str!("../../fixtures/firefox-nomdns-datachannel-candidates.jsonl"),
        include_str!("../../fixtures/firefox-turn-datachannel-candidates.jsonl"),
    ];

    fn captured_candidates() -> Vec<String> {
        CANDIDATES
            .iter()
            .flat_map(|f| f.lines())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("candidate")?.as_str().map(str::to_string))
            .collect()
    }

    /// A message in both formats.
    fn both(msg: &ClientMsg<'_>) -> [(Vec<u8>, Format); 2] {
        [
            (serde_json::to_vec(msg).expect("json"), Format::Json),
            (
                rmp_serde::to_vec_named(msg).expect("msgpack"),
                Format::MsgPack,
            ),
        ]
    }

    fn decoded(frame: &[u8], format: Format) -> Result<Incoming<'_>, ProtocolError> {
        match decode_client(frame, format, &LIMITS)? {
            Decoded::One(m) => Ok(m),
            Decoded::Batch(_) => panic!("not a batch"),
        }
    }

    fn offer(m: &str) -> ClientMsg<'_> {
        ClientMsg::Offer(Signal {
            swarm: "v".into(),
            to: peer(),
            sid: "s".into(),
            m: m.into(),
        })
    }

    fn cands(c: Vec<String>) -> ClientMsg<'static> {
        ClientMsg::Cands(Cands {
            swarm: "v".into(),
            to: peer(),
            sid: "s".into(),
            c: c.into_iter().map(Cow::Owned).collect(),
            end: None,
        })
    }

    #[test]
    fn real_browser_sdp_and_candidates_pass() {
        for sdp in SDPS {
            assert!(sdp.contains("\r\n"), "the captures have CRLF line ends");
            for (frame, format) in both(&offer(sdp)) {
                assert!(decoded(&frame, format).is_ok(), "{format:?}: {sdp}");
            }
        }
        let all = captured_candidates();
        assert!(all.len() > 50, "{} candidates", all.len());
        for chunk in all.chunks(LIMITS.max_cands) {
            for (frame, format) in both(&cands(chunk.to_vec())) {
                let Ok(Incoming::Cands(c)) = decoded(&frame, format) else {
                    panic!("{format:?}: {chunk:?}")
                };
                assert_eq!(c.count, chunk.len());
            }
        }
    }

    #[test]
    fn control_characters_are_refused_in_sdp_and_candidates() {
        let sdp = SDPS[0];
        for c in ['\0', '\t', '\u{1}', '\u{1b}', '\u{7f}', '\u{85}'] {
            let bad = sdp.replacen("a=", &format!("a={c}"), 1);
            for (frame, format) in both(&offer(&bad)) {
                let e = decoded(&frame, format).expect_err("refused");
                assert_eq!(e.code(), ErrorCode::BadMessage, "{format:?} {c:?}");
            }
            // A line end is a control character too, in a candidate.
            for cand in [
                format!("candidate:1 1 udp 1 1.2.3.4 5 typ host{c}"),
                "candidate:1\r\n".into(),
            ] {
                for (frame, format) in both(&cands(vec![cand.clone()])) {
                    let e = decoded(&frame, format).expect_err("refused");
                    assert_eq!(e.code(), ErrorCode::BadMessage, "{format:?} {cand:?}");
                }
            }
        }
        // Escaped by hand rather than by serde_json: \u escapes of a control character.
        let to = peer().to_string();
        for esc in [
            r"\u0001", r"\u001F", r"\u007f", r"\u0085", r"\t", r"\b", r"\f",
        ] {
            let text = format!(
                r#"{{"t":"answer","swarm":"v","to":"{to}","sid":"s","m":"v=0\r\na={esc}"}}"#
            );
            assert_eq!(err(&text).code(), ErrorCode::BadMessage, "{esc}");
        }
        let crlf =
            format!(r#"{{"t":"answer","swarm":"v","to":"{to}","sid":"s","m":"v=0\u000d\u000A"}}"#);
        assert!(json(&crlf).is_ok());
    }

    #[test]
    fn cands_are_bounded_in_entries_and_bytes_per_entry() {
        let at_most = vec![String::new(); LIMITS.max_cands];
        let longest = vec!["c".repeat(LIMITS.max_cand_bytes)];
        for ok in [at_most.clone(), longest.clone()] {
            for (frame, format) in both(&cands(ok)) {
                assert!(decoded(&frame, format).is_ok(), "{format:?}");
            }
        }
        // The issue's 8,000 empty strings, and one over each bound.
        let too_many = [
            vec![String::new(); 8000],
            vec![String::new(); LIMITS.max_cands + 1],
        ];
        let too_long = vec!["c".repeat(LIMITS.max_cand_bytes + 1)];
        for bad in too_many.into_iter().chain([too_long]) {
            for (frame, format) in both(&cands(bad.clone())) {
                let e = decoded(&frame, format).expect_err("refused");
                assert_eq!(e.code(), ErrorCode::BadMessage, "{format:?} {}", bad.len());
            }
        }
        // The length is the value's, not the escaped token's: 512 escaped `é`s are 1,024 bytes.
        let to = peer().to_string();
        let escaped = r"\u00e9".repeat(LIMITS.max_cand_bytes / 2);
        let text =
            format!(r#"{{"t":"cands","swarm":"v","to":"{to}","sid":"s","c":["{escaped}"]}}"#);
        assert!(json(&text).is_ok());
    }

    #[test]
    fn batches_are_validated_per_message_and_bounded() {
        let Ok(Decoded::Batch(msgs)) =
            json(r#"{"t":"batch","msgs":[{"t":"ping"},{"t":"bogus"},{"t":"batch","msgs":[]}]}"#)
        else {
            panic!("expected a batch");
        };
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0], Ok(Incoming::Ping));
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
        let got: Vec<ClientMsg<'static>> = msgs
            .into_iter()
            .map(|m| m.expect("valid").to_client_msg())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn deep_msgpack_nesting_is_refused_not_overflowed() {
        // 5,000 nested one-element arrays inside `c`.
        let mut bytes = vec![0x82, 0xa1, b't', 0xa4, b'p', b'i', b'n', b'g', 0xa1, b'c'];
        bytes.extend(std::iter::repeat_n(0x91, 5_000));
        bytes.push(0xc0);
        assert!(decode_client(&bytes, Format::MsgPack, &LIMITS).is_err());
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
