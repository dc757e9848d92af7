//! The wire format of a batch of signals on the Redis hop: many [`Signal`]s in one publish.
//!
//! Only trackers of the same format version talk this format, so it is compact rather than
//! self-describing. A batch is one flag byte, the number of its elements, then the payload:
//!
//! ```text
//! flag     bits 7..4: format version (FORMAT_VERSION = 2; anything else is refused)
//!          bits 3..0: compression: 0 = none, 1 = raw deflate with the preset SDP dictionary
//! count    MessagePack uint, never compressed: the elements of the payload, so a receiver
//!          that must drop a batch unread can count what it drops in signals
//! payload  MessagePack: array of `count` elements, each a 6-element array, a signal
//!            [kind, swarm, from, to, sid, body]
//!            kind   uint: 0 offer, 1 answer, 2 cands
//!            swarm  str
//!            from   bin, the 16 raw bytes of the peer id
//!            to     bin, 16 bytes
//!            sid    str
//!            body   str (the SDP) | [[str, ...] (candidates), nil | bool (end of candidates)]
//!          or the refusal of a signal, on its way back to the signal's sender
//!            [kind, swarm, from, to, sid, reason]
//!            from   the refused signal's target; to: its sender
//!            reason uint: 0 unknown peer, 1 overloaded, 2 unexpected answer
//! ```
//!
//! So version 2 batches start with `0x20` (plain) or `0x21` (deflated). Version 1 had no count
//! and no refusals. `received_at` is not sent: the receiver stamps its own clock, which is all
//! a latency figure on one host can use.
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

mod deflate;
mod wire;

use bytes::Bytes;
use tokio::time::Instant;

use crate::signal::Signal;
use deflate::{deflate_into, inflate};
pub use wire::{WireError, parse_offer_sid};

/// The batch format version, in the flag byte's high nibble.
pub const FORMAT_VERSION: u8 = 2;

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
    Malformed(#[source] WireError),
    /// The element count before the payload is missing or doesn't match the payload's.
    #[error("batch element count missing or wrong")]
    BadCount,
}

/// Appends one batch holding `signals` to `out`.
///
/// The payload is deflated when its MessagePack form is at least `compress_threshold` bytes
/// (0: always try; `usize::MAX`: never) and deflating makes it smaller.
///
/// # Errors
/// [`CodecError::Deflate`], which real signals don't cause; `out` is then left as it was.
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
    let hint: usize = signals.iter().map(|s| s.payload_len() + 96).sum();
    out.reserve(hint + 6);
    out.push(flag(PLAIN));
    let _ = rmp::encode::write_uint(out, signals.len() as u64);
    let body = out.len();
    wire::encode(&signals, out);
    let raw_bytes = out.len() - body;
    let mut compressed = false;
    if raw_bytes >= compress_threshold {
        // Deflate from a copy so the result can go straight after the count; the copy is
        // cheap next to deflating it.
        let payload = out[body..].to_vec();
        out.truncate(body);
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

/// Decodes one batch; every signal gets `received_at`, and its swarm is left for the receiver to
/// find by key ([`Signal::swarm_key`]). The signals share the payload's buffer.
///
/// `max_decompressed` bounds the MessagePack payload, deflated or not: inflating stops as soon
/// as it is exceeded, so a deflate bomb costs at most that much memory.
///
/// # Errors
/// A [`CodecError`] for anything that is not a well-formed batch of this format version.
pub fn decode_batch(
    bytes: Bytes,
    max_decompressed: usize,
    received_at: Instant,
) -> Result<Vec<Signal>, CodecError> {
    let (&flag, _) = bytes.split_first().ok_or(CodecError::Empty)?;
    let version = flag >> 4;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    let mut rest = &bytes[1..];
    let count: u64 = rmp::decode::read_int(&mut rest).map_err(|_| CodecError::BadCount)?;
    let body = bytes.slice(bytes.len() - rest.len()..);
    let payload = match flag & 0x0f {
        PLAIN if body.len() > max_decompressed => {
            return Err(CodecError::TooLarge {
                max: max_decompressed,
            });
        }
        PLAIN => body,
        DEFLATE_SDP => Bytes::from(inflate(&body, max_decompressed)?),
        other => return Err(CodecError::UnknownCompression(other)),
    };
    let signals = wire::decode(&payload, received_at).map_err(|e| match e {
        WireError::Malformed("trailing bytes") => CodecError::TrailingBytes,
        e => CodecError::Malformed(e),
    })?;
    if signals.len() as u64 != count {
        return Err(CodecError::BadCount);
    }
    Ok(signals)
}

/// How many elements (signals and refusals) a batch says it holds, read without decoding it:
/// what a receiver counts when it has to drop the batch unread. `None` for anything that is
/// not a batch of this format version.
pub fn batch_len(bytes: &[u8]) -> Option<u64> {
    let (&flag, mut rest) = bytes.split_first()?;
    if flag >> 4 != FORMAT_VERSION {
        return None;
    }
    rmp::decode::read_int(&mut rest).ok()
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn flag(compression: u8) -> u8 {
    (FORMAT_VERSION << 4) | compression
}

#[cfg(test)]
mod tests;
