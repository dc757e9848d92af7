//! A signal on its way from one viewer to another: what the relay moves.
//!
//! A signal doesn't copy what it relays. It holds the frame its sender sent (a [`Bytes`], shared
//! by every signal of that frame) and where the relayed fields are in it ([`Span`]s), in the
//! frame's own encoding: JSON tokens, quotes and escapes included, or plain UTF-8 strings (a
//! MessagePack frame, or a signal that came from another instance). The target's session writes
//! them into its viewer's format, copying tokens as they are when the formats match.

use std::borrow::Cow;

use bytes::Bytes;
use tokio::time::Instant;

use crate::json;
pub use crate::metrics::SignalKind;
use crate::swarm_key::{SwarmId, WEBTORRENT_KEY_LEN, webtorrent_key};
use swarmtrack_protocol::{PeerId, RawText};

/// A range of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// The span of `part`, which must lie inside `frame` (else an empty span).
    pub fn of(frame: &[u8], part: &[u8]) -> Self {
        let base = frame.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        let inside = at >= base && at + part.len() <= base + frame.len();
        match (
            inside,
            u32::try_from(at.wrapping_sub(base)),
            u32::try_from(part.len()),
        ) {
            (true, Ok(start), Ok(len)) => Self { start, len },
            _ => Self::default(),
        }
    }

    /// The bytes of this span in `frame` (empty if out of range).
    pub fn get<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let start = self.start as usize;
        frame
            .get(start..start + self.len as usize)
            .unwrap_or_default()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }
}

/// A string field of a native signal: where it is in the frame, and whether it is a JSON
/// token (quotes and escapes included) or the plain UTF-8 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Text {
    /// Where.
    pub span: Span,
    /// A JSON token rather than plain text.
    pub json: bool,
}

impl Text {
    /// The field `raw`, which lies inside `frame`.
    pub fn of(frame: &[u8], raw: RawText<'_>) -> Self {
        Self {
            span: Span::of(frame, raw.as_bytes()),
            json: matches!(raw, RawText::Json(_)),
        }
    }

    /// Its length in bytes, as sent.
    pub fn len(&self) -> usize {
        self.span.len()
    }
}

/// ICE candidates as relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CandList {
    /// A JSON array token of strings.
    Json(Span),
    /// Plain strings.
    Plain(Vec<Span>),
}

/// What a native signal carries besides its routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeBody {
    /// An offer's or answer's SDP.
    Sdp(Text),
    /// Candidates: the list, how many, and end of candidates as sent.
    Cands {
        /// The candidates.
        list: CandList,
        /// How many there are.
        count: u32,
        /// End of candidates, as sent.
        end: Option<bool>,
    },
}

/// A native signal's relayed fields, in the frame they came in.
#[derive(Debug, Clone)]
pub struct NativePayload {
    /// The frame (or, from another instance, a buffer holding the fields).
    pub frame: Bytes,
    /// The swarm id.
    pub swarm: Text,
    /// The negotiation id.
    pub sid: Text,
    /// SDP or candidates.
    pub body: NativeBody,
}

impl NativePayload {
    /// The value of a string field: unescaped if it is a JSON token.
    pub fn text(&self, text: Text) -> Cow<'_, str> {
        // Validated when the signal was made: a JSON string token, or UTF-8.
        let raw = std::str::from_utf8(text.span.get(&self.frame)).unwrap_or_default();
        if text.json {
            RawText::Json(raw).value()
        } else {
            Cow::Borrowed(raw)
        }
    }

    /// The value of a plain string in the frame.
    pub fn plain(&self, span: Span) -> &str {
        std::str::from_utf8(span.get(&self.frame)).unwrap_or_default()
    }
}

/// The fields of a native signal as plain strings, to build a payload from (tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
pub enum PlainBody<'a> {
    /// An SDP.
    Sdp(&'a str),
    /// Candidates and end of candidates.
    Cands(&'a [&'a str], Option<bool>),
}

#[cfg(test)]
impl NativePayload {
    /// A payload holding copies of plain strings, in a buffer of its own.
    pub fn from_plain(swarm: &str, sid: &str, body: PlainBody<'_>) -> Self {
        let mut buf = Vec::new();
        let mut put = |s: &str| {
            let start = buf.len();
            buf.extend_from_slice(s.as_bytes());
            (start, s.len())
        };
        let swarm = put(swarm);
        let sid = put(sid);
        let body = match body {
            PlainBody::Sdp(m) => Ok(put(m)),
            PlainBody::Cands(c, end) => Err((c.iter().map(|c| put(c)).collect::<Vec<_>>(), end)),
        };
        let frame = Bytes::from(buf);
        let span = |(start, len): (usize, usize)| Span::of(&frame, &frame[start..start + len]);
        let text = |at| Text {
            span: span(at),
            json: false,
        };
        let body = match body {
            Ok(m) => NativeBody::Sdp(text(m)),
            Err((list, end)) => NativeBody::Cands {
                count: u32::try_from(list.len()).unwrap_or(u32::MAX),
                list: CandList::Plain(list.into_iter().map(span).collect()),
                end,
            },
        };
        Self {
            swarm: text(swarm),
            sid: text(sid),
            body,
            frame,
        }
    }
}

/// A WebTorrent offer or answer. Its target receives
/// `{"action":"announce","info_hash":..,"peer_id":..,"offer"|"answer":<sdp>,"offer_id":..}`.
#[derive(Debug, Clone)]
pub enum WtPayload {
    /// From a viewer of this instance.
    Parts {
        /// The frame text up to the SDP: shared by every offer of one announce.
        head: Bytes,
        /// The announce frame.
        frame: Bytes,
        /// The `{type, sdp}` object in `frame`, forwarded byte for byte.
        sdp: Span,
        /// The offer's id.
        offer_id: [u8; 20],
        /// The sender's WebTorrent `peer_id`.
        peer_id: [u8; 20],
        /// The swarm's info hash.
        info_hash: [u8; 20],
    },
    /// A complete frame, as another instance sent it.
    Frame {
        /// The frame text.
        text: Bytes,
        /// The offer's id.
        offer_id: [u8; 20],
        /// The sender's WebTorrent `peer_id`.
        peer_id: [u8; 20],
        /// The swarm's key (`wt` U+001F and the info hash in hex).
        key: Bytes,
    },
}

impl WtPayload {
    /// Appends the frame its target receives.
    pub fn write_frame(&self, out: &mut Vec<u8>) {
        match self {
            WtPayload::Parts {
                head,
                frame,
                sdp,
                offer_id,
                ..
            } => {
                out.extend_from_slice(head);
                out.extend_from_slice(sdp.get(frame));
                out.extend_from_slice(b",\"offer_id\":");
                json::push_latin1(out, offer_id);
                out.push(b'}');
            }
            WtPayload::Frame { text, .. } => out.extend_from_slice(text),
        }
    }

    /// The offer's id and the sender's `peer_id`.
    pub fn ids(&self) -> (&[u8; 20], &[u8; 20]) {
        match self {
            WtPayload::Parts {
                offer_id, peer_id, ..
            }
            | WtPayload::Frame {
                offer_id, peer_id, ..
            } => (offer_id, peer_id),
        }
    }
}

/// Why a signal could not be sent (the relay's answer to its sender, here or, through a
/// [`Refusal`], from another instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The target is gone, never existed, or is not in that swarm.
    #[error("target peer is gone or not in that swarm")]
    UnknownPeer,
    /// The target can't keep up; the signal was dropped.
    #[error("target peer is not keeping up")]
    Overloaded,
    /// A WebTorrent answer to an offer the target didn't send to the answerer, or that expired.
    #[error("no such offer awaits an answer")]
    UnexpectedAnswer,
}

/// A signal refused where it was to be delivered (on another instance, or after it was queued
/// for Redis), on its way back to its sender so the sender gets the error it would get on one
/// instance. Carried as a [`Signal`] whose `from` is the refused signal's target, `to` its
/// sender and `kind` its kind.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Why it was refused.
    pub error: SendError,
    /// The swarm's key.
    pub swarm_key: Box<str>,
    /// The refused signal's `sid` (WebTorrent: the offer id and the sender's `peer_id`).
    pub sid: Box<str>,
}

/// What a signal relays.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Native protocol v1.
    Native(NativePayload),
    /// The WebTorrent tracker protocol.
    WebTorrent(WtPayload),
    /// Not a signal: the refusal of one, for its sender.
    Refused(Refusal),
}

/// A signal on its way from one viewer to another.
#[derive(Debug, Clone)]
pub struct Signal {
    /// Offer, answer or candidates.
    pub kind: SignalKind,
    /// The swarm both viewers are in, as this instance names it.
    pub swarm: SwarmId,
    /// The sender, always set by the server.
    pub from: PeerId,
    /// The target.
    pub to: PeerId,
    /// When the tracker received it; the relay latency is measured from here.
    pub received_at: Instant,
    /// What it carries.
    pub payload: Payload,
}

impl Signal {
    /// Bytes this signal relays (SDP or candidates and its identifiers), for byte budgets and
    /// buffer sizes. The frame it shares with other signals is counted once per signal, in
    /// the part that is its own.
    pub fn payload_len(&self) -> usize {
        match &self.payload {
            // Its fields, and a span per candidate of a plain list.
            Payload::Native(n) => {
                self_len(n)
                    + match &n.body {
                        NativeBody::Cands {
                            list: CandList::Plain(v),
                            ..
                        } => v.len() * size_of::<Span>(),
                        _ => 0,
                    }
            }
            Payload::WebTorrent(WtPayload::Parts { head, sdp, .. }) => head.len() + sdp.len() + 40,
            Payload::WebTorrent(WtPayload::Frame { text, .. }) => text.len(),
            Payload::Refused(r) => r.swarm_key.len() + r.sid.len(),
        }
    }

    /// The swarm's key, as the index and Redis name it.
    pub fn swarm_key(&self) -> Cow<'_, str> {
        match &self.payload {
            Payload::Native(n) => n.text(n.swarm),
            Payload::WebTorrent(WtPayload::Parts { info_hash, .. }) => {
                let mut buf = [0; WEBTORRENT_KEY_LEN];
                Cow::Owned(webtorrent_key(info_hash, &mut buf).to_string())
            }
            Payload::WebTorrent(WtPayload::Frame { key, .. }) => String::from_utf8_lossy(key),
            Payload::Refused(r) => Cow::Borrowed(&r.swarm_key),
        }
    }

    /// The negotiation id as its sender wrote it: native `sid`; WebTorrent, the offer id and
    /// the sender's `peer_id` (40 characters of at most U+00FF).
    pub fn sid(&self) -> Cow<'_, str> {
        match &self.payload {
            Payload::Native(n) => n.text(n.sid),
            Payload::WebTorrent(w) => {
                let (offer_id, peer_id) = w.ids();
                Cow::Owned(
                    offer_id
                        .iter()
                        .chain(peer_id)
                        .map(|&b| char::from(b))
                        .collect(),
                )
            }
            Payload::Refused(r) => Cow::Borrowed(&r.sid),
        }
    }

    /// The refusal of this signal, addressed to its sender.
    pub fn refusal(&self, error: SendError, now: Instant) -> Signal {
        Signal {
            kind: self.kind,
            swarm: self.swarm,
            from: self.to,
            to: self.from,
            received_at: now,
            payload: Payload::Refused(Refusal {
                error,
                swarm_key: self.swarm_key().into(),
                sid: self.sid().into(),
            }),
        }
    }

    /// The memory a queued signal holds, in bytes: the struct and what it relays. True of a
    /// signal that doesn't [`Signal::pins_more`]; one that does is compacted before it waits
    /// in an outbox.
    pub fn footprint(&self) -> usize {
        size_of::<Self>() + self.payload_len()
    }

    /// True for a refusal on its way back to the sender of the refused signal.
    pub fn is_refusal(&self) -> bool {
        matches!(self.payload, Payload::Refused(_))
    }

    /// True when the buffers this signal shares keep more memory alive than it relays: it came
    /// in a frame with other messages (a native `batch`, a WebTorrent announce's offers) or in
    /// a Redis batch. Such a signal waiting in an outbox would hold the whole frame, and an
    /// outbox's byte bound would count only its part.
    pub fn pins_more(&self) -> bool {
        // A frame holding only this signal is its relayed bytes and the message's envelope.
        const ENVELOPE: usize = 512;
        let own = self.payload_len();
        match &self.payload {
            Payload::Native(n) => n.frame.len() > own + ENVELOPE,
            Payload::WebTorrent(WtPayload::Parts { frame, .. }) => frame.len() > own + ENVELOPE,
            // Slices of a Redis batch, whose length they don't know: always.
            Payload::WebTorrent(WtPayload::Frame { .. }) => true,
            // A refusal owns its few bytes.
            Payload::Refused(_) => false,
        }
    }

    /// Copies what this signal relays out of the buffers it shares, into one of its own, so
    /// that it holds no more than [`Signal::footprint`] says. For a signal about to wait in an
    /// outbox that [`Signal::pins_more`]; never on the way of one that is written at once.
    pub fn compact(&mut self) {
        match &mut self.payload {
            Payload::Native(n) => {
                let mut buf = Vec::with_capacity(self_len(n));
                let keep = |span: Span, buf: &mut Vec<u8>| {
                    let start = buf.len();
                    buf.extend_from_slice(span.get(&n.frame));
                    (start, span.len())
                };
                let swarm = keep(n.swarm.span, &mut buf);
                let sid = keep(n.sid.span, &mut buf);
                let body = match &n.body {
                    NativeBody::Sdp(m) => Err(keep(m.span, &mut buf)),
                    NativeBody::Cands {
                        list: CandList::Json(l),
                        ..
                    } => Err(keep(*l, &mut buf)),
                    NativeBody::Cands {
                        list: CandList::Plain(v),
                        ..
                    } => Ok(v.iter().map(|s| keep(*s, &mut buf)).collect::<Vec<_>>()),
                };
                let frame = Bytes::from(buf);
                let span =
                    |(start, len): (usize, usize)| Span::of(&frame, &frame[start..start + len]);
                n.swarm.span = span(swarm);
                n.sid.span = span(sid);
                match (&mut n.body, body) {
                    (NativeBody::Sdp(m), Err(at)) => m.span = span(at),
                    (
                        NativeBody::Cands {
                            list: CandList::Json(l),
                            ..
                        },
                        Err(at),
                    ) => *l = span(at),
                    (
                        NativeBody::Cands {
                            list: CandList::Plain(v),
                            ..
                        },
                        Ok(ats),
                    ) => {
                        for (s, at) in v.iter_mut().zip(ats) {
                            *s = span(at);
                        }
                    }
                    // Each arm above kept the body it found.
                    _ => {}
                }
                n.frame = frame;
            }
            Payload::WebTorrent(WtPayload::Parts { frame, sdp, .. }) => {
                let own = Bytes::copy_from_slice(sdp.get(frame));
                *sdp = Span::of(&own, &own);
                *frame = own;
            }
            Payload::WebTorrent(WtPayload::Frame { text, key, .. }) => {
                *text = Bytes::copy_from_slice(text);
                *key = Bytes::copy_from_slice(key);
            }
            Payload::Refused(_) => {}
        }
    }
}

/// The bytes a native payload's fields take in its frame.
fn self_len(n: &NativePayload) -> usize {
    n.swarm.len()
        + n.sid.len()
        + match &n.body {
            NativeBody::Sdp(m) => m.len(),
            NativeBody::Cands {
                list: CandList::Json(s),
                ..
            } => s.len(),
            NativeBody::Cands {
                list: CandList::Plain(v),
                ..
            } => v.iter().map(Span::len).sum(),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_locate_parts_of_a_frame() {
        let frame = Bytes::from_static(b"{\"m\":\"v=0\"}");
        let part = &frame[5..10];
        let s = Span::of(&frame, part);
        assert_eq!(s.get(&frame), b"\"v=0\"");
        assert_eq!(s.len(), 5);
        let elsewhere = b"\"v=0\"";
        assert_eq!(Span::of(&frame, elsewhere).len(), 0);
        assert_eq!(Span::default().get(&frame), b"");
    }
}
