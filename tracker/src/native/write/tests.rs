use super::*;
use crate::signal::{PlainBody, SignalKind, Span};
use crate::swarm_key::SwarmId;
use bytes::Bytes;
use std::borrow::Cow;
use swarmtrack_protocol::{
    Cands, ClientMsg, DecodeLimits, Decoded, Incoming, InstanceId, RelayedCands, RelayedSignal,
    encode_client,
};
use tokio::time::Instant;

const LIMITS: DecodeLimits = DecodeLimits {
    max_want: 16,
    max_swarm_id_bytes: 256,
    max_batch: 64,
    max_cands: 32,
    max_cand_bytes: 1024,
};

fn peer(n: u32) -> PeerId {
    PeerId::new(InstanceId(3), n, u64::from(n) * 7)
}

const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=\"quoted\" \\ back/slash \u{e9}\r\n";

/// The client messages the tests relay, with the sender each has.
fn client_msgs() -> Vec<ClientMsg<'static>> {
    vec![
        ClientMsg::Offer(swarmtrack_protocol::Signal {
            swarm: "vid\u{e9}o-42".into(),
            to: peer(2),
            sid: "s\"1".into(),
            m: SDP.into(),
        }),
        ClientMsg::Cands(Cands {
            swarm: "v".into(),
            to: peer(2),
            sid: "s1".into(),
            c: vec![
                "candidate:1 1 udp 2 1.2.3.4 5 typ host".into(),
                "a\"b\\".into(),
            ],
            end: Some(true),
        }),
        ClientMsg::Cands(Cands {
            swarm: "v".into(),
            to: peer(2),
            sid: "s2".into(),
            c: vec![],
            end: None,
        }),
    ]
}

/// A signal made from a client frame the way the native handler makes it.
fn relayed(frame: &Bytes, format: Format) -> Signal {
    let Ok(Decoded::One(msg)) = swarmtrack_protocol::decode_client(frame, format, &LIMITS) else {
        panic!("valid message")
    };
    let (kind, payload) = match msg {
        Incoming::Offer(s) => (
            SignalKind::Offer,
            NativePayload {
                frame: frame.clone(),
                swarm: Text::of(frame, s.swarm_raw),
                sid: Text::of(frame, s.sid_raw),
                body: NativeBody::Sdp(Text::of(frame, s.m)),
            },
        ),
        Incoming::Cands(c) => (
            SignalKind::Cands,
            NativePayload {
                frame: frame.clone(),
                swarm: Text::of(frame, c.swarm_raw),
                sid: Text::of(frame, c.sid_raw),
                body: NativeBody::Cands {
                    list: match &c.c {
                        RawList::Json(t) => CandList::Json(Span::of(frame, t.as_bytes())),
                        RawList::Plain(v) => CandList::Plain(
                            v.iter().map(|s| Span::of(frame, s.as_bytes())).collect(),
                        ),
                    },
                    count: c.count as u32,
                    end: c.end,
                },
            },
        ),
        other => panic!("not a signal: {other:?}"),
    };
    Signal {
        kind,
        swarm: SwarmId(1),
        from: peer(1),
        to: peer(2),
        received_at: Instant::now(),
        payload: Payload::Native(payload),
    }
}

/// What serde would have written for the same relayed message.
fn expected(msg: &ClientMsg<'_>) -> ServerMsg<'static> {
    match msg {
        ClientMsg::Offer(s) => ServerMsg::Offer(RelayedSignal {
            swarm: Cow::Owned(s.swarm.to_string()),
            from: peer(1),
            sid: Cow::Owned(s.sid.to_string()),
            m: Cow::Owned(s.m.to_string()),
        }),
        ClientMsg::Cands(c) => ServerMsg::Cands(RelayedCands {
            swarm: Cow::Owned(c.swarm.to_string()),
            from: peer(1),
            sid: Cow::Owned(c.sid.to_string()),
            c: Cow::Owned(c.c.iter().map(|s| s.to_string()).collect()),
            end: c.end,
        }),
        _ => unreachable!(),
    }
}

fn decode(frame: &[u8], format: Format) -> ServerMsg<'static> {
    match format {
        Format::Json => serde_json::from_slice::<ServerMsg<'_>>(frame)
            .expect("valid JSON")
            .into_owned(),
        Format::MsgPack => rmp_serde::from_slice::<ServerMsg<'_>>(frame)
            .expect("valid MessagePack")
            .into_owned(),
    }
}

fn written(signals: &[Signal], format: Format) -> Vec<u8> {
    let mut out = Outgoing::new(Vec::new());
    super::signals(&mut out, format, signals);
    let bytes = out.into_buffer();
    // One frame; skip its header.
    let header = match bytes[1] {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    bytes[header..].to_vec()
}

#[test]
fn relayed_signals_read_as_serde_writes_them_in_every_format_pair() {
    for from in [Format::Json, Format::MsgPack] {
        for to in [Format::Json, Format::MsgPack] {
            for msg in client_msgs() {
                let frame = Bytes::from(encode_client(&msg, from).expect("encodes"));
                let signal = relayed(&frame, from);
                let got = decode(&written(std::slice::from_ref(&signal), to), to);
                assert_eq!(got, expected(&msg), "{from:?} -> {to:?}");
            }
            // Several make one batch, in order.
            let msgs = client_msgs();
            let signals: Vec<Signal> = msgs
                .iter()
                .map(|m| relayed(&Bytes::from(encode_client(m, from).expect("encodes")), from))
                .collect();
            let got = decode(&written(&signals, to), to);
            assert_eq!(
                got,
                ServerMsg::Batch {
                    msgs: msgs.iter().map(expected).collect()
                }
            );
        }
    }
}

#[test]
fn json_tokens_are_copied_as_sent() {
    let to = peer(2).to_string();
    // Escapes serde_json wouldn't write, kept byte for byte.
    let text =
        format!(r#"{{"t":"offer","swarm":"v","to":"{to}","sid":"s","m":"v=0\r\n\u0061\/"}}"#);
    let frame = Bytes::from(text);
    let signal = relayed(&frame, Format::Json);
    let out = String::from_utf8(written(&[signal], Format::Json)).expect("UTF-8");
    assert!(out.contains(r#""m":"v=0\r\n\u0061\/""#), "{out}");
}

#[test]
fn plain_payloads_from_other_instances_write_too() {
    let p = NativePayload::from_plain("v", "s", PlainBody::Cands(&["c1", "c\"2"], Some(false)));
    let signal = Signal {
        kind: SignalKind::Cands,
        swarm: SwarmId(1),
        from: peer(1),
        to: peer(2),
        received_at: Instant::now(),
        payload: Payload::Native(p),
    };
    for format in [Format::Json, Format::MsgPack] {
        let got = decode(&written(std::slice::from_ref(&signal), format), format);
        let ServerMsg::Cands(c) = got else {
            panic!("cands")
        };
        assert_eq!(c.c.to_vec(), vec!["c1".to_string(), "c\"2".to_string()]);
        assert_eq!(c.end, Some(false));
    }
}

#[test]
fn replies_coalesce() {
    let mut out = Outgoing::new(Vec::new());
    replies(
        &mut out,
        Format::Json,
        vec![ServerMsg::Pong, ServerMsg::Pong],
    );
    assert_eq!(
        &out.bytes()[2..],
        br#"{"t":"batch","msgs":[{"t":"pong"},{"t":"pong"}]}"#
    );
    assert_eq!(out.counts(), (1, 2, 48));
}
