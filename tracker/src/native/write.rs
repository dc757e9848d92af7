//! Writing native protocol v1 frames: relayed signals by hand, copying each relayed field as it
//! was sent when the sender and the target speak the same format, and the tracker's own
//! replies through serde.

use serde::Serialize;
use swarmtrack_protocol::{Format, PeerId, RawList, ServerMsg};
use tracing::warn;

use crate::json;
use crate::session::Outgoing;
use crate::signal::{CandList, NativeBody, NativePayload, Payload, Signal, Text};
use crate::ws::frame::Opcode;

fn opcode(format: Format) -> Opcode {
    match format {
        Format::Json => Opcode::Text,
        Format::MsgPack => Opcode::Binary,
    }
}

/// Writes the tracker's replies as one frame (a `batch` when there are several).
pub fn replies(out: &mut Outgoing, format: Format, mut msgs: Vec<ServerMsg<'static>>) {
    let n = msgs.len() as u64;
    let msg = match msgs.len() {
        0 => return,
        1 => match msgs.pop() {
            Some(m) => m,
            None => return,
        },
        _ => ServerMsg::Batch { msgs },
    };
    out.frame(opcode(format), n, |buf| {
        let written = match format {
            Format::Json => serde_json::to_writer(&mut *buf, &msg).map_err(|e| e.to_string()),
            Format::MsgPack => msg
                .serialize(&mut rmp_serde::Serializer::new(&mut *buf).with_struct_map())
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = written {
            // Our own fault: the message types always serialize.
            warn!(error = %e, "a reply failed to encode");
        }
    });
}

/// Writes native signals as one frame (a `batch` when there are several); signals of another
/// protocol can't reach a native outbox and are skipped.
pub fn signals(out: &mut Outgoing, format: Format, signals: &[Signal]) {
    let native: Vec<(&Signal, &NativePayload)> = signals
        .iter()
        .filter_map(|s| match &s.payload {
            Payload::Native(n) => Some((s, n)),
            // Refusals are written as `error` replies by the session.
            Payload::WebTorrent(_) | Payload::Refused(_) => None,
        })
        .collect();
    let n = native.len();
    if n == 0 {
        return;
    }
    out.frame(opcode(format), n as u64, |buf| {
        let size: usize = native.iter().map(|(s, _)| s.payload_len() + 64).sum();
        buf.reserve(size + 32);
        match format {
            Format::Json => {
                if n > 1 {
                    buf.extend_from_slice(br#"{"t":"batch","msgs":["#);
                }
                for (i, (s, p)) in native.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    json_signal(buf, s, p);
                }
                if n > 1 {
                    buf.extend_from_slice(b"]}");
                }
            }
            Format::MsgPack => {
                if n > 1 {
                    buf.push(0x82);
                    msgpack_str(buf, "t");
                    msgpack_str(buf, "batch");
                    msgpack_str(buf, "msgs");
                    let _ = rmp::encode::write_array_len(buf, n as u32);
                }
                for (s, p) in &native {
                    msgpack_signal(buf, s, p);
                }
            }
        }
    });
}

fn json_text(buf: &mut Vec<u8>, p: &NativePayload, t: Text) {
    let raw = t.span.get(&p.frame);
    if t.json {
        buf.extend_from_slice(raw);
    } else {
        json::push_str(buf, std::str::from_utf8(raw).unwrap_or_default());
    }
}

fn json_signal(buf: &mut Vec<u8>, s: &Signal, p: &NativePayload) {
    buf.extend_from_slice(b"{\"t\":\"");
    buf.extend_from_slice(s.kind.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"swarm\":");
    json_text(buf, p, p.swarm);
    buf.extend_from_slice(b",\"from\":\"");
    buf.extend_from_slice(&s.from.encode());
    buf.extend_from_slice(b"\",\"sid\":");
    json_text(buf, p, p.sid);
    match &p.body {
        NativeBody::Sdp(m) => {
            buf.extend_from_slice(b",\"m\":");
            json_text(buf, p, *m);
        }
        NativeBody::Cands { list, end, .. } => {
            buf.extend_from_slice(b",\"c\":");
            match list {
                CandList::Json(span) => buf.extend_from_slice(span.get(&p.frame)),
                CandList::Plain(spans) => {
                    buf.push(b'[');
                    for (i, span) in spans.iter().enumerate() {
                        if i > 0 {
                            buf.push(b',');
                        }
                        json::push_str(buf, p.plain(*span));
                    }
                    buf.push(b']');
                }
            }
            if let Some(end) = end {
                buf.extend_from_slice(if *end {
                    b",\"end\":true"
                } else {
                    b",\"end\":false"
                });
            }
        }
    }
    buf.push(b'}');
}

fn msgpack_str(buf: &mut Vec<u8>, s: &str) {
    // Writing to a Vec can't fail.
    let _ = rmp::encode::write_str(buf, s);
}

fn msgpack_text(buf: &mut Vec<u8>, p: &NativePayload, t: Text) {
    msgpack_str(buf, &p.text(t));
}

fn msgpack_peer(buf: &mut Vec<u8>, id: PeerId) {
    let text = id.encode();
    let _ = rmp::encode::write_str_len(buf, text.len() as u32);
    buf.extend_from_slice(&text);
}

fn msgpack_signal(buf: &mut Vec<u8>, s: &Signal, p: &NativePayload) {
    let fields = match &p.body {
        NativeBody::Cands { end: Some(_), .. } => 6,
        _ => 5,
    };
    buf.push(0x80 | fields);
    msgpack_str(buf, "t");
    msgpack_str(buf, s.kind.as_str());
    msgpack_str(buf, "swarm");
    msgpack_text(buf, p, p.swarm);
    msgpack_str(buf, "from");
    msgpack_peer(buf, s.from);
    msgpack_str(buf, "sid");
    msgpack_text(buf, p, p.sid);
    match &p.body {
        NativeBody::Sdp(m) => {
            msgpack_str(buf, "m");
            msgpack_text(buf, p, *m);
        }
        NativeBody::Cands { list, count, end } => {
            msgpack_str(buf, "c");
            let _ = rmp::encode::write_array_len(buf, *count);
            match list {
                CandList::Json(span) => {
                    let token = std::str::from_utf8(span.get(&p.frame)).unwrap_or_default();
                    for c in RawList::Json(token).values() {
                        msgpack_str(buf, &c);
                    }
                }
                CandList::Plain(spans) => {
                    for span in spans {
                        msgpack_str(buf, p.plain(*span));
                    }
                }
            }
            if let Some(end) = end {
                msgpack_str(buf, "end");
                let _ = rmp::encode::write_bool(buf, *end);
            }
        }
    }
}

#[cfg(test)]
mod tests;
