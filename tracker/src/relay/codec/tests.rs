use super::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use swarmtrack_protocol::{self as protocol, ClientMsg, Format};

use crate::signal::{
    CandList, NativeBody, NativePayload, Payload, PlainBody, Refusal, SendError, SignalKind,
};
use crate::swarm_key::SwarmId;
use flate2::{Compress, Compression, FlushCompress, Status};
use swarmtrack_protocol::{InstanceId, PeerId};

const CHROME_OFFER: &str =
    include_str!("../../../../fixtures/chrome-datachannel-offer-complete.sdp");
const CHROME_OFFER_TRICKLE: &str =
    include_str!("../../../../fixtures/chrome-datachannel-offer.sdp");
const CHROME_ANSWER: &str =
    include_str!("../../../../fixtures/chrome-datachannel-answer-complete.sdp");
const CHROME_CANDS: &str = include_str!("../../../../fixtures/chrome-datachannel-candidates.jsonl");
const FIREFOX_OFFER: &str =
    include_str!("../../../../fixtures/firefox-datachannel-offer-complete.sdp");
const FIREFOX_ANSWER: &str =
    include_str!("../../../../fixtures/firefox-datachannel-answer-complete.sdp");
const FIREFOX_CANDS: &str =
    include_str!("../../../../fixtures/firefox-datachannel-candidates.jsonl");

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

/// A native signal's relayed fields, as plain values.
#[derive(Debug, Clone, PartialEq)]
enum Body {
    Sdp(String),
    Cands {
        c: Vec<String>,
        end: Option<bool>,
    },
    /// Not a signal: the refusal of one.
    Refused(SendError),
}

fn signal(
    kind: SignalKind,
    swarm: &str,
    from: PeerId,
    to: PeerId,
    sid: &str,
    body: Body,
) -> Signal {
    let payload = match &body {
        Body::Sdp(m) => Payload::Native(NativePayload::from_plain(swarm, sid, PlainBody::Sdp(m))),
        Body::Cands { c, end } => {
            let c: Vec<&str> = c.iter().map(String::as_str).collect();
            Payload::Native(NativePayload::from_plain(
                swarm,
                sid,
                PlainBody::Cands(&c, *end),
            ))
        }
        Body::Refused(error) => Payload::Refused(Refusal {
            error: *error,
            swarm_key: swarm.into(),
            sid: sid.into(),
        }),
    };
    Signal {
        kind,
        swarm: SwarmId(0),
        from,
        to,
        received_at: Instant::now(),
        payload,
    }
}

fn sdp(m: &str) -> Body {
    Body::Sdp(m.into())
}

fn body(s: &Signal) -> Body {
    let n = match &s.payload {
        Payload::Native(n) => n,
        Payload::Refused(r) => return Body::Refused(r.error),
        Payload::WebTorrent(_) => panic!("not a native signal"),
    };
    match &n.body {
        NativeBody::Sdp(m) => Body::Sdp(n.text(*m).into_owned()),
        NativeBody::Cands { list, end, .. } => Body::Cands {
            c: match list {
                CandList::Plain(spans) => spans.iter().map(|s| n.plain(*s).to_string()).collect(),
                CandList::Json(span) => {
                    serde_json::from_slice(span.get(&n.frame)).expect("a JSON list")
                }
            },
            end: *end,
        },
    }
}

type Fields = (SignalKind, String, PeerId, PeerId, String, Body);

fn fields(s: &Signal) -> Fields {
    (
        s.kind,
        s.swarm_key().into_owned(),
        s.from,
        s.to,
        s.sid().into_owned(),
        body(s),
    )
}

fn encode(signals: &[Signal], threshold: usize) -> (EncodeStats, Vec<u8>) {
    let mut out = Vec::new();
    let stats = encode_batch(signals, threshold, &mut out).expect("encodes");
    (stats, out)
}

fn decode(bytes: &[u8]) -> Result<Vec<Signal>, CodecError> {
    decode_batch(Bytes::copy_from_slice(bytes), MAX, Instant::now())
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
        prop::sample::select(vec![
            SendError::UnknownPeer,
            SendError::Overloaded,
            SendError::UnexpectedAnswer
        ])
        .prop_map(Body::Refused),
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
        .prop_map(|(kind, swarm, from, to, sid, body)| signal(kind, &swarm, from, to, &sid, body))
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
        prop_assert_eq!(wire[0], 0x20 | u8::from(stats.compressed));
        prop_assert_eq!(batch_len(wire), Some(signals.len() as u64));
        if stats.compressed {
            prop_assert!(stats.raw_bytes >= threshold);
            prop_assert!(stats.wire_bytes <= stats.raw_bytes + 1);
        } else {
            // The flag byte and the count (one byte under 128 elements).
            prop_assert_eq!(stats.wire_bytes, stats.raw_bytes + 2);
        }

        let at = Instant::now();
        // The limit is inclusive: exactly the payload's size is enough, one byte less isn't.
        let back = decode_batch(Bytes::copy_from_slice(wire), stats.raw_bytes, at)
            .map_err(|e| TestCaseError::fail(format!("{e:#?}")))?;
        let over = decode_batch(Bytes::copy_from_slice(wire), stats.raw_bytes - 1, at);
        prop_assert!(matches!(over, Err(CodecError::TooLarge { .. })), "{:?}", over);
        prop_assert_eq!(back.len(), signals.len());
        for (b, s) in back.iter().zip(&signals) {
            prop_assert_eq!(fields(b), fields(s));
            prop_assert_eq!(b.received_at, at);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        flag in prop_oneof![Just(0x20u8), Just(0x21u8), any::<u8>()],
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut input = vec![flag];
        input.extend_from_slice(&bytes);
        let _ = decode_batch(Bytes::from(input), 4096, Instant::now());
        let _ = decode_batch(Bytes::from(bytes), 4096, Instant::now());
    }
}

#[test]
fn empty_batch_round_trips_at_any_threshold() {
    for threshold in [0, 1, usize::MAX] {
        let (stats, wire) = encode(&[], threshold);
        // One byte of MessagePack (an empty array) never deflates smaller.
        assert_eq!(wire, [0x20, 0x00, 0x90]);
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
        (0x10, Some(1)),
        (0x11, Some(1)),
        (0x31, Some(3)),
        (0x22, None),
        (0x2f, None),
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

#[test]
fn the_count_before_the_payload_must_match_it() {
    let (_, wire) = encode(&fixture_batch(), 0);
    assert_eq!(wire[1], 3);
    assert_eq!(batch_len(&wire), Some(3));
    assert_eq!(batch_len(&[0x10, 0x03]), None, "another format version");
    assert_eq!(batch_len(&[0x20]), None);
    for count in [0, 2, 4, 0x7f] {
        let mut bad = wire.clone();
        bad[1] = count;
        assert!(matches!(decode(&bad), Err(CodecError::BadCount)), "{count}");
    }
    let mut no_count = wire.clone();
    no_count[1] = 0xa1;
    assert!(matches!(decode(&no_count), Err(CodecError::BadCount)));
}

#[test]
fn a_refusal_travels_with_signals_and_keeps_its_sid() {
    let (a, b) = (peer(1, 7, 99), peer(2, 8, 100));
    let offer = signal(SignalKind::Offer, SWARM, a, b, SID, sdp(CHROME_OFFER));
    let refused = offer.refusal(SendError::Overloaded, Instant::now());
    assert_eq!((refused.from, refused.to), (b, a));
    let (_, wire) = encode(&[offer.clone(), refused.clone()], 0);
    let back = decode(&wire).expect("decodes");
    assert_eq!(fields(&back[0]), fields(&offer));
    assert_eq!(fields(&back[1]), fields(&refused));
    assert_eq!(back[1].sid(), SID);
    assert_eq!(body(&back[1]), Body::Refused(SendError::Overloaded));
}

/// A plain batch of one element holding `payload`, MessagePack built by hand.
fn plain(payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x20, 0x01];
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
        body(&decoded[0]),
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
        ("refusal reason 3", batch(&[0x00], &id, &[0x03])),
        (
            "refusal reason as a negative int",
            batch(&[0x00], &id, &[0xff]),
        ),
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
    assert!(
        decode_batch(
            Bytes::copy_from_slice(&wire),
            stats.raw_bytes,
            Instant::now()
        )
        .is_ok()
    );
    assert!(matches!(
        decode_batch(
            Bytes::copy_from_slice(&wire),
            stats.raw_bytes - 1,
            Instant::now()
        ),
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
        decode_batch(Bytes::copy_from_slice(&wire), 64 << 10, Instant::now()),
        Err(CodecError::TooLarge { max }) if max == 64 << 10
    ));
    assert_eq!(
        body(&decode(&wire).expect("decodes under a large limit")[0]),
        body(&s)
    );

    // A bare stream of zeros, 32 MiB inflated, behind a deflate flag.
    let mut deflater = Compress::new(Compression::best(), false);
    deflater.set_dictionary(SDP_DICTIONARY).expect("dictionary");
    let zeros = vec![0u8; 32 << 20];
    let mut bomb = vec![0x21, 0x01];
    bomb.reserve(64 << 10);
    let status = deflater
        .compress_vec(&zeros, &mut bomb, FlushCompress::Finish)
        .expect("deflates");
    assert_eq!(status, Status::StreamEnd);
    assert!(matches!(
        decode_batch(Bytes::copy_from_slice(&bomb), 1 << 20, Instant::now()),
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
    let (_, swarm, _, to, sid, body) = fields(s);
    let msg = match &body {
        Body::Sdp(m) => {
            let sig = protocol::Signal {
                swarm: swarm.as_str().into(),
                to,
                sid: sid.as_str().into(),
                m: m.as_str().into(),
            };
            match s.kind {
                SignalKind::Answer => ClientMsg::Answer(sig),
                _ => ClientMsg::Offer(sig),
            }
        }
        Body::Cands { c, end } => ClientMsg::Cands(protocol::Cands {
            swarm: swarm.as_str().into(),
            to,
            sid: sid.as_str().into(),
            c: c.iter().map(|c| c.as_str().into()).collect(),
            end: *end,
        }),
        Body::Refused(_) => panic!("a refusal is not sent by a viewer"),
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
