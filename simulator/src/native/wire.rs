//! The native protocol as a simulated viewer speaks it: the frames it sends, built from SDP and
//! candidates encoded once per run, and a lean view of the frames it receives.
//!
//! Profiles of the simulator showed it encoding the same SDP (escaping every `\r\n`) for every
//! offer and answer, and decoding every relayed SDP into an owned string through serde's
//! buffered internally-tagged enum, only to drop it. Here a side's SDP and each candidate batch
//! are JSON-encoded once ([`Encoded`]); a JSON frame is those pieces spliced around the swarm,
//! peer and `sid` (ASCII letters, digits and `-`, which need no escaping); and a received frame
//! is read into [`Incoming`], which skips what a viewer doesn't look at. MessagePack frames go
//! through the protocol crate's encoder (the unit tests hold the JSON splices to it too).

use std::borrow::Cow;

use serde::Deserialize;
use swarmtrack_protocol::{Cands, ClientMsg, Format, PeerId, Signal, encode_client};
use tokio_tungstenite::tungstenite::Message;

use super::payload::{CandBatch, Side};
use crate::websocket::Outbox;

/// A side's SDP and candidate batches, JSON-encoded once.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The SDP as a JSON string (quoted and escaped).
    pub sdp: String,
    /// Each batch's candidates as a JSON array.
    pub cands: Vec<String>,
}

impl Encoded {
    /// Encodes `side`.
    ///
    /// # Errors
    /// Never in practice (strings always encode).
    pub fn new(side: &Side) -> Result<Self, serde_json::Error> {
        Ok(Self {
            sdp: serde_json::to_string(&side.sdp)?,
            cands: side
                .batches
                .iter()
                .map(|b| serde_json::to_string(&b.cands))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// What a relayed message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relayed {
    /// The offer (offerer) or answer (answerer) SDP.
    Sdp {
        /// True for an offer.
        offer: bool,
    },
    /// Candidate batch `i` of the side.
    Cands(usize),
}

/// The frame of one relayed message of `side` to `to` in negotiation `sid` of `swarm`.
///
/// # Errors
/// A MessagePack encoding failure, or a batch the side doesn't have.
pub fn relayed(
    format: Format,
    side: &Side,
    encoded: &Encoded,
    what: Relayed,
    swarm: &str,
    to: PeerId,
    sid: &str,
) -> Result<Message, String> {
    match format {
        Format::Json => {
            let mut s = Vec::with_capacity(96 + swarm.len() + encoded.sdp.len());
            relayed_json(&mut s, side, encoded, what, swarm, to, sid)?;
            Ok(Message::Text(
                String::from_utf8(s).map_err(|e| e.to_string())?.into(),
            ))
        }
        Format::MsgPack => control(format, &message(side, what, swarm, to, sid)?),
    }
}

/// The same frame, queued in `out` (no allocation once the outbox has grown); returns its
/// bytes on the wire.
///
/// # Errors
/// As [`relayed`].
#[allow(clippy::too_many_arguments)]
pub fn relayed_into(
    out: &mut Outbox,
    format: Format,
    side: &Side,
    encoded: &Encoded,
    what: Relayed,
    swarm: &str,
    to: PeerId,
    sid: &str,
) -> Result<usize, String> {
    match format {
        Format::Json => {
            let mut s = out.scratch();
            relayed_json(&mut s, side, encoded, what, swarm, to, sid)?;
            Ok(out.text_scratch(s))
        }
        Format::MsgPack => control_into(out, format, &message(side, what, swarm, to, sid)?),
    }
}

/// Writes the JSON of a relayed message: the pieces encoded once, spliced.
fn relayed_json(
    s: &mut Vec<u8>,
    side: &Side,
    encoded: &Encoded,
    what: Relayed,
    swarm: &str,
    to: PeerId,
    sid: &str,
) -> Result<(), String> {
    use std::io::Write as _;
    let r = match what {
        Relayed::Sdp { offer } => {
            let t = if offer { "offer" } else { "answer" };
            write!(
                s,
                r#"{{"t":"{t}","swarm":"{swarm}","to":"{to}","sid":"{sid}","m":{}}}"#,
                encoded.sdp
            )
        }
        Relayed::Cands(i) => {
            let (Some(batch), Some(c)) = (side.batches.get(i), encoded.cands.get(i)) else {
                return Err(format!("no candidate batch {i}"));
            };
            write!(
                s,
                r#"{{"t":"cands","swarm":"{swarm}","to":"{to}","sid":"{sid}","c":{c}{}}}"#,
                if batch.end { r#","end":true"# } else { "" }
            )
        }
    };
    r.map_err(|e| e.to_string())
}

/// The same message as the protocol crate's type.
fn message<'a>(
    side: &'a Side,
    what: Relayed,
    swarm: &'a str,
    to: PeerId,
    sid: &'a str,
) -> Result<ClientMsg<'a>, String> {
    Ok(match what {
        Relayed::Sdp { offer } => {
            let signal = Signal {
                swarm: Cow::Borrowed(swarm),
                to,
                sid: Cow::Borrowed(sid),
                m: Cow::Borrowed(&side.sdp),
            };
            if offer {
                ClientMsg::Offer(signal)
            } else {
                ClientMsg::Answer(signal)
            }
        }
        Relayed::Cands(i) => {
            let batch: &CandBatch = side
                .batches
                .get(i)
                .ok_or_else(|| format!("no candidate batch {i}"))?;
            ClientMsg::Cands(Cands {
                swarm: Cow::Borrowed(swarm),
                to,
                sid: Cow::Borrowed(sid),
                c: batch
                    .cands
                    .iter()
                    .map(|c| Cow::Borrowed(c.as_str()))
                    .collect(),
                end: batch.end.then_some(true),
            })
        }
    })
}

/// Any message through the protocol crate's encoder, queued in `out`; returns its bytes on
/// the wire.
///
/// # Errors
/// An encoding failure.
pub fn control_into(
    out: &mut Outbox,
    format: Format,
    msg: &ClientMsg<'_>,
) -> Result<usize, String> {
    let bytes = encode_client(msg, format).map_err(|e| e.to_string())?;
    Ok(match format {
        Format::Json => out.text(&bytes),
        Format::MsgPack => out.binary(&bytes),
    })
}

/// Any message, through the protocol crate's encoder (`join`, `leave`, and MessagePack).
///
/// # Errors
/// An encoding failure.
pub fn control(format: Format, msg: &ClientMsg<'_>) -> Result<Message, String> {
    let bytes = encode_client(msg, format).map_err(|e| e.to_string())?;
    Ok(match format {
        Format::Json => Message::Text(String::from_utf8(bytes).map_err(|e| e.to_string())?.into()),
        Format::MsgPack => Message::Binary(bytes.into()),
    })
}

/// What a viewer reads of a server frame: the type and the few fields it acts on. Everything
/// else (the SDP, the candidates, `welcome`'s limits) serde skips as an unknown field: scanned,
/// never copied or unescaped.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    /// The message type.
    #[serde(borrow)]
    pub t: Cow<'a, str>,
    /// `offer`, `answer`, `cands`: the negotiation; `error`: the refused one's.
    #[serde(default, borrow)]
    pub sid: Option<Cow<'a, str>>,
    /// `offer`, `answer`, `cands`: the sender.
    #[serde(default)]
    pub from: Option<PeerId>,
    /// `peers`: the peers to offer to.
    #[serde(default)]
    pub peers: Option<Vec<PeerId>>,
    /// `error`: the code.
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    /// `error`: the type of the refused message.
    #[serde(default, rename = "ref", borrow)]
    pub reference: Option<Cow<'a, str>>,
    /// `reconnect`: the delay.
    #[serde(default)]
    pub after_ms: Option<u64>,
    /// `batch`: the messages.
    #[serde(default, borrow)]
    pub msgs: Option<Vec<Incoming<'a>>>,
}

impl<'a> Incoming<'a> {
    /// Reads a JSON text frame; `None` when it isn't a JSON object with a `t`.
    pub fn json(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// Reads a JSON text frame from its bytes.
    pub fn json_bytes(text: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(text).ok()
    }

    /// Reads a MessagePack binary frame.
    pub fn msgpack(bytes: &'a [u8]) -> Option<Self> {
        rmp_serde::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use swarmtrack_protocol::{Frame, InstanceId, RelayedSignal, ServerMsg, encode};

    use super::*;
    use crate::native::payload::{Browser, Payloads};

    #[test]
    fn spliced_frames_equal_the_protocol_encoders() {
        let to = PeerId::new(InstanceId(7), 3, 99);
        for minified in [false, true] {
            let p = Payloads::load(Duration::from_millis(15), minified).unwrap();
            for browser in [Browser::Chrome, Browser::Firefox] {
                let script = p.script(browser);
                for (side, offer) in [(&script.offerer, true), (&script.answerer, false)] {
                    let enc = Encoded::new(side).unwrap();
                    let mut whats = vec![Relayed::Sdp { offer }];
                    whats.extend((0..side.batches.len()).map(Relayed::Cands));
                    for what in whats {
                        let ours = relayed(Format::Json, side, &enc, what, "sim1-w0-v3", to, "1f")
                            .unwrap();
                        let ours = ours.into_data();
                        let theirs = encode_client(
                            &message(side, what, "sim1-w0-v3", to, "1f").unwrap(),
                            Format::Json,
                        )
                        .unwrap();
                        let a: serde_json::Value = serde_json::from_slice(&ours).unwrap();
                        let b: serde_json::Value = serde_json::from_slice(&theirs).unwrap();
                        assert_eq!(a, b, "{what:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_lean_view_reads_what_the_tracker_sends() {
        let from = PeerId::new(InstanceId(1), 2, 3);
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n";
        let offer = ServerMsg::Offer(RelayedSignal {
            swarm: "s".into(),
            from,
            sid: "a1".into(),
            m: sdp.into(),
        });
        let batch = ServerMsg::Batch {
            msgs: vec![
                offer.clone(),
                ServerMsg::Peers {
                    swarm: "s".into(),
                    peers: vec![from, from],
                },
                ServerMsg::Reconnect { after_ms: 40 },
            ],
        };
        for format in [Format::Json, Format::MsgPack] {
            let frame = encode(&batch, format, 0).unwrap();
            let v = match &frame {
                Frame::Text(text) => Incoming::json(text).unwrap(),
                Frame::Binary(bytes) => Incoming::msgpack(bytes).unwrap(),
            };
            assert_eq!(v.t, "batch");
            let msgs = v.msgs.unwrap();
            assert_eq!(msgs[0].t, "offer");
            assert_eq!(msgs[0].sid.as_deref(), Some("a1"));
            assert_eq!(msgs[0].from, Some(from));
            assert_eq!(msgs[1].peers.as_deref(), Some(&[from, from][..]));
            assert_eq!(msgs[2].after_ms, Some(40));
        }
        assert!(Incoming::json("not json").is_none());
        assert!(Incoming::json(r#"{"no":"type"}"#).is_none());
    }
}
