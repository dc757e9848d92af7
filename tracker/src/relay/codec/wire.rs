//! The MessagePack shape of a batch payload: this module owns the layout documented in the
//! [parent module](super) (`[kind, swarm, from, to, sid, body]` per signal, `[kind, swarm,
//! from, to, sid, reason]` per refusal). Encoding writes
//! each signal's fields as plain strings (unescaping JSON tokens where the sender wrote JSON);
//! decoding checks exactly that layout and builds signals whose spans point into the payload,
//! so nothing is copied. Changing it needs a new [`FORMAT_VERSION`](super::FORMAT_VERSION).

use bytes::Bytes;
use rmp::Marker;
use tokio::time::Instant;

use super::PREALLOC_SIGNALS;
use crate::signal::{
    CandList, NativeBody, NativePayload, Payload, Refusal, SendError, Signal, SignalKind, Span,
    Text, WtPayload,
};
use crate::swarm_key::{SwarmId, WEBTORRENT_KEY_PREFIX};
use swarmtrack_protocol::{PeerId, RawList};

/// Why a payload is not a batch of signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end inside a value.
    #[error("truncated")]
    Truncated,
    /// A value of the wrong type or shape.
    #[error("malformed {0}")]
    Malformed(&'static str),
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

// The wire code of a refusal's reason, spelled out for the same reason.
fn reason_code(error: SendError) -> u8 {
    match error {
        SendError::UnknownPeer => 0,
        SendError::Overloaded => 1,
        SendError::UnexpectedAnswer => 2,
    }
}

fn reason_from_code(code: u64) -> Option<SendError> {
    match code {
        0 => Some(SendError::UnknownPeer),
        1 => Some(SendError::Overloaded),
        2 => Some(SendError::UnexpectedAnswer),
        _ => None,
    }
}

/// Appends the payload (an array of signals) to `out`.
pub(super) fn encode(signals: &[&Signal], out: &mut Vec<u8>) {
    // Writing to a Vec can't fail: the results below are all Ok.
    let _ = rmp::encode::write_array_len(out, u32::try_from(signals.len()).unwrap_or(u32::MAX));
    for s in signals {
        let _ = rmp::encode::write_array_len(out, 6);
        let _ = rmp::encode::write_uint(out, u64::from(kind_code(s.kind)));
        let _ = rmp::encode::write_str(out, &s.swarm_key());
        let _ = rmp::encode::write_bin(out, s.from.as_bytes());
        let _ = rmp::encode::write_bin(out, s.to.as_bytes());
        match &s.payload {
            Payload::Native(n) => encode_native(n, out),
            Payload::WebTorrent(w) => {
                // The offer id and the sender's peer id, 40 characters of at most U+00FF.
                let _ = rmp::encode::write_str(out, &s.sid());
                encode_webtorrent(w, out);
            }
            Payload::Refused(r) => {
                let _ = rmp::encode::write_str(out, &r.sid);
                let _ = rmp::encode::write_uint(out, u64::from(reason_code(r.error)));
            }
        }
    }
}

fn encode_native(n: &NativePayload, out: &mut Vec<u8>) {
    let _ = rmp::encode::write_str(out, &n.text(n.sid));
    match &n.body {
        NativeBody::Sdp(m) => {
            let _ = rmp::encode::write_str(out, &n.text(*m));
        }
        NativeBody::Cands { list, count, end } => {
            let _ = rmp::encode::write_array_len(out, 2);
            let _ = rmp::encode::write_array_len(out, *count);
            match list {
                CandList::Json(span) => {
                    let token = std::str::from_utf8(span.get(&n.frame)).unwrap_or_default();
                    for c in RawList::Json(token).values() {
                        let _ = rmp::encode::write_str(out, &c);
                    }
                }
                CandList::Plain(spans) => {
                    for &span in spans {
                        let _ = rmp::encode::write_str(out, n.plain(span));
                    }
                }
            }
            match end {
                Some(b) => {
                    let _ = rmp::encode::write_bool(out, *b);
                }
                None => {
                    let _ = rmp::encode::write_nil(out);
                }
            }
        }
    }
}

fn encode_webtorrent(w: &WtPayload, out: &mut Vec<u8>) {
    let mut frame = Vec::new();
    w.write_frame(&mut frame);
    let _ = rmp::encode::write_str_len(out, u32::try_from(frame.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(&frame);
}

/// A reader over the payload that knows where it is, so strings become spans.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn advance(&mut self, rest: &[u8]) {
        self.pos = self.buf.len() - rest.len();
    }

    fn array_len(&mut self, what: &'static str) -> Result<usize, WireError> {
        let mut rest = self.rest();
        let n = rmp::decode::read_array_len(&mut rest).map_err(|_| WireError::Malformed(what))?;
        self.advance(rest);
        Ok(n as usize)
    }

    fn uint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut rest = self.rest();
        let n: u64 = rmp::decode::read_int(&mut rest).map_err(|_| WireError::Malformed(what))?;
        self.advance(rest);
        Ok(n)
    }

    fn take(&mut self, len: usize) -> Result<Span, WireError> {
        let rest = self.rest();
        let part = rest.get(..len).ok_or(WireError::Truncated)?;
        let span = Span::of(self.buf, part);
        self.pos += len;
        Ok(span)
    }

    /// A string, checked to be UTF-8.
    fn str(&mut self, what: &'static str) -> Result<Span, WireError> {
        let mut rest = self.rest();
        let len = rmp::decode::read_str_len(&mut rest).map_err(|_| WireError::Malformed(what))?;
        self.advance(rest);
        let span = self.take(len as usize)?;
        std::str::from_utf8(span.get(self.buf)).map_err(|_| WireError::Malformed(what))?;
        Ok(span)
    }

    fn peer_id(&mut self, what: &'static str) -> Result<PeerId, WireError> {
        let mut rest = self.rest();
        let len = rmp::decode::read_bin_len(&mut rest).map_err(|_| WireError::Malformed(what))?;
        self.advance(rest);
        let span = self.take(len as usize)?;
        let bytes: [u8; 16] = span
            .get(self.buf)
            .try_into()
            .map_err(|_| WireError::Malformed(what))?;
        Ok(PeerId::from_bytes(bytes))
    }

    fn peek(&self) -> Result<Marker, WireError> {
        self.rest()
            .first()
            .map(|&b| Marker::from_u8(b))
            .ok_or(WireError::Truncated)
    }

    fn end(&mut self) -> Result<Option<bool>, WireError> {
        let v = match self.peek()? {
            Marker::Null => None,
            Marker::True => Some(true),
            Marker::False => Some(false),
            _ => return Err(WireError::Malformed("end of candidates")),
        };
        self.pos += 1;
        Ok(v)
    }
}

/// Decodes a payload; signals get `received_at` and a swarm id to be resolved by the receiver
/// ([`SwarmId`] 0 names no swarm).
///
/// # Errors
/// [`WireError`] for anything but exactly the layout, including bytes after the last signal.
pub(super) fn decode(payload: &Bytes, received_at: Instant) -> Result<Vec<Signal>, WireError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let n = r.array_len("batch")?;
    // Preallocate only what the bytes can hold: a signal takes at least 40 of them.
    let mut out = Vec::with_capacity(n.min(PREALLOC_SIGNALS).min(payload.len() / 40));
    for _ in 0..n {
        out.push(decode_signal(&mut r, payload, received_at)?);
    }
    if r.pos != payload.len() {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(out)
}

fn decode_signal(
    r: &mut Reader<'_>,
    payload: &Bytes,
    received_at: Instant,
) -> Result<Signal, WireError> {
    if r.array_len("signal")? != 6 {
        return Err(WireError::Malformed("signal"));
    }
    let kind = kind_from_code(r.uint("kind")?).ok_or(WireError::Malformed("kind"))?;
    let swarm = r.str("swarm")?;
    let from = r.peer_id("from")?;
    let to = r.peer_id("to")?;
    let sid = r.str("sid")?;
    let key = swarm.get(payload);
    let refused = matches!(
        r.peek()?,
        Marker::FixPos(_) | Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64
    );
    let body = if refused {
        let error = reason_from_code(r.uint("reason")?).ok_or(WireError::Malformed("reason"))?;
        let text = |span: Span| {
            std::str::from_utf8(span.get(payload))
                .unwrap_or_default()
                .into()
        };
        Payload::Refused(Refusal {
            error,
            swarm_key: text(swarm),
            sid: text(sid),
        })
    } else if key.starts_with(WEBTORRENT_KEY_PREFIX.as_bytes()) {
        let text = r.str("webtorrent frame")?;
        let (offer_id, peer_id) =
            parse_offer_sid(sid.get(payload)).ok_or(WireError::Malformed("webtorrent sid"))?;
        Payload::WebTorrent(WtPayload::Frame {
            text: payload.slice_ref(text.get(payload)),
            offer_id,
            peer_id,
            key: payload.slice_ref(key),
        })
    } else {
        let body = match r.peek()? {
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => decode_cands(r)?,
            _ => NativeBody::Sdp(plain(r.str("sdp")?)),
        };
        Payload::Native(NativePayload {
            frame: payload.clone(),
            swarm: plain(swarm),
            sid: plain(sid),
            body,
        })
    };
    Ok(Signal {
        kind,
        swarm: SwarmId(0),
        from,
        to,
        received_at,
        payload: body,
    })
}

fn decode_cands(r: &mut Reader<'_>) -> Result<NativeBody, WireError> {
    if r.array_len("candidates")? != 2 {
        return Err(WireError::Malformed("candidates"));
    }
    let n = r.array_len("candidate list")?;
    // Each candidate takes at least one byte: the count can't outgrow the payload.
    let mut list = Vec::with_capacity(n.min(r.rest().len()));
    for _ in 0..n {
        list.push(r.str("candidate")?);
    }
    let end = r.end()?;
    Ok(NativeBody::Cands {
        count: u32::try_from(list.len()).unwrap_or(u32::MAX),
        list: CandList::Plain(list),
        end,
    })
}

fn plain(span: Span) -> Text {
    Text { span, json: false }
}

/// Unpacks a WebTorrent `sid`: 40 characters of at most U+00FF.
pub fn parse_offer_sid(sid: &[u8]) -> Option<([u8; 20], [u8; 20])> {
    let text = std::str::from_utf8(sid).ok()?;
    let mut bytes = [0u8; 40];
    let mut n = 0;
    for c in text.chars() {
        *bytes.get_mut(n)? = u8::try_from(u32::from(c)).ok()?;
        n += 1;
    }
    if n != 40 {
        return None;
    }
    let mut a = [0; 20];
    let mut b = [0; 20];
    a.copy_from_slice(&bytes[..20]);
    b.copy_from_slice(&bytes[20..]);
    Some((a, b))
}
