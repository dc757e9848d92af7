//! The frame formats, decoding limits and errors, and encoding of messages. Decoding client
//! frames is in [`crate::decode`].

use std::borrow::Cow;

use super::{ClientMsg, ErrorCode, ServerMsg};

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
    /// The most candidates in one `cands`.
    pub max_cands: usize,
    /// The longest candidate, in bytes (as sent: a JSON string's value, unescaped).
    pub max_cand_bytes: usize,
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
    use crate::{InstanceId, PeerId, RelayedCands, RelayedSignal, WelcomeLimits};

    fn peer() -> PeerId {
        PeerId::new(InstanceId(7), 3, 99)
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
}
