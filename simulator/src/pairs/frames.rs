//! The frames of the fixed-pairs load: what each connection sends, encoded once with a
//! placeholder where the send time goes, and the lean view of what it receives.
//!
//! A relayed message carries its send time (µs since the run started, 16 decimal digits) as its
//! `sid`, which every server relays as sent: the receiver reads the latency from it. Building a
//! message is a copy of its template and 16 bytes overwritten, so the generator's cost per
//! message is its frames, not their encoding.
//!
//! swarmtrack gets the native protocol as the browser SDK sends it (through
//! [`crate::native::wire::relayed`], in JSON or MessagePack). The bare relay
//! (`../shared/bench/bare-relay`, its `--json` mode) gets its envelope `{"t","to","sid","m"}`:
//! the same SDP as `m`, and a candidate batch as a JSON list in `m` (its envelope has no `c`);
//! it parses `m` into a JSON value and writes it back, which is the work swarmtrack does to `c`.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use swarmtrack_protocol::{Format, PeerId};
use tokio_tungstenite::tungstenite::Message;

use crate::native::payload::Side;
use crate::native::wire::{self, Encoded, Relayed};

/// Digits of a send time in a `sid`.
pub const SID_DIGITS: usize = 16;

/// What templates are made with in place of the send time; found once, then overwritten.
const PLACEHOLDER: &str = "@@@@@@@@@@@@@@@@";

/// The server the load talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Server {
    /// swarmtrack's native protocol (`/v1/ws`).
    Swarmtrack,
    /// The bare tokio-tungstenite relay with its JSON envelope (`relay --json`).
    Bare,
}

/// One message a connection sends, with where its send time goes.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    at: usize,
    binary: bool,
}

impl Template {
    fn new(frame: Message) -> Result<Self, String> {
        let (bytes, binary) = match frame {
            Message::Text(t) => (t.as_bytes().to_vec(), false),
            Message::Binary(b) => (b.to_vec(), true),
            other => return Err(format!("not a data frame: {other:?}")),
        };
        let mut found = bytes
            .windows(PLACEHOLDER.len())
            .enumerate()
            .filter(|(_, w)| *w == PLACEHOLDER.as_bytes())
            .map(|(i, _)| i);
        let at = found.next().ok_or("no placeholder in the frame")?;
        if found.next().is_some() {
            return Err("the placeholder is in the frame twice".into());
        }
        Ok(Self { bytes, at, binary })
    }

    /// The frame, sent at `now_us`.
    pub fn frame(&self, now_us: u64) -> Message {
        let mut bytes = self.bytes.clone();
        let mut n = now_us;
        for b in bytes[self.at..self.at + SID_DIGITS].iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
        if self.binary {
            Message::Binary(bytes.into())
        } else {
            // The template was a text frame and only ASCII digits replaced ASCII `@`s.
            match String::from_utf8(bytes) {
                Ok(s) => Message::Text(s.into()),
                Err(e) => Message::Binary(e.into_bytes().into()),
            }
        }
    }

    /// Bytes of the frame's payload.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for an empty frame (never: every template holds a message).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// The messages one connection sends in turn: its side's SDP, then each of its candidate
/// batches, again and again.
///
/// # Errors
/// An encoding failure, or a template without its placeholder.
pub fn cycle(
    server: Server,
    format: Format,
    side: &Side,
    offer: bool,
    swarm: &str,
    to: PeerId,
) -> Result<Vec<Template>, String> {
    let encoded = Encoded::new(side).map_err(|e| e.to_string())?;
    let mut whats = vec![Relayed::Sdp { offer }];
    whats.extend((0..side.batches.len()).map(Relayed::Cands));
    whats
        .into_iter()
        .map(|what| {
            let frame = match server {
                Server::Swarmtrack => {
                    wire::relayed(format, side, &encoded, what, swarm, to, PLACEHOLDER)?
                }
                Server::Bare => bare(&encoded, what, to)?,
            };
            Template::new(frame)
        })
        .collect()
}

/// The bare relay's envelope for the same message.
fn bare(encoded: &Encoded, what: Relayed, to: PeerId) -> Result<Message, String> {
    let mut s = String::with_capacity(64 + encoded.sdp.len());
    let (t, m) = match what {
        Relayed::Sdp { offer } => (if offer { "offer" } else { "answer" }, &encoded.sdp),
        Relayed::Cands(i) => (
            "cands",
            encoded
                .cands
                .get(i)
                .ok_or_else(|| format!("no candidate batch {i}"))?,
        ),
    };
    let _ = write!(
        s,
        r#"{{"t":"{t}","to":"{to}","sid":"{PLACEHOLDER}","m":{m}}}"#
    );
    Ok(Message::Text(s.into()))
}

/// The frame a bare-relay connection sends to itself once registered: when it comes back, the
/// relay has processed its registration (frames of one socket are handled in order).
pub fn bare_echo(me: PeerId) -> Message {
    Message::Text(format!(r#"{{"t":"echo","to":"{me}","sid":"0","m":0}}"#).into())
}

/// What the load reads of a received frame: the type, the `sid` (the send time), an error's
/// code, and a batch's messages. serde skips the rest (SDP, candidates, ids) unread.
#[derive(Debug, Deserialize)]
pub struct Received<'a> {
    /// The message type.
    #[serde(borrow)]
    pub t: Cow<'a, str>,
    /// A relayed message's `sid`.
    #[serde(default, borrow)]
    pub sid: Option<Cow<'a, str>>,
    /// An `error`'s code.
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    /// A `batch`'s messages.
    #[serde(default, borrow)]
    pub msgs: Option<Vec<Received<'a>>>,
}

impl<'a> Received<'a> {
    /// Reads a text (JSON) or binary (MessagePack) frame; `None` for anything else or a frame
    /// that isn't a message.
    pub fn read(frame: &'a Message) -> Option<Self> {
        match frame {
            Message::Text(t) => serde_json::from_str(t.as_str()).ok(),
            Message::Binary(b) => rmp_serde::from_slice(b).ok(),
            _ => None,
        }
    }

    /// The send time in a relayed message's `sid`.
    pub fn sent_us(&self) -> Option<u64> {
        let sid = self.sid.as_deref()?;
        if sid.len() != SID_DIGITS {
            return None;
        }
        sid.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use swarmtrack_protocol::{DecodeLimits, Decoded, InstanceId, decode_client};

    use super::*;
    use crate::native::payload::{Browser, Payloads};

    fn side(offerer: bool) -> Side {
        let p = Payloads::load(Duration::from_millis(15), false).unwrap();
        let s = p.script(Browser::Firefox);
        if offerer {
            s.offerer.clone()
        } else {
            s.answerer.clone()
        }
    }

    #[test]
    fn swarmtrack_frames_decode_with_the_send_time_as_sid() {
        let to = PeerId::new(InstanceId(1), 2, 3);
        for format in [Format::Json, Format::MsgPack] {
            let side = side(true);
            let cycle = cycle(Server::Swarmtrack, format, &side, true, "pair-1", to).unwrap();
            // The SDP, then Firefox's two candidate batches.
            assert_eq!(cycle.len(), 3);
            for t in &cycle {
                let frame = t.frame(1_234_567);
                let bytes = frame.clone().into_data();
                let limits = DecodeLimits {
                    max_want: 16,
                    max_swarm_id_bytes: 256,
                    max_batch: 64,
                    max_cands: 32,
                    max_cand_bytes: 1024,
                };
                // The tracker's own decoder takes it, with the send time as the sid.
                let msg = decode_client(&bytes, format, &limits).unwrap();
                assert!(matches!(msg, Decoded::One(_)));
                let text = format!("{msg:?}");
                assert!(text.contains("0000000001234567"), "{text}");
                let got = Received::read(&frame).unwrap();
                assert_eq!(got.sent_us(), Some(1_234_567));
            }
        }
    }

    #[test]
    fn bare_frames_are_its_envelope() {
        let to = PeerId::new(InstanceId(1), 2, 3);
        let side = side(false);
        let cycle = cycle(Server::Bare, Format::Json, &side, false, "unused", to).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&cycle[0].frame(42).into_data()).unwrap();
        assert_eq!(v["t"], "answer");
        assert_eq!(v["to"], to.to_string());
        assert_eq!(v["sid"], "0000000000000042");
        assert_eq!(v["m"], side.sdp);
        let v: serde_json::Value = serde_json::from_slice(&cycle[1].frame(42).into_data()).unwrap();
        assert_eq!(v["t"], "cands");
        assert_eq!(v["m"][0], side.batches[0].cands[0]);
    }

    #[test]
    fn batches_and_errors_are_read() {
        let batch = Message::Text(
            r#"{"t":"batch","msgs":[{"t":"offer","from":"x","sid":"0000000000000007","m":"v=0"},{"t":"cands","sid":"0000000000000009","c":["a"]}]}"#
                .into(),
        );
        let got = Received::read(&batch).unwrap();
        let msgs = got.msgs.unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].sent_us(), Some(9));
        let err = Message::Text(r#"{"t":"error","code":"overloaded","sid":"n1"}"#.into());
        let got = Received::read(&err).unwrap();
        assert_eq!(got.code.as_deref(), Some("overloaded"));
        assert_eq!(got.sent_us(), None);
        assert!(Received::read(&Message::Text("nope".into())).is_none());
    }
}
