//! The WebTorrent tracker protocol as a browser peer speaks it: the 20-character ids, the
//! frames a peer sends, and the classification of the frames it receives.
//!
//! Frames are built by splicing pre-encoded JSON (the SDP objects are encoded once per run) with
//! ids made of ASCII letters and digits, which need no escaping. Only the ids a peer echoes from
//! a received frame are checked first (`is_plain_id`), so nothing the tracker sends can make the
//! simulator emit invalid JSON.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// Length of `info_hash`, `peer_id` and `offer_id` on the wire.
pub const ID_LEN: usize = 20;
/// Most offers the encoding of an offer's index allows (one hex digit).
pub const MAX_OFFERS: usize = 16;

/// Names one offer: the connection that sent it, its announce, and its place in that announce.
///
/// It travels as the `offer_id`, so the receiver (and the offerer, when the answer comes back
/// with the same `offer_id`) finds the ledger entry without any lookup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OfferId {
    /// The offering connection (28 bits on the wire).
    pub conn: u32,
    /// The announce's number on that connection.
    pub seq: u32,
    /// The offer's index within the announce.
    pub idx: u8,
}

/// Highest connection number an `offer_id` can carry.
pub const MAX_CONN: u32 = (1 << 28) - 1;

impl OfferId {
    /// The 20-character `offer_id`: `wt`, the run's tag (2 hex digits), the connection (7), the
    /// announce (8), the index (1).
    pub fn encode(self, tag: u8) -> String {
        let mut s = String::with_capacity(ID_LEN);
        let _ = write!(
            s,
            "wt{tag:02x}{:07x}{:08x}{:x}",
            self.conn & MAX_CONN,
            self.seq,
            self.idx & 0xf
        );
        s
    }

    /// Parses an `offer_id` of this run (`tag`); `None` for anything else.
    pub fn decode(s: &str, tag: u8) -> Option<Self> {
        let rest = s.strip_prefix("wt")?;
        if s.len() != ID_LEN || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let hex = |r: std::ops::Range<usize>| u32::from_str_radix(rest.get(r)?, 16).ok();
        if hex(0..2)? != u32::from(tag) {
            return None;
        }
        Some(Self {
            conn: hex(2..9)?,
            seq: hex(9..17)?,
            idx: u8::try_from(hex(17..18)?).ok()?,
        })
    }

    /// The announce it belongs to, as one number (the ledger's key).
    pub fn announce(self) -> u64 {
        (u64::from(self.conn) << 32) | u64::from(self.seq)
    }
}

/// The `peer_id` of connection `conn` (Azureus style, like WebTorrent's `-WW0208-`).
pub fn peer_id(tag: u8, conn: u32) -> String {
    format!("-SW0001-{tag:02x}{conn:010x}")
}

/// The `info_hash` of torrent `rank` of the catalogue.
pub fn info_hash(tag: u8, rank: u64) -> String {
    format!("ih{tag:02x}{rank:016}")
}

/// True for a 20-character id of ASCII letters, digits and `-` (what this simulator sends).
pub fn is_plain_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The SDP of one side, encoded once as the JSON object the frames carry.
#[derive(Debug, Clone)]
pub struct Sdp(String);

impl Sdp {
    /// `{"type":kind,"sdp":sdp}`.
    ///
    /// # Errors
    /// Never in practice (a string always encodes); kept for the `?` at startup.
    pub fn new(kind: &str, sdp: &str) -> Result<Self, serde_json::Error> {
        serde_json::to_string(&serde_json::json!({ "type": kind, "sdp": sdp })).map(Self)
    }
}

/// `event` of an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// First announce of this peer in this torrent.
    Started,
    /// Later announces.
    Update,
}

/// An announce with `offers.len()` offers sharing one SDP (each with its own `offer_id`).
pub struct Announce<'a> {
    /// The torrent.
    pub info_hash: &'a str,
    /// The announcing peer.
    pub peer_id: &'a str,
    /// Started or update.
    pub event: Event,
    /// A seeder announces `left` 0.
    pub seeder: bool,
    /// The encoded `offer_id`s.
    pub offer_ids: &'a [String],
    /// The offer SDP.
    pub sdp: &'a Sdp,
}

impl Announce<'_> {
    /// The text frame.
    pub fn frame(&self) -> String {
        let mut s = String::with_capacity(200 + self.offer_ids.len() * (self.sdp.0.len() + 40));
        let event = match self.event {
            Event::Started => "started",
            Event::Update => "update",
        };
        let _ = write!(
            s,
            r#"{{"action":"announce","info_hash":"{}","peer_id":"{}","numwant":{},"event":"{event}","left":{},"uploaded":0,"downloaded":0,"offers":["#,
            self.info_hash,
            self.peer_id,
            self.offer_ids.len(),
            if self.seeder { 0 } else { 1_000_000 },
        );
        for (i, id) in self.offer_ids.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, r#"{{"offer_id":"{id}","offer":{}}}"#, self.sdp.0);
        }
        s.push_str("]}");
        s
    }
}

/// The answer of `peer_id` to offer `offer_id` of `to_peer_id`.
pub fn answer(
    info_hash: &str,
    peer_id: &str,
    to_peer_id: &str,
    offer_id: &str,
    sdp: &Sdp,
) -> String {
    format!(
        r#"{{"action":"announce","info_hash":"{info_hash}","peer_id":"{peer_id}","to_peer_id":"{to_peer_id}","offer_id":"{offer_id}","answer":{}}}"#,
        sdp.0
    )
}

/// A scrape of `info_hashes`.
pub fn scrape(info_hashes: &[String]) -> String {
    let mut s = String::from(r#"{"action":"scrape","info_hash":["#);
    for (i, ih) in info_hashes.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "\"{ih}\"");
    }
    s.push_str("]}");
    s
}

/// What a received frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<'a> {
    /// The reply to an announce: the swarm's seeders and leechers.
    AnnounceResponse {
        /// The torrent.
        info_hash: Cow<'a, str>,
        /// Seeders.
        complete: u64,
        /// Leechers.
        incomplete: u64,
    },
    /// An offer relayed from another peer.
    Offer {
        /// The torrent.
        info_hash: Cow<'a, str>,
        /// The offerer.
        peer_id: Cow<'a, str>,
        /// Its id.
        offer_id: Cow<'a, str>,
    },
    /// An answer to one of this peer's offers.
    Answer {
        /// The offer's id.
        offer_id: Cow<'a, str>,
    },
    /// The reply to a scrape.
    ScrapeResponse,
    /// A `failure reason`.
    Failure {
        /// The reason.
        reason: String,
        /// The torrent, when the tracker names it.
        info_hash: Option<Cow<'a, str>>,
    },
    /// Valid JSON of no known shape (a `warning message`, say).
    Other,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(default, borrow)]
    action: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    info_hash: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    peer_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    offer_id: Option<Cow<'a, str>>,
    #[serde(default)]
    offer: Option<IgnoredAny>,
    #[serde(default)]
    answer: Option<IgnoredAny>,
    #[serde(default)]
    complete: Option<u64>,
    #[serde(default)]
    incomplete: Option<u64>,
    #[serde(default)]
    files: Option<IgnoredAny>,
    #[serde(default, rename = "failure reason")]
    failure: Option<String>,
}

/// Classifies a text frame; `None` when it isn't JSON or lacks what its kind needs.
pub fn parse(text: &str) -> Option<Received<'_>> {
    let f: Frame<'_> = serde_json::from_str(text).ok()?;
    if let Some(reason) = f.failure {
        return Some(Received::Failure {
            reason,
            info_hash: f.info_hash,
        });
    }
    if f.action.as_deref() == Some("scrape") {
        return f.files.map(|_| Received::ScrapeResponse);
    }
    if f.offer.is_some() {
        return Some(Received::Offer {
            info_hash: f.info_hash?,
            peer_id: f.peer_id?,
            offer_id: f.offer_id?,
        });
    }
    if f.answer.is_some() {
        return Some(Received::Answer {
            offer_id: f.offer_id?,
        });
    }
    match (f.action.as_deref(), f.complete, f.incomplete) {
        (Some("announce"), Some(complete), Some(incomplete)) => Some(Received::AnnounceResponse {
            info_hash: f.info_hash?,
            complete,
            incomplete,
        }),
        _ => Some(Received::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_ids_round_trip_in_20_chars() {
        for id in [
            OfferId {
                conn: 0,
                seq: 0,
                idx: 0,
            },
            OfferId {
                conn: 12_345,
                seq: 7,
                idx: 9,
            },
            OfferId {
                conn: MAX_CONN,
                seq: u32::MAX,
                idx: 15,
            },
        ] {
            let s = id.encode(0xab);
            assert_eq!(s.len(), ID_LEN, "{s}");
            assert!(is_plain_id(&s));
            assert_eq!(OfferId::decode(&s, 0xab), Some(id));
            assert_eq!(OfferId::decode(&s, 0xac), None, "another run's id");
        }
        let a = OfferId {
            conn: 1,
            seq: 2,
            idx: 3,
        };
        let b = OfferId { idx: 4, ..a };
        assert_eq!(a.announce(), b.announce());
        assert_ne!(a.announce(), OfferId { seq: 3, ..a }.announce());
        for bad in [
            "",
            "wtab",
            "xxab0000001000000023",
            "wtab000000100000002g",
            "wtab0000001000000023x",
        ] {
            assert_eq!(OfferId::decode(bad, 0xab), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_20_plain_chars() {
        assert!(is_plain_id(&peer_id(0xff, 268_435_455)));
        assert!(is_plain_id(&info_hash(0, 999_999)));
        assert!(!is_plain_id("ab\"cdefghijklmnopqrs"));
        assert!(!is_plain_id("é234567890123456789"));
    }

    #[test]
    fn frames_are_json_the_reference_accepts() {
        let sdp = Sdp::new("offer", "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n").unwrap();
        let ids = [
            OfferId {
                conn: 1,
                seq: 1,
                idx: 0,
            }
            .encode(1),
            OfferId {
                conn: 1,
                seq: 1,
                idx: 1,
            }
            .encode(1),
        ];
        let a = Announce {
            info_hash: &info_hash(1, 3),
            peer_id: &peer_id(1, 1),
            event: Event::Started,
            seeder: true,
            offer_ids: &ids,
            sdp: &sdp,
        };
        let v: serde_json::Value = serde_json::from_str(&a.frame()).unwrap();
        assert_eq!(v["offers"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["offers"][1]["offer"]["sdp"],
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"
        );
        assert_eq!(v["left"], 0);
        assert_eq!(v["numwant"], 2);
        let v: serde_json::Value =
            serde_json::from_str(&answer("i", "p", "t", &ids[0], &sdp)).unwrap();
        assert_eq!(v["to_peer_id"], "t");
        assert_eq!(v["answer"]["type"], "offer");
        let v: serde_json::Value =
            serde_json::from_str(&scrape(&["a".into(), "b".into()])).unwrap();
        assert_eq!(v["info_hash"][1], "b");
    }

    #[test]
    fn received_frames_are_classified() {
        let r = parse(
            r#"{"action":"announce","info_hash":"x","complete":1,"incomplete":2,"interval":120}"#,
        );
        assert!(matches!(
            r,
            Some(Received::AnnounceResponse {
                complete: 1,
                incomplete: 2,
                ..
            })
        ));
        let r = parse(
            r#"{"action":"announce","info_hash":"x","peer_id":"p","offer_id":"o","offer":{"type":"offer","sdp":"s"}}"#,
        );
        assert!(matches!(r, Some(Received::Offer { .. })));
        let r = parse(
            r#"{"action":"announce","info_hash":"x","peer_id":"p","offer_id":"o","answer":{"type":"answer","sdp":"s"}}"#,
        );
        assert!(matches!(r, Some(Received::Answer { .. })));
        assert_eq!(
            parse(r#"{"action":"scrape","files":{}}"#),
            Some(Received::ScrapeResponse)
        );
        let r = parse(r#"{"failure reason":"invalid info_hash","action":"announce"}"#);
        assert!(
            matches!(r, Some(Received::Failure { ref reason, info_hash: None }) if reason == "invalid info_hash")
        );
        assert_eq!(parse(r#"{"warning message":"x"}"#), Some(Received::Other));
        assert_eq!(parse("not json"), None);
        assert_eq!(
            parse(r#"{"action":"announce","offer":{},"peer_id":"p"}"#),
            None,
            "no offer_id"
        );
    }
}
