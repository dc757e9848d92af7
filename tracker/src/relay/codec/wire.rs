//! The MessagePack shape of a batch payload: this module owns the layout documented in the
//! [parent module](super) (`[kind, swarm, from, to, sid, body]` per signal). The `Wire*` views
//! serialize borrowed signals as those arrays; the visitors accept exactly that layout and build
//! the signals directly. Changing it needs a new [`FORMAT_VERSION`](super::FORMAT_VERSION).

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserializer, Serialize};
use tokio::time::Instant;

use super::{PREALLOC_CANDS, PREALLOC_SIGNALS};
use crate::protocol::PeerId;
use crate::relay::{Body, Signal, SignalKind};

// The wire code of each kind, spelled out so that reordering the enum can't change the format.
fn kind_code(kind: SignalKind) -> u8 {
    match kind {
        SignalKind::Offer => 0,
        SignalKind::Answer => 1,
        SignalKind::Cands => 2,
    }
}

fn kind_from_code(code: u64) -> Option<SignalKind> {
    match code {
        0 => Some(SignalKind::Offer),
        1 => Some(SignalKind::Answer),
        2 => Some(SignalKind::Cands),
        _ => None,
    }
}

// ---- Encoding: borrowing views that serialize as the arrays described in the module doc.

pub(super) struct WireBatch<'s, 'a>(pub(super) &'s [&'a Signal]);

impl Serialize for WireBatch<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|signal| WireSignal(signal)))
    }
}

struct WireSignal<'a>(&'a Signal);

impl Serialize for WireSignal<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let signal = self.0;
        let mut t = s.serialize_tuple(6)?;
        t.serialize_element(&kind_code(signal.kind))?;
        t.serialize_element(&*signal.swarm)?;
        t.serialize_element(&RawBytes(signal.from.as_bytes()))?;
        t.serialize_element(&RawBytes(signal.to.as_bytes()))?;
        t.serialize_element(&*signal.sid)?;
        t.serialize_element(&WireBody(&signal.body))?;
        t.end()
    }
}

struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct WireBody<'a>(&'a Body);

impl Serialize for WireBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Body::Sdp(m) => s.serialize_str(m),
            Body::Cands { c, end } => {
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(c)?;
                t.serialize_element(end)?;
                t.end()
            }
        }
    }
}

// ---- Decoding: visitors that accept exactly that layout and build the signals directly.
// Array lengths come from the input, so preallocation is capped and the elements themselves
// prove the count; rmp-serde refuses arrays with more elements than a visitor reads.

pub(super) struct BatchVisitor {
    pub(super) received_at: Instant,
}

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Vec<Box<Signal>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of signals")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut signals = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOC_SIGNALS));
        // Signals of a batch mostly share a swarm: one allocation for a run of them.
        let mut last_swarm = None;
        while let Some(signal) = seq.next_element_seed(SignalSeed {
            received_at: self.received_at,
            last_swarm: &mut last_swarm,
        })? {
            signals.push(Box::new(signal));
        }
        Ok(signals)
    }
}

struct SignalSeed<'a> {
    received_at: Instant,
    last_swarm: &'a mut Option<Arc<str>>,
}

impl<'de> DeserializeSeed<'de> for SignalSeed<'_> {
    type Value = Signal;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Signal, D::Error> {
        d.deserialize_tuple(6, self)
    }
}

impl<'de> Visitor<'de> for SignalSeed<'_> {
    type Value = Signal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a signal [kind, swarm, from, to, sid, body]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signal, A::Error> {
        let kind = element(&mut seq, 0, KindVisitor)?;
        let swarm = element(&mut seq, 1, SwarmVisitor(self.last_swarm))?;
        let from = element(&mut seq, 2, PeerIdVisitor)?;
        let to = element(&mut seq, 3, PeerIdVisitor)?;
        let sid = element(&mut seq, 4, TextVisitor)?;
        let body = element(&mut seq, 5, BodyVisitor)?;
        Ok(Signal {
            kind,
            swarm,
            from,
            to,
            sid,
            body,
            received_at: self.received_at,
        })
    }
}

/// The next element of a fixed-size array, or an error naming the missing index.
fn element<'de, A: SeqAccess<'de>, T: DeserializeSeed<'de>>(
    seq: &mut A,
    index: usize,
    seed: T,
) -> Result<T::Value, A::Error> {
    seq.next_element_seed(seed)?
        .ok_or_else(|| de::Error::invalid_length(index, &"a complete signal"))
}

/// Lets a visitor serve as its own seed through `deserialize_any` (the format is
/// self-describing; each visitor accepts only its own types).
macro_rules! seed_via_any {
    ($($t:ty),*) => {$(
        impl<'de> DeserializeSeed<'de> for $t {
            type Value = <Self as Visitor<'de>>::Value;

            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }
    )*};
}

seed_via_any!(
    KindVisitor,
    SwarmVisitor<'_>,
    PeerIdVisitor,
    TextVisitor,
    BodyVisitor,
    CandsVisitor,
    EndVisitor
);

struct KindVisitor;

impl Visitor<'_> for KindVisitor {
    type Value = SignalKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a signal kind 0..=2")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SignalKind, E> {
        kind_from_code(v).ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
}

struct SwarmVisitor<'a>(&'a mut Option<Arc<str>>);

impl Visitor<'_> for SwarmVisitor<'_> {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a swarm id string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Arc<str>, E> {
        match self.0 {
            Some(last) if **last == *v => Ok(Arc::clone(last)),
            _ => Ok(Arc::clone(self.0.insert(Arc::from(v)))),
        }
    }
}

struct PeerIdVisitor;

impl Visitor<'_> for PeerIdVisitor {
    type Value = PeerId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a 16-byte peer id")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<PeerId, E> {
        let b: [u8; 16] = v
            .try_into()
            .map_err(|_| E::invalid_length(v.len(), &self))?;
        Ok(PeerId::from_bytes(b))
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Box<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Box<str>, E> {
        Ok(v.into())
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an SDP string or [candidates, end]")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Body, E> {
        Ok(Body::Sdp(v.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        let c = element(&mut seq, 0, CandsVisitor)?;
        let end = element(&mut seq, 1, EndVisitor)?;
        Ok(Body::Cands { c, end })
    }
}

struct CandsVisitor;

impl<'de> Visitor<'de> for CandsVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of candidate strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut c = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOC_CANDS));
        while let Some(s) = seq.next_element_seed(TextVisitor)? {
            c.push(s.into_string());
        }
        Ok(c)
    }
}

struct EndVisitor;

impl Visitor<'_> for EndVisitor {
    type Value = Option<bool>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nil or a bool")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<bool>, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<bool>, E> {
        Ok(Some(v))
    }
}
