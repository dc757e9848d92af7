//! The wire format of a batch of signals on the Redis hop: many [`Signal`]s in one publish.
//!
//! Only trackers of the same format version talk this format, so it is compact rather than
//! self-describing. A batch is one flag byte followed by the payload:
//!
//! ```text
//! flag     bits 7..4: format version (FORMAT_VERSION = 1; anything else is refused)
//!          bits 3..0: compression: 0 = none, 1 = raw deflate with the preset SDP dictionary
//! payload  MessagePack: array of signals, each a 6-element array
//!            [kind, swarm, from, to, sid, body]
//!            kind   uint: 0 offer, 1 answer, 2 cands
//!            swarm  str
//!            from   bin, the 16 raw bytes of the peer id
//!            to     bin, 16 bytes
//!            sid    str
//!            body   str (the SDP) | [[str, ...] (candidates), nil | bool (end of candidates)]
//! ```
//!
//! So version 1 batches start with `0x10` (plain) or `0x11` (deflated). `received_at` is not
//! sent: the receiver stamps its own clock, which is all a latency figure on one host can use.
//!
//! Compression is raw deflate (RFC 1951): no zlib header, dictionary id or Adler-32 trailer,
//! which would add 10 bytes to every publish (3 % of a single Chrome offer) for nothing: Redis
//! runs over TCP, and the dictionary is part of the format version. The deflater is primed with
//! [`SDP_DICTIONARY`], the text that recurs in every browser's data-channel SDP and candidates:
//! a batch of 20 mixed signals goes out at 30 % of the JSON its viewers sent, a lone Chrome offer
//! at 38 % (see `fixture_sizes` in the tests).
//!
//! Invariants:
//! - A batch is deflated only if its MessagePack form is at least the caller's threshold AND the
//!   deflated form is strictly smaller; otherwise it goes plain.
//! - Changing the dictionary or the payload layout requires a new [`FORMAT_VERSION`]: an old
//!   tracker then refuses the batch instead of inflating garbage. A test pins the dictionary.
//! - Decoding never panics, whatever the input. It holds at most `max_decompressed` bytes of
//!   payload, inflated or not, and the decoded signals take at most ~24 bytes per payload byte
//!   (the worst case, an empty candidate, is 1 byte of MessagePack and a 24-byte `String`). Every
//!   structural error (flag, deflate stream, MessagePack shape, kind, peer-id length, UTF-8,
//!   trailing bytes) is a [`CodecError`].
//!
//! # The dictionary
//!
//! `sdp.dict` (1977 bytes; deflate's window is 32 KB) was built from the captures
//! in the project's shared `fixtures/sdp` (Chromium 156, Firefox ESR 153):
//! 1. Take `{chrome,firefox}-datachannel-{offer,answer}-complete.sdp` and the `candidate`
//!    strings of `{chrome,firefox}[-turn]-datachannel-candidates.jsonl` (the trickle SDPs and the
//!    `nomdns` captures add nothing once values are removed).
//! 2. Delete every session-unique value, keeping the text around it: the `o=` session id, the
//!    `ice-ufrag`/`ice-pwd` values, the fingerprint hash, Chrome's random candidate foundation
//!    (Firefox's 0..6 recur), mDNS names (keep `.local`), IP addresses other than `0.0.0.0` and
//!    `127.0.0.1`, ports other than the recurring `9`, `rport` values and the `ufrag` value of
//!    trickled candidates.
//! 3. Drop duplicates; an answer that differs from its offer only from `a=setup:` on keeps only
//!    that tail. Lines end in CRLF, as in SDP.
//! 4. Order by how often the text is sent, rarest first, because deflate codes near matches in
//!    fewer bits: srflx/relay candidates, Firefox's trickled host candidates, the Firefox answer
//!    tail, the Firefox offer, Chrome's trickled candidates, the Chrome answer tail, and last the
//!    Chrome offer (the most common browser; its lines are also the ones every SDP shares).
//!
//! Rebuilding it means a new [`FORMAT_VERSION`] and a new pin in the tests.

use std::fmt;
use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserializer, Serialize};
use tokio::time::Instant;

use super::{Body, Signal, SignalKind};
use crate::protocol::{InstanceId, PeerId};

/// The batch format version, in the flag byte's high nibble.
pub const FORMAT_VERSION: u8 = 1;

/// The preset deflate dictionary: recurring SDP and candidate text (see the module doc).
pub static SDP_DICTIONARY: &[u8] = include_bytes!("sdp.dict");

/// Compression nibble: the payload is MessagePack as is.
const PLAIN: u8 = 0;
/// Compression nibble: the payload is raw deflate of the MessagePack, with [`SDP_DICTIONARY`].
const DEFLATE_SDP: u8 = 1;

/// Level 6 rather than 1, measured on the fixtures (`fixture_sizes`, release build): zlib-rs's
/// level 1 is a static-Huffman fast path that makes a lone Chrome offer 18 % larger (397 vs
/// 335 B) and a 20-signal batch 34 % larger (6.3 vs 4.7 KB), to save ~10 us per publish (single
/// signal) to ~60 us (20 signals). Redis, one shared thread per shard, pays for every byte of
/// every publish, while trackers scale out; levels 7-9 gain nothing more here.
const DEFLATE_LEVEL: u32 = 6;

/// Signals preallocated for a decoded batch before the elements prove the header's count.
const PREALLOC_SIGNALS: usize = 64;
/// Candidates preallocated per signal, likewise.
const PREALLOC_CANDS: usize = 16;

/// What [`encode_batch`] produced, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeStats {
    /// Signals in the batch.
    pub signals: usize,
    /// Length of the MessagePack payload before compression, bytes.
    pub raw_bytes: usize,
    /// Length of the whole batch as published (flag byte included), bytes.
    pub wire_bytes: usize,
    /// Whether the payload was deflated.
    pub compressed: bool,
}

/// Why a batch could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// MessagePack serialization failed (a string or list over 4 GiB).
    #[error("could not encode the batch")]
    Encode(#[source] rmp_serde::encode::Error),
    /// The deflater refused its input or dictionary.
    #[error("could not deflate the batch")]
    Deflate(#[source] flate2::CompressError),
    /// Zero bytes: not even a flag byte.
    #[error("empty batch")]
    Empty,
    /// The flag byte names a format version this tracker doesn't speak.
    #[error("batch format version {0} is not supported (this tracker speaks {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// The flag byte names an unknown compression.
    #[error("unknown batch compression {0}")]
    UnknownCompression(u8),
    /// The payload, inflated or not, is longer than the receiver accepts.
    #[error("batch payload is over the limit of {max} bytes")]
    TooLarge {
        /// The limit, bytes.
        max: usize,
    },
    /// The deflate stream is corrupt.
    #[error("corrupt deflate stream")]
    Inflate(#[source] flate2::DecompressError),
    /// The deflate stream ends before its final block.
    #[error("deflate stream is truncated")]
    Truncated,
    /// Bytes follow the end of the deflate stream or of the MessagePack payload.
    #[error("bytes after the end of the batch")]
    TrailingBytes,
    /// The payload is not a batch of signals (bad MessagePack, shape, kind, peer id, UTF-8).
    #[error("malformed batch")]
    Malformed(#[source] rmp_serde::decode::Error),
}

/// Appends one batch holding `signals` to `out`.
///
/// The payload is deflated when its MessagePack form is at least `compress_threshold` bytes
/// (0: always try; `usize::MAX`: never) and deflating makes it smaller.
///
/// # Errors
/// [`CodecError::Encode`] or [`CodecError::Deflate`], neither of which real signals cause;
/// `out` is then left as it was.
pub fn encode_batch<'a>(
    signals: impl IntoIterator<Item = &'a Signal>,
    compress_threshold: usize,
    out: &mut Vec<u8>,
) -> Result<EncodeStats, CodecError> {
    encode_with_level(signals, compress_threshold, DEFLATE_LEVEL, out)
}

fn encode_with_level<'a>(
    signals: impl IntoIterator<Item = &'a Signal>,
    compress_threshold: usize,
    level: u32,
    out: &mut Vec<u8>,
) -> Result<EncodeStats, CodecError> {
    // MessagePack needs the count up front; a batch is at most a few dozen pointers.
    let signals: Vec<&Signal> = signals.into_iter().collect();
    let start = out.len();
    // Framing per signal is under 50 bytes besides swarm, sid and payload.
    let hint: usize = signals
        .iter()
        .map(|s| s.payload_len() + s.swarm.len() + s.sid.len() + 48)
        .sum();
    out.reserve(hint + 6);
    out.push(flag(PLAIN));
    if let Err(e) = rmp_serde::encode::write(out, &WireBatch(&signals)) {
        out.truncate(start);
        return Err(CodecError::Encode(e));
    }
    let raw_bytes = out.len() - start - 1;
    let mut compressed = false;
    if raw_bytes >= compress_threshold {
        // Deflate from a copy so the result can go straight after the flag byte; the copy is
        // cheap next to deflating it.
        let payload = out[start + 1..].to_vec();
        out.truncate(start + 1);
        match deflate_into(&payload, level, out) {
            Ok(true) => compressed = true,
            Ok(false) => out.extend_from_slice(&payload),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    if compressed {
        out[start] = flag(DEFLATE_SDP);
    }
    Ok(EncodeStats {
        signals: signals.len(),
        raw_bytes,
        wire_bytes: out.len() - start,
        compressed,
    })
}

/// Decodes one batch; every signal gets `received_at`.
///
/// `max_decompressed` bounds the MessagePack payload, deflated or not: inflating stops as soon
/// as it is exceeded, so a deflate bomb costs at most that much memory.
///
/// # Errors
/// A [`CodecError`] for anything that is not a well-formed batch of this format version.
pub fn decode_batch(
    bytes: &[u8],
    max_decompressed: usize,
    received_at: Instant,
) -> Result<Vec<Box<Signal>>, CodecError> {
    let (&flag, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    let version = flag >> 4;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let inflated;
    let payload = match flag & 0x0f {
        PLAIN if body.len() > max_decompressed => {
            return Err(CodecError::TooLarge {
                max: max_decompressed,
            });
        }
        PLAIN => body,
        DEFLATE_SDP => {
            inflated = inflate(body, max_decompressed)?;
            &inflated[..]
        }
        other => return Err(CodecError::UnknownCompression(other)),
    };
    // A `&[u8]` reader, not `from_slice`, so that what is left over can be checked.
    let mut rest = payload;
    let signals = {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        // The layout nests 4 deep; nothing legitimate goes further.
        de.set_max_depth(8);
        de.deserialize_seq(BatchVisitor { received_at })
            .map_err(CodecError::Malformed)?
    };
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(signals)
}

fn flag(compression: u8) -> u8 {
    (FORMAT_VERSION << 4) | compression
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Appends the raw deflate of `payload` to `out` if it is strictly smaller; returns whether.
fn deflate_into(payload: &[u8], level: u32, out: &mut Vec<u8>) -> Result<bool, CodecError> {
    let mut deflater = Compress::new(Compression::new(level), false);
    deflater
        .set_dictionary(SDP_DICTIONARY)
        .map_err(CodecError::Deflate)?;
    // The output room is capped below the input size: a stream that doesn't fit isn't worth
    // sending, and deflating stops as soon as the room is full.
    let room = payload.len().saturating_sub(1);
    let pos = out.len();
    out.resize(pos + room, 0);
    loop {
        let (done_in, done_out) = (
            to_usize(deflater.total_in()),
            to_usize(deflater.total_out()),
        );
        let status = deflater
            .compress(
                &payload[done_in..],
                &mut out[pos + done_out..],
                FlushCompress::Finish,
            )
            .map_err(CodecError::Deflate)?;
        let written = to_usize(deflater.total_out());
        if status == Status::StreamEnd {
            out.truncate(pos + written);
            return Ok(true);
        }
        let stalled = written == done_out && to_usize(deflater.total_in()) == done_in;
        if written >= room || stalled {
            out.truncate(pos);
            return Ok(false);
        }
    }
}

/// Inflates a raw deflate stream primed with the dictionary, refusing more than `max` bytes.
fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
    let mut inflater = Decompress::new(false);
    inflater
        .set_dictionary(SDP_DICTIONARY)
        .map_err(CodecError::Inflate)?;
    // One byte of room beyond the limit tells "exactly max" from "more than max".
    let limit = max.saturating_add(1);
    // SDP batches inflate 3-5x; start there and double, never past the limit.
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).max(256).min(limit));
    loop {
        let (done_in, done_out) = (
            to_usize(inflater.total_in()),
            to_usize(inflater.total_out()),
        );
        let input = compressed.get(done_in..).unwrap_or_default();
        let status = inflater
            .decompress_vec(input, &mut out, FlushDecompress::None)
            .map_err(CodecError::Inflate)?;
        if out.len() > max {
            return Err(CodecError::TooLarge { max });
        }
        if status == Status::StreamEnd {
            break;
        }
        if out.len() == out.capacity() {
            // A full buffer at the limit holds more than `max` and was refused above.
            let grow = out
                .capacity()
                .max(256)
                .min(limit.saturating_sub(out.capacity()));
            if grow == 0 {
                return Err(CodecError::TooLarge { max });
            }
            out.reserve_exact(grow);
        } else if to_usize(inflater.total_in()) == done_in && out.len() == done_out {
            // Room to write and nothing happened: the input ran out before the final block.
            return Err(CodecError::Truncated);
        }
    }
    if to_usize(inflater.total_in()) != compressed.len() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(out)
}

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

struct WireBatch<'s, 'a>(&'s [&'a Signal]);

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

struct BatchVisitor {
    received_at: Instant,
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
        // PeerId's layout is instance (4) | slot (4) | nonce (8), big-endian (protocol/peer_id.rs);
        // rebuilding it from its parts reproduces the same 16 bytes.
        let [i0, i1, i2, i3, s0, s1, s2, s3, n @ ..] = b;
        Ok(PeerId::new(
            InstanceId(u32::from_be_bytes([i0, i1, i2, i3])),
            u32::from_be_bytes([s0, s1, s2, s3]),
            u64::from_be_bytes(n),
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{self, ClientMsg, Format};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const CHROME_OFFER: &str =
        include_str!("../../tests/fixtures/chrome-datachannel-offer-complete.sdp");
    const CHROME_OFFER_TRICKLE: &str =
        include_str!("../../tests/fixtures/chrome-datachannel-offer.sdp");
    const CHROME_ANSWER: &str =
        include_str!("../../tests/fixtures/chrome-datachannel-answer-complete.sdp");
    const CHROME_CANDS: &str =
        include_str!("../../tests/fixtures/chrome-datachannel-candidates.jsonl");
    const FIREFOX_OFFER: &str =
        include_str!("../../tests/fixtures/firefox-datachannel-offer-complete.sdp");
    const FIREFOX_ANSWER: &str =
        include_str!("../../tests/fixtures/firefox-datachannel-answer-complete.sdp");
    const FIREFOX_CANDS: &str =
        include_str!("../../tests/fixtures/firefox-datachannel-candidates.jsonl");

    /// A WebTorrent-style info hash and a nanoid-length sid: with them the Chrome offer's client
    /// JSON is the 884 bytes of shared/fixtures/README.md.
    const SWARM: &str = "dd8255ecdc7ca55fb0bbf81323d87062db1f6d1c";
    const SID: &str = "V1StGXR8_Z5jdHi6B-myT";

    /// More than anything the tests encode, except the bombs.
    const MAX: usize = 16 << 20;

    /// Adler-32 of `sdp.dict`. A new dictionary needs a new FORMAT_VERSION, then a new pin.
    const DICTIONARY_ADLER32: u32 = 0xef60_5ae5;

    fn peer(instance: u32, slot: u32, nonce: u64) -> PeerId {
        PeerId::new(InstanceId(instance), slot, nonce)
    }

    fn signal(
        kind: SignalKind,
        swarm: &str,
        from: PeerId,
        to: PeerId,
        sid: &str,
        body: Body,
    ) -> Signal {
        Signal {
            kind,
            swarm: swarm.into(),
            from,
            to,
            sid: sid.into(),
            body,
            received_at: Instant::now(),
        }
    }

    fn sdp(m: &str) -> Body {
        Body::Sdp(m.into())
    }

    type Fields<'a> = (SignalKind, &'a str, PeerId, PeerId, &'a str, &'a Body);

    fn fields(s: &Signal) -> Fields<'_> {
        (s.kind, &s.swarm, s.from, s.to, &s.sid, &s.body)
    }

    fn encode(signals: &[Signal], threshold: usize) -> (EncodeStats, Vec<u8>) {
        let mut out = Vec::new();
        let stats = encode_batch(signals, threshold, &mut out).expect("encodes");
        (stats, out)
    }

    // The API's type: signals travel boxed, from the decoder into the target's outbox.
    #[allow(clippy::vec_box)]
    fn decode(bytes: &[u8]) -> Result<Vec<Box<Signal>>, CodecError> {
        decode_batch(bytes, MAX, Instant::now())
    }

    // ---- Round trips.

    fn arb_peer() -> impl Strategy<Value = PeerId> {
        (any::<u32>(), any::<u32>(), any::<u64>()).prop_map(|(i, s, n)| peer(i, s, n))
    }

    fn arb_text() -> impl Strategy<Value = String> {
        // Any unicode, newlines and NULs included.
        "(?s).{0,48}"
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        let fixture = prop::sample::select(vec![
            CHROME_OFFER,
            CHROME_OFFER_TRICKLE,
            CHROME_ANSWER,
            FIREFOX_OFFER,
            FIREFOX_ANSWER,
        ]);
        prop_oneof![
            "(?s).{0,600}".prop_map(|m| sdp(&m)),
            // Real SDP with something unicode appended, so that batches do get deflated.
            (fixture, arb_text()).prop_map(|(f, tail)| sdp(&format!("{f}{tail}"))),
            (
                prop::collection::vec(arb_text(), 0..6),
                prop::option::of(any::<bool>())
            )
                .prop_map(|(c, end)| Body::Cands { c, end }),
        ]
    }

    fn arb_signal() -> impl Strategy<Value = Signal> {
        (
            prop::sample::select(SignalKind::ALL.to_vec()),
            arb_text(),
            arb_peer(),
            arb_peer(),
            arb_text(),
            arb_body(),
        )
            .prop_map(|(kind, swarm, from, to, sid, body)| {
                signal(kind, &swarm, from, to, &sid, body)
            })
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(
            signals in prop::collection::vec(arb_signal(), 0..10),
            threshold in prop_oneof![Just(0usize), Just(usize::MAX), 0usize..4096],
            prefix in prop::collection::vec(any::<u8>(), 0..3),
        ) {
            // Appends to what `out` already holds.
            let mut out = prefix.clone();
            let stats = encode_batch(&signals, threshold, &mut out)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            let wire = &out[prefix.len()..];
            prop_assert_eq!(stats.signals, signals.len());
            prop_assert_eq!(stats.wire_bytes, wire.len());
            prop_assert_eq!(wire[0], 0x10 | u8::from(stats.compressed));
            if stats.compressed {
                prop_assert!(stats.raw_bytes >= threshold);
                prop_assert!(stats.wire_bytes <= stats.raw_bytes);
            } else {
                prop_assert_eq!(stats.wire_bytes, stats.raw_bytes + 1);
            }

            let at = Instant::now();
            // The limit is inclusive: exactly the payload's size is enough, one byte less isn't.
            let back = decode_batch(wire, stats.raw_bytes, at)
                .map_err(|e| TestCaseError::fail(format!("{e:#?}")))?;
            let over = decode_batch(wire, stats.raw_bytes - 1, at);
            prop_assert!(matches!(over, Err(CodecError::TooLarge { .. })), "{:?}", over);
            prop_assert_eq!(back.len(), signals.len());
            for (b, s) in back.iter().zip(&signals) {
                prop_assert_eq!(fields(b), fields(s));
                prop_assert_eq!(b.received_at, at);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            flag in prop_oneof![Just(0x10u8), Just(0x11u8), any::<u8>()],
            bytes in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut input = vec![flag];
            input.extend_from_slice(&bytes);
            let _ = decode_batch(&input, 4096, Instant::now());
            let _ = decode_batch(&bytes, 4096, Instant::now());
        }
    }

    #[test]
    fn empty_batch_round_trips_at_any_threshold() {
        for threshold in [0, 1, usize::MAX] {
            let (stats, wire) = encode(&[], threshold);
            // One byte of MessagePack (an empty array) never deflates smaller.
            assert_eq!(wire, [0x10, 0x90]);
            assert!(!stats.compressed);
            assert!(decode(&wire).expect("decodes").is_empty());
        }
    }

    #[test]
    fn output_that_would_not_shrink_is_not_kept() {
        let mut rng = StdRng::seed_from_u64(7);
        let noise: Vec<u8> = (0..2000).map(|_| rng.random()).collect();
        let mut out = vec![0xaa];
        assert!(!deflate_into(&noise, DEFLATE_LEVEL, &mut out).expect("deflates"));
        assert_eq!(out, [0xaa]);
        assert!(deflate_into(CHROME_OFFER.as_bytes(), DEFLATE_LEVEL, &mut out).expect("deflates"));
        assert!(out.len() < CHROME_OFFER.len() / 3);
    }

    // ---- Hostile input.

    fn fixture_batch() -> Vec<Signal> {
        let (a, b) = (peer(1, 7, 99), peer(2, 8, 100));
        vec![
            signal(SignalKind::Offer, SWARM, a, b, SID, sdp(CHROME_OFFER)),
            signal(SignalKind::Answer, SWARM, b, a, SID, sdp(FIREFOX_ANSWER)),
            signal(
                SignalKind::Cands,
                SWARM,
                a,
                b,
                SID,
                Body::Cands {
                    c: candidates(CHROME_CANDS, "offerer"),
                    end: Some(true),
                },
            ),
        ]
    }

    #[test]
    fn truncated_extended_and_flipped_batches_are_refused_without_panic() {
        for threshold in [0, usize::MAX] {
            let (stats, wire) = encode(&fixture_batch(), threshold);
            assert_eq!(stats.compressed, threshold == 0);
            assert_eq!(decode(&wire).expect("decodes").len(), 3);
            for len in 0..wire.len() {
                assert!(
                    decode(&wire[..len]).is_err(),
                    "prefix of {len} bytes decoded"
                );
            }
            let mut longer = wire.clone();
            longer.push(0);
            assert!(matches!(decode(&longer), Err(CodecError::TrailingBytes)));
            for i in 0..wire.len() {
                for bit in [0x01, 0x80] {
                    let mut flipped = wire.clone();
                    flipped[i] ^= bit;
                    let _ = decode(&flipped);
                }
            }
        }
    }

    #[test]
    fn unknown_flags_are_refused() {
        let (_, wire) = encode(&fixture_batch(), usize::MAX);
        assert!(matches!(decode(&[]), Err(CodecError::Empty)));
        for (flag, want_version) in [
            (0x00, Some(0)),
            (0x01, Some(0)),
            (0x21, Some(2)),
            (0x12, None),
            (0x1f, None),
        ] {
            let mut bad = wire.clone();
            bad[0] = flag;
            match (decode(&bad), want_version) {
                (Err(CodecError::UnsupportedVersion(v)), Some(want)) => assert_eq!(v, want),
                (Err(CodecError::UnknownCompression(c)), None) => assert_eq!(c, flag & 0x0f),
                (other, _) => panic!("flag {flag:#04x}: {other:?}"),
            }
        }
    }

    /// A plain batch holding `payload`, MessagePack built by hand.
    fn plain(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x10];
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let id = [
            0xc4, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ];
        // [[kind, "s", id, id, "x", body]] with the given kind and body bytes.
        let batch = |kind: &[u8], from: &[u8], body: &[u8]| {
            let mut p = vec![0x91, 0x96];
            p.extend_from_slice(kind);
            p.extend_from_slice(&[0xa1, b's']);
            p.extend_from_slice(from);
            p.extend_from_slice(&id);
            p.extend_from_slice(&[0xa1, b'x']);
            p.extend_from_slice(body);
            plain(&p)
        };
        let good = batch(&[0x02], &id, &[0x92, 0x91, 0xa1, b'c', 0xc3]);
        let decoded = decode(&good).expect("hand-built batch decodes");
        assert_eq!(
            decoded[0].body,
            Body::Cands {
                c: vec!["c".into()],
                end: Some(true)
            }
        );
        assert_eq!(decoded[0].to.as_bytes()[..], id[2..]);

        let short_id = [0xc4, 15, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        let str_id = [0xa1, b'a'];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("kind 3", batch(&[0x03], &id, &[0xa0])),
            ("negative kind", batch(&[0xff], &id, &[0xa0])),
            ("kind as string", batch(&[0xa1, b'0'], &id, &[0xa0])),
            ("15-byte peer id", batch(&[0x00], &short_id, &[0xa0])),
            ("peer id as string", batch(&[0x00], &str_id, &[0xa0])),
            ("body as int", batch(&[0x00], &id, &[0x05])),
            ("body as map", batch(&[0x00], &id, &[0x80])),
            (
                "invalid UTF-8 SDP",
                batch(&[0x00], &id, &[0xa2, 0xc3, 0x28]),
            ),
            ("cands without end", batch(&[0x02], &id, &[0x91, 0x90])),
            (
                "cands with 3 fields",
                batch(&[0x02], &id, &[0x93, 0x90, 0xc0, 0xc0]),
            ),
            ("end as int", batch(&[0x02], &id, &[0x92, 0x90, 0x01])),
            (
                "candidate as bin",
                batch(&[0x02], &id, &[0x92, 0x91, 0xc4, 0x01, b'c', 0xc0]),
            ),
            ("top level map", plain(&[0x80])),
            ("top level string", plain(&[0xa1, b'x'])),
            (
                "5-field signal",
                plain(&[0x91, 0x95, 0x00, 0xa0, 0xa0, 0xa0, 0xa0]),
            ),
            ("signal too long", {
                let mut p = batch(&[0x00], &id, &[0xa0]);
                p[2] = 0x97;
                p.push(0xc0);
                p
            }),
            (
                "array count past the end",
                plain(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            ),
            (
                "string length past the end",
                batch(&[0x00], &id, &[0xdb, 0xff, 0xff, 0xff, 0xff]),
            ),
            ("deep nesting", plain(&[0x91; 64])),
            ("trailing bytes", {
                let mut p = good.clone();
                p.push(0xc0);
                p
            }),
        ];
        for (what, bytes) in cases {
            assert!(decode(&bytes).is_err(), "{what} decoded");
        }
    }

    #[test]
    fn plain_payload_over_the_limit_is_refused() {
        let (stats, wire) = encode(&fixture_batch(), usize::MAX);
        assert!(decode_batch(&wire, stats.raw_bytes, Instant::now()).is_ok());
        assert!(matches!(
            decode_batch(&wire, stats.raw_bytes - 1, Instant::now()),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn deflate_bombs_are_refused() {
        // A well-formed batch whose one SDP inflates to 8 MiB.
        let huge = "a".repeat(8 << 20);
        let s = signal(
            SignalKind::Offer,
            "s",
            peer(1, 2, 3),
            peer(4, 5, 6),
            "x",
            sdp(&huge),
        );
        let (stats, wire) = encode(std::slice::from_ref(&s), 0);
        assert!(stats.compressed && wire.len() < 16 << 10, "{stats:?}");
        assert!(matches!(
            decode_batch(&wire, 64 << 10, Instant::now()),
            Err(CodecError::TooLarge { max }) if max == 64 << 10
        ));
        assert_eq!(
            decode(&wire).expect("decodes under a large limit")[0].body,
            s.body
        );

        // A bare stream of zeros, 32 MiB inflated, behind a deflate flag.
        let mut deflater = Compress::new(Compression::best(), false);
        deflater.set_dictionary(SDP_DICTIONARY).expect("dictionary");
        let zeros = vec![0u8; 32 << 20];
        let mut bomb = vec![0x11];
        bomb.reserve(64 << 10);
        let status = deflater
            .compress_vec(&zeros, &mut bomb, FlushCompress::Finish)
            .expect("deflates");
        assert_eq!(status, Status::StreamEnd);
        assert!(matches!(
            decode_batch(&bomb, 1 << 20, Instant::now()),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn dictionary_is_small_and_pinned() {
        assert!(
            SDP_DICTIONARY.len() <= 4096,
            "{} bytes",
            SDP_DICTIONARY.len()
        );
        assert!(SDP_DICTIONARY.ends_with(b"a=max-message-size:262144\r\n"));
        // The zlib flavour reports the dictionary's Adler-32, the id zlib itself would send.
        let mut zlib = Compress::new(Compression::default(), true);
        let adler = zlib.set_dictionary(SDP_DICTIONARY).expect("dictionary");
        assert_eq!(
            adler, DICTIONARY_ADLER32,
            "sdp.dict changed: bump FORMAT_VERSION, since older trackers would inflate garbage, \
             then pin {adler:#010x}"
        );
    }

    // ---- Sizes on the real captures.

    fn candidates(jsonl: &str, side: &str) -> Vec<String> {
        jsonl
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["side"] == side)
            .filter_map(|v| {
                v["candidate"]
                    .as_str()
                    .filter(|c| !c.is_empty())
                    .map(String::from)
            })
            .collect()
    }

    /// The JSON message the sending viewer sent for this signal.
    fn json_len(s: &Signal) -> usize {
        let msg = match &s.body {
            Body::Sdp(m) => {
                let sig = protocol::Signal {
                    swarm: (&*s.swarm).into(),
                    to: s.to,
                    sid: (&*s.sid).into(),
                    m: (&**m).into(),
                };
                match s.kind {
                    SignalKind::Answer => ClientMsg::Answer(sig),
                    _ => ClientMsg::Offer(sig),
                }
            }
            Body::Cands { c, end } => ClientMsg::Cands(protocol::Cands {
                swarm: (&*s.swarm).into(),
                to: s.to,
                sid: (&*s.sid).into(),
                c: c.iter().map(|c| c.as_str().into()).collect(),
                end: *end,
            }),
        };
        protocol::encode_client(&msg, Format::Json)
            .expect("json")
            .len()
    }

    /// Replaces each character by a random one of its class (digit, a-f, g-z, A-F, G-Z), so a
    /// hex hash stays hex and a session id stays digits.
    fn scramble(s: &str, rng: &mut StdRng) -> String {
        s.chars()
            .map(|c| match c {
                '0'..='9' => rng.random_range('0'..='9'),
                'a'..='f' => rng.random_range('a'..='f'),
                'g'..='z' => rng.random_range('g'..='z'),
                'A'..='F' => rng.random_range('A'..='F'),
                'G'..='Z' => rng.random_range('G'..='Z'),
                other => other,
            })
            .collect()
    }

    /// A candidate line as another session would send it: new foundation (Chrome's random
    /// one), mDNS name, port and ufrag.
    fn fresh_candidate(line: &str, rng: &mut StdRng) -> String {
        let mut f: Vec<String> = line.split(' ').map(String::from).collect();
        if let Some((head, foundation)) = f[0].split_once(':')
            && foundation.len() > 2
        {
            f[0] = format!("{head}:{}", scramble(foundation, rng));
        }
        if f[4].ends_with(".local") {
            f[4] = scramble(&f[4], rng);
        }
        if f[5] != "9" {
            f[5] = rng.random_range(1024..65535u32).to_string();
        }
        if let Some(i) = f.iter().position(|w| w == "ufrag") {
            f[i + 1] = scramble(&f[i + 1], rng);
        }
        f.join(" ")
    }

    /// The same SDP from another session: every session-unique value replaced.
    fn fresh_sdp(sdp: &str, rng: &mut StdRng) -> String {
        let lines: Vec<String> = sdp
            .split("\r\n")
            .map(|line| {
                if let Some(o) = line.strip_prefix("o=") {
                    let mut f: Vec<String> = o.split(' ').map(String::from).collect();
                    f[1] = scramble(&f[1], rng);
                    return format!("o={}", f.join(" "));
                }
                for p in ["a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:sha-256 "] {
                    if let Some(v) = line.strip_prefix(p) {
                        return format!("{p}{}", scramble(v, rng));
                    }
                }
                if line.starts_with("a=candidate:") {
                    return fresh_candidate(line, rng);
                }
                line.to_owned()
            })
            .collect();
        lines.join("\r\n")
    }

    fn random_id(rng: &mut StdRng, len: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-";
        (0..len)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect()
    }

    /// 20 signals from 20 different sessions, as one instance's batch to another: offers
    /// (complete and trickle), answers and trickled candidates from Chrome and Firefox, over
    /// three swarms.
    fn mixed_batch() -> Vec<Signal> {
        let mut rng = StdRng::seed_from_u64(20);
        let swarms: Vec<String> = (0..3).map(|_| scramble(SWARM, &mut rng)).collect();
        let body_of = |i: usize, rng: &mut StdRng| -> (SignalKind, Body) {
            let cands = |jsonl, side, rng: &mut StdRng| Body::Cands {
                c: candidates(jsonl, side)
                    .iter()
                    .map(|c| fresh_candidate(c, rng))
                    .collect(),
                end: Some(true),
            };
            match i {
                0..=3 => (SignalKind::Offer, sdp(&fresh_sdp(CHROME_OFFER, rng))),
                4..=5 => (
                    SignalKind::Offer,
                    sdp(&fresh_sdp(CHROME_OFFER_TRICKLE, rng)),
                ),
                6..=8 => (SignalKind::Offer, sdp(&fresh_sdp(FIREFOX_OFFER, rng))),
                9..=11 => (SignalKind::Answer, sdp(&fresh_sdp(CHROME_ANSWER, rng))),
                12..=13 => (SignalKind::Answer, sdp(&fresh_sdp(FIREFOX_ANSWER, rng))),
                14..=17 => (SignalKind::Cands, cands(CHROME_CANDS, "offerer", rng)),
                _ => (SignalKind::Cands, cands(FIREFOX_CANDS, "answerer", rng)),
            }
        };
        (0..20)
            .map(|i| {
                let (kind, body) = body_of(i, &mut rng);
                let from = peer(0x5eed_0001, rng.random_range(0..100_000), rng.random());
                let to = peer(0x5eed_0002, rng.random_range(0..100_000), rng.random());
                let sid = random_id(&mut rng, 21);
                signal(kind, &swarms[i % 3], from, to, &sid, body)
            })
            .collect()
    }

    struct Measured {
        json: usize,
        stats: EncodeStats,
        encode_us: f64,
        decode_us: f64,
    }

    fn measure(signals: &[Signal], level: u32) -> Measured {
        const RUNS: u32 = 100;
        let json = signals.iter().map(json_len).sum();
        let mut wire = Vec::new();
        // Warm the allocator and caches first; timings are indicative only (a shared machine).
        encode_with_level(signals, 0, level, &mut wire).expect("encodes");
        let started = std::time::Instant::now();
        let mut stats = None;
        for _ in 0..RUNS {
            wire.clear();
            stats = Some(encode_with_level(signals, 0, level, &mut wire).expect("encodes"));
        }
        let encode_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(RUNS);
        let started = std::time::Instant::now();
        for _ in 0..RUNS {
            let back = decode(&wire).expect("decodes");
            assert_eq!(back.len(), signals.len());
        }
        let decode_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(RUNS);
        Measured {
            json,
            stats: stats.expect("ran"),
            encode_us,
            decode_us,
        }
    }

    /// Prints the sizes (run with `--nocapture`) and checks the goal: the Redis hop of a raw
    /// Chrome complete offer is at most 35 % of the JSON the viewer sent, alone in a batch and
    /// on average in a batch of 20 mixed signals.
    #[test]
    fn fixture_sizes() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut one = |kind, body| {
            vec![signal(
                kind,
                SWARM,
                peer(0x5eed_0001, rng.random_range(0..100_000), rng.random()),
                peer(0x5eed_0002, rng.random_range(0..100_000), rng.random()),
                SID,
                body,
            )]
        };
        let cands = |jsonl, side| Body::Cands {
            c: candidates(jsonl, side),
            end: Some(true),
        };
        let chrome_offer = one(SignalKind::Offer, sdp(CHROME_OFFER));
        let cases = [
            ("chrome offer, complete", chrome_offer.clone()),
            (
                "firefox offer, complete",
                one(SignalKind::Offer, sdp(FIREFOX_OFFER)),
            ),
            (
                "chrome cands (2 + end)",
                one(SignalKind::Cands, cands(CHROME_CANDS, "offerer")),
            ),
            (
                "firefox cands (4 + end)",
                one(SignalKind::Cands, cands(FIREFOX_CANDS, "offerer")),
            ),
            ("batch of 20 mixed", mixed_batch()),
        ];
        assert_eq!(json_len(&chrome_offer[0]), 884, "the README's figure");

        println!(
            "{:<24} {:>3} {:>6} {:>8} {:>6} {:>6} {:>7} {:>6} {:>8} {:>8} {:>8}",
            "batch",
            "n",
            "JSON",
            "msgpack",
            "wire1",
            "wire6",
            "wire6/n",
            "ratio6",
            "enc1 us",
            "enc6 us",
            "dec6 us"
        );
        for (name, signals) in &cases {
            let l1 = measure(signals, 1);
            let l6 = measure(signals, 6);
            let n = signals.len();
            let ratio = l6.stats.wire_bytes as f64 / l6.json as f64;
            println!(
                "{name:<24} {n:>3} {:>6} {:>8} {:>6} {:>6} {:>7.1} {:>5.1}% {:>8.1} {:>8.1} {:>8.1}",
                l6.json,
                l6.stats.raw_bytes,
                l1.stats.wire_bytes,
                l6.stats.wire_bytes,
                l6.stats.wire_bytes as f64 / n as f64,
                ratio * 100.0,
                l1.encode_us,
                l6.encode_us,
                l6.decode_us,
            );
            assert!(l6.stats.compressed, "{name}: {:?}", l6.stats);
            if name.starts_with("batch") {
                assert!(
                    ratio <= 0.35,
                    "{name}: wire is {:.1} % of JSON",
                    ratio * 100.0
                );
            }
            if name.starts_with("chrome offer") {
                // The 35 % goal is NOT met for a lone offer (37.9 %): the SDP alone deflates to
                // 25 % of the JSON, but the 32 raw bytes of peer ids (`from` isn't in the JSON),
                // a hex swarm and a random sid are near-incompressible and enlarge the Huffman
                // tables. This bound only guards against regressions.
                assert!(
                    ratio <= 0.385,
                    "{name}: wire is {:.1} % of JSON",
                    ratio * 100.0
                );
            }
        }

        // What one more Chrome offer costs inside a batch: the batch with it minus without it.
        let batch = mixed_batch();
        let with = measure(&batch, 6).stats.wire_bytes;
        let without = measure(&batch[1..], 6).stats.wire_bytes;
        println!(
            "a fresh chrome offer inside the batch of 20 costs {} B ({:.1}% of its {} B of JSON)",
            with - without,
            (with - without) as f64 * 100.0 / json_len(&batch[0]) as f64,
            json_len(&batch[0])
        );
    }
}
