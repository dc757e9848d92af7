//! Parsing one client frame into a [`Request`], or a [`Failure`] saying what is wrong.
//!
//! The frame is parsed once, into borrowed raw values; each field is then checked for its
//! type on its own, so a wrong type gets a failure naming the field. Offers and answers stay
//! raw JSON: the tracker forwards them byte for byte and never decodes their SDP.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::id::{Id20, IdError};
use crate::metrics::FailureKind;

/// The two actions; also what a failure reply names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `announce`, with or without offers, or carrying an answer.
    Announce,
    /// `scrape`.
    Scrape,
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Announce => "announce",
            Action::Scrape => "scrape",
        }
    }
}

/// The announce `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `started`: the peer joins the swarm.
    Started,
    /// `update`, `paused`, `empty`, or no event: a periodic announce.
    Update,
    /// `completed`: the peer became a seeder.
    Completed,
    /// `stopped`: the peer leaves the swarm.
    Stopped,
}

/// One offer of an announce.
#[derive(Debug)]
pub struct Offer<'a> {
    /// The offer's id, chosen by the offerer.
    pub offer_id: Id20,
    /// The `{type, sdp}` object, as sent.
    pub offer: &'a RawValue,
}

/// The answer an announce carries.
#[derive(Debug)]
pub struct Answer<'a> {
    /// The offerer.
    pub to_peer_id: Id20,
    /// The offer answered.
    pub offer_id: Id20,
    /// The `{type, sdp}` object, as sent.
    pub answer: &'a RawValue,
}

/// A checked announce.
#[derive(Debug)]
pub struct Announce<'a> {
    /// The swarm.
    pub info_hash: Id20,
    /// The announcer, as it names itself.
    pub peer_id: Id20,
    /// What happened.
    pub event: Event,
    /// `left` is 0: the peer has everything.
    pub seeder: bool,
    /// The most offers to forward, if the client said.
    pub numwant: Option<usize>,
    /// Offers to forward to other peers.
    pub offers: Vec<Offer<'a>>,
    /// An answer to forward to its offerer.
    pub answer: Option<Answer<'a>>,
}

/// A checked request.
#[derive(Debug)]
pub enum Request<'a> {
    /// `announce`.
    Announce(Announce<'a>),
    /// `scrape` of these info hashes (at least one).
    Scrape(Vec<Id20>),
}

/// A refused request: the reply's `failure reason`, and what to name in it.
#[derive(Debug)]
pub struct Failure {
    /// For the metric.
    pub kind: FailureKind,
    /// The `failure reason` text.
    pub reason: Cow<'static, str>,
    /// The action, when it was read.
    pub action: Option<Action>,
    /// The info hash, when it was read.
    pub info_hash: Option<Id20>,
}

impl Failure {
    /// A failure of `kind` with no action or info hash known yet.
    pub fn new(kind: FailureKind, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            action: None,
            info_hash: None,
        }
    }

    fn naming(mut self, action: Action, info_hash: Option<Id20>) -> Self {
        self.action = Some(action);
        self.info_hash = info_hash;
        self
    }
}

/// The limits a request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Most offers in one announce.
    pub max_offers: usize,
    /// Most info hashes in one scrape.
    pub max_scrape_hashes: usize,
}

/// The frame's fields, unparsed. Unknown fields (`uploaded`, `trackerid`, ...) are ignored.
#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow)]
    action: Option<&'a RawValue>,
    #[serde(borrow)]
    info_hash: Option<&'a RawValue>,
    #[serde(borrow)]
    peer_id: Option<&'a RawValue>,
    #[serde(borrow)]
    to_peer_id: Option<&'a RawValue>,
    #[serde(borrow)]
    offer_id: Option<&'a RawValue>,
    // Read in the same pass as the rest: an announce is mostly its offers.
    #[serde(borrow, default)]
    offers: Option<RawOffers<'a>>,
    #[serde(borrow)]
    answer: Option<&'a RawValue>,
    #[serde(borrow)]
    numwant: Option<&'a RawValue>,
    #[serde(borrow)]
    left: Option<&'a RawValue>,
    #[serde(borrow)]
    event: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawOffer<'a> {
    #[serde(borrow)]
    offer_id: Option<&'a RawValue>,
    #[serde(borrow)]
    offer: Option<&'a RawValue>,
}

/// `offers` as sent: a list of objects, or anything else (refused with a reason naming it,
/// rather than failing the whole frame).
enum RawOffers<'a> {
    List(Vec<Option<RawOffer<'a>>>),
    NotAList,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawOffers<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let offers: RawOffers<'de> = d.deserialize_any(AnyOr::<OffersVisitor>::default())?;
        Ok(offers)
    }
}

/// One element of `offers`: an object, or `None` for anything else.
struct Item<'a>(Option<RawOffer<'a>>);

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyOr::<ItemVisitor>::default())
    }
}

/// What a list or a map becomes; any other value becomes `Self::other()`.
trait Shape<'de>: Sized {
    type Value;
    fn other() -> Self::Value;
    fn seq<A: serde::de::SeqAccess<'de>>(seq: A) -> Result<Self::Value, A::Error>;
    fn map<A: serde::de::MapAccess<'de>>(map: A) -> Result<Self::Value, A::Error>;
}

struct OffersVisitor;

impl<'de> Shape<'de> for OffersVisitor {
    type Value = RawOffers<'de>;
    fn other() -> RawOffers<'de> {
        RawOffers::NotAList
    }
    fn seq<A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<RawOffers<'de>, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(Item(o)) = seq.next_element()? {
            list.push(o);
        }
        Ok(RawOffers::List(list))
    }
    fn map<A: serde::de::MapAccess<'de>>(map: A) -> Result<RawOffers<'de>, A::Error> {
        drain_map(map)?;
        Ok(RawOffers::NotAList)
    }
}

struct ItemVisitor;

impl<'de> Shape<'de> for ItemVisitor {
    type Value = Item<'de>;
    fn other() -> Item<'de> {
        Item(None)
    }
    fn seq<A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<Item<'de>, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Item(None))
    }
    fn map<A: serde::de::MapAccess<'de>>(map: A) -> Result<Item<'de>, A::Error> {
        let offer = RawOffer::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(Item(Some(offer)))
    }
}

fn drain_map<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map
        .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
        .is_some()
    {}
    Ok(())
}

/// A visitor that takes any JSON value, handing lists and maps to `S`.
struct AnyOr<S>(std::marker::PhantomData<S>);

impl<S> Default for AnyOr<S> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<'de, S: Shape<'de>> serde::de::Visitor<'de> for AnyOr<S> {
    type Value = S::Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<S::Value, E> {
        Ok(S::other())
    }
    fn visit_i64<E>(self, _: i64) -> Result<S::Value, E> {
        Ok(S::other())
    }
    fn visit_u64<E>(self, _: u64) -> Result<S::Value, E> {
        Ok(S::other())
    }
    fn visit_f64<E>(self, _: f64) -> Result<S::Value, E> {
        Ok(S::other())
    }
    fn visit_str<E>(self, _: &str) -> Result<S::Value, E> {
        Ok(S::other())
    }
    fn visit_unit<E>(self) -> Result<S::Value, E> {
        Ok(S::other())
    }
    fn visit_none<E>(self) -> Result<S::Value, E> {
        Ok(S::other())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<S::Value, A::Error> {
        S::seq(seq)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<S::Value, A::Error> {
        S::map(map)
    }
}

/// Parses and checks one frame.
///
/// # Errors
/// A [`Failure`] for anything malformed, naming the action and info hash when they were read.
pub fn parse<'a>(frame: &'a str, limits: &RequestLimits) -> Result<Request<'a>, Failure> {
    let raw: RawRequest<'a> = serde_json::from_str(frame).map_err(|e| {
        let reason = if e.is_data() {
            "request must be a JSON object".to_string()
        } else {
            format!("invalid JSON: {e}")
        };
        Failure::new(FailureKind::Invalid, reason)
    })?;
    let action = match raw.action.map(string) {
        Some(Some(a)) if a == "announce" => Action::Announce,
        Some(Some(a)) if a == "scrape" => Action::Scrape,
        Some(Some(a)) => {
            return Err(Failure::new(
                FailureKind::Invalid,
                format!("invalid action in WS request: {a}"),
            ));
        }
        _ => {
            return Err(Failure::new(
                FailureKind::Invalid,
                "invalid action in WS request: missing or not a string",
            ));
        }
    };
    match action {
        Action::Announce => announce(&raw, limits).map(Request::Announce),
        Action::Scrape => scrape(&raw, limits)
            .map(Request::Scrape)
            .map_err(|f| f.naming(Action::Scrape, None)),
    }
}

fn announce<'a>(raw: &RawRequest<'a>, limits: &RequestLimits) -> Result<Announce<'a>, Failure> {
    let info_hash = id(raw.info_hash, "info_hash").map_err(|f| f.naming(Action::Announce, None))?;
    let named = |f: Failure| f.naming(Action::Announce, Some(info_hash));
    let peer_id = id(raw.peer_id, "peer_id").map_err(named)?;
    let event = match raw.event.map(string) {
        None => Event::Update,
        Some(Some(e)) => match &*e {
            "started" => Event::Started,
            "completed" => Event::Completed,
            "stopped" => Event::Stopped,
            "update" | "paused" | "empty" | "" => Event::Update,
            _ => return Err(named(invalid("invalid event"))),
        },
        Some(None) => return Err(named(invalid("invalid event"))),
    };
    let numwant = match raw.numwant {
        None => None,
        Some(v) => match serde_json::from_str::<f64>(v.get()) {
            // Saturating float-to-int: a huge numwant is just "as many as offered".
            Ok(n) if n >= 0.0 => Some(n as usize),
            _ => return Err(named(invalid("invalid numwant: must be a number >= 0"))),
        },
    };
    let answer = match raw.answer {
        None => None,
        Some(answer) => {
            let to_peer_id = id(raw.to_peer_id, "to_peer_id").map_err(|mut f| {
                f.reason = format!("{} (required with `answer`)", f.reason).into();
                named(f)
            })?;
            let offer_id = id(raw.offer_id, "offer_id").map_err(|mut f| {
                f.reason = format!("{} (required with `answer`)", f.reason).into();
                named(f)
            })?;
            if !is_object(answer) {
                return Err(named(invalid("invalid answer: must be an object")));
            }
            if has_control(answer) {
                return Err(named(invalid(CONTROL_IN_ANSWER)));
            }
            Some(Answer {
                to_peer_id,
                offer_id,
                answer,
            })
        }
    };
    let offers = match &raw.offers {
        None => Vec::new(),
        Some(v) => offers(v, limits).map_err(named)?,
    };
    Ok(Announce {
        info_hash,
        peer_id,
        event,
        seeder: raw.left.is_some_and(left_is_zero),
        numwant,
        offers,
        answer,
    })
}

fn offers<'a>(v: &RawOffers<'a>, limits: &RequestLimits) -> Result<Vec<Offer<'a>>, Failure> {
    let RawOffers::List(list) = v else {
        return Err(invalid("invalid offers: must be a list"));
    };
    if list.len() > limits.max_offers {
        return Err(Failure::new(
            FailureKind::TooMany,
            format!(
                "too many offers: {}, at most {} are accepted",
                list.len(),
                limits.max_offers
            ),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, o)| {
            let Some(o) = o else {
                return Err(invalid(format!("offers[{i}]: must be an object")));
            };
            let offer_id = id(o.offer_id, "offer_id").map_err(|mut f| {
                f.reason = format!("offers[{i}]: {}", f.reason).into();
                f
            })?;
            match o.offer {
                Some(offer) if is_object(offer) && has_control(offer) => Err(invalid(format!(
                    "offers[{i}]: offer must not contain control characters (CR and LF excepted)"
                ))),
                Some(offer) if is_object(offer) => Ok(Offer { offer_id, offer }),
                _ => Err(invalid(format!("offers[{i}]: offer must be an object"))),
            }
        })
        .collect()
}

const CONTROL_IN_ANSWER: &str =
    "invalid answer: must not contain control characters (CR and LF excepted)";

/// True when an offer or answer object holds a control character but an SDP's line ends: it
/// is forwarded as sent, so refused here, as a native SDP is (docs/ARCHITECTURE.md 3.5).
fn has_control(v: &RawValue) -> bool {
    swarmtrack_protocol::json_has_control(v.get().as_bytes(), true)
}

fn scrape(raw: &RawRequest<'_>, limits: &RequestLimits) -> Result<Vec<Id20>, Failure> {
    let Some(v) = raw.info_hash else {
        return Err(invalid("scrape needs an info_hash (or a list of them)"));
    };
    if let Some(one) = string(v) {
        return Id20::parse(&one)
            .map(|id| vec![id])
            .map_err(|e| bad_id("info_hash", e));
    }
    let list: Vec<&RawValue> = serde_json::from_str(v.get())
        .map_err(|_| invalid("invalid info_hash: must be a string or a list of strings"))?;
    if list.is_empty() {
        return Err(invalid("scrape needs an info_hash (or a list of them)"));
    }
    if list.len() > limits.max_scrape_hashes {
        return Err(Failure::new(
            FailureKind::TooMany,
            format!(
                "too many info hashes: {}, at most {} per scrape",
                list.len(),
                limits.max_scrape_hashes
            ),
        ));
    }
    list.into_iter().map(|h| id(Some(h), "info_hash")).collect()
}

/// A JSON string's value; `None` when the value isn't a string.
/// A JSON string's value; `None` when the value isn't a string.
fn string(v: &RawValue) -> Option<Cow<'_, str>> {
    let token = v.get();
    let inner = token.strip_prefix('"')?.strip_suffix('"')?;
    // Most strings hold no escapes and are borrowed as they are; the rest are unescaped (the
    // token was checked as JSON when the frame was parsed).
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(token).ok().map(Cow::Owned)
}

fn id(v: Option<&RawValue>, name: &'static str) -> Result<Id20, Failure> {
    let Some(token) = v.map(RawValue::get).filter(|t| t.starts_with('"')) else {
        return Err(Failure::new(
            FailureKind::BadId,
            format!("invalid {name}: missing or not a string"),
        ));
    };
    Id20::from_json(token).map_err(|e| bad_id(name, e))
}

fn bad_id(name: &'static str, e: IdError) -> Failure {
    Failure::new(FailureKind::BadId, format!("invalid {name}: {e}"))
}

fn invalid(reason: impl Into<Cow<'static, str>>) -> Failure {
    Failure::new(FailureKind::Invalid, reason)
}

fn is_object(v: &RawValue) -> bool {
    v.get().trim_start().starts_with('{')
}

/// `left` as the reference reads it (`Number(left)`): a number or a numeric string; 0 means
/// a seeder, anything unreadable a leecher.
fn left_is_zero(v: &RawValue) -> bool {
    if let Ok(n) = serde_json::from_str::<f64>(v.get()) {
        return n == 0.0;
    }
    string(v).is_some_and(|s| s.trim().parse::<f64>().is_ok_and(|n| n == 0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_offers: 10,
        max_scrape_hashes: 255,
    };

    fn ih() -> String {
        "i".repeat(20)
    }

    fn fail(frame: &str) -> Failure {
        match parse(frame, &LIMITS) {
            Err(f) => f,
            Ok(r) => panic!("accepted {frame}: {r:?}"),
        }
    }

    #[test]
    fn announce_with_offers() {
        let frame = format!(
            r#"{{"action":"announce","info_hash":"{ih}","peer_id":"{p}","numwant":2,"left":0,"event":"started","uploaded":0,"offers":[{{"offer_id":"{o}","offer":{{"type":"offer","sdp":"v=0\r\n"}}}}]}}"#,
            ih = ih(),
            p = "p".repeat(20),
            o = "o".repeat(20)
        );
        let Ok(Request::Announce(a)) = parse(&frame, &LIMITS) else {
            panic!("not an announce");
        };
        assert_eq!(a.event, Event::Started);
        assert!(a.seeder);
        assert_eq!(a.numwant, Some(2));
        assert_eq!(a.offers.len(), 1);
        assert_eq!(
            a.offers[0].offer.get(),
            r#"{"type":"offer","sdp":"v=0\r\n"}"#
        );
        assert!(a.answer.is_none());
    }

    #[test]
    fn answer_needs_its_ids() {
        let base = format!(
            r#""action":"announce","info_hash":"{}","peer_id":"{}","answer":{{"type":"answer","sdp":"x"}}"#,
            ih(),
            "p".repeat(20)
        );
        let f = fail(&format!("{{{base}}}"));
        assert!(f.reason.contains("to_peer_id"), "{}", f.reason);
        assert_eq!(f.action, Some(Action::Announce));
        assert!(f.info_hash.is_some());
        let f = fail(&format!(r#"{{{base},"to_peer_id":"{}"}}"#, "t".repeat(20)));
        assert!(f.reason.contains("offer_id"), "{}", f.reason);
        let ok = format!(
            r#"{{{base},"to_peer_id":"{}","offer_id":"{}"}}"#,
            "t".repeat(20),
            "o".repeat(20)
        );
        assert!(matches!(
            parse(&ok, &LIMITS),
            Ok(Request::Announce(Announce {
                answer: Some(_),
                ..
            }))
        ));
    }

    #[test]
    fn malformed_requests_fail_with_a_reason() {
        let p = "p".repeat(20);
        let cases = [
            ("{", FailureKind::Invalid),
            ("[1,2]", FailureKind::Invalid),
            ("42", FailureKind::Invalid),
            (r#"{"action":"dance"}"#, FailureKind::Invalid),
            (r#"{"action":7}"#, FailureKind::Invalid),
            (r#"{"action":"announce"}"#, FailureKind::BadId),
            (
                r#"{"action":"announce","info_hash":12}"#,
                FailureKind::BadId,
            ),
            (
                &format!(
                    r#"{{"action":"announce","info_hash":"{}","peer_id":"{p}"}}"#,
                    "x".repeat(19)
                ),
                FailureKind::BadId,
            ),
            (
                &format!(
                    r#"{{"action":"announce","info_hash":"{}","peer_id":"{p}"}}"#,
                    "x".repeat(21)
                ),
                FailureKind::BadId,
            ),
            (
                &format!(
                    r#"{{"action":"announce","info_hash":"{}\u0100","peer_id":"{p}"}}"#,
                    "x".repeat(19)
                ),
                FailureKind::BadId,
            ),
            (
                &format!(
                    r#"{{"action":"announce","info_hash":"{}","peer_id":"{p}","event":"dance"}}"#,
                    ih()
                ),
                FailureKind::Invalid,
            ),
            (
                &format!(
                    r#"{{"action":"announce","info_hash":"{}","peer_id":"{p}","numwant":"x"}}"#,
                    ih()
                ),
                FailureKind::Invalid,
            ),
            (
                &format!(
                    r#"{{"action":"announce","info_hash":"{}","peer_id":"{p}","offers":{{}}}}"#,
                    ih()
                ),
                FailureKind::Invalid,
            ),
            (
                &format!(
                    r#"{{"action":"announce","info_hash":"{}","peer_id":"{p}","offers":[{{"offer_id":"{p}","offer":"sdp"}}]}}"#,
                    ih()
                ),
                FailureKind::Invalid,
            ),
            (r#"{"action":"scrape"}"#, FailureKind::Invalid),
            (
                r#"{"action":"scrape","info_hash":[]}"#,
                FailureKind::Invalid,
            ),
            (
                r#"{"action":"scrape","info_hash":["short"]}"#,
                FailureKind::BadId,
            ),
        ];
        for (frame, kind) in cases {
            let f = fail(frame);
            assert_eq!(f.kind, kind, "{frame}: {}", f.reason);
            assert!(!f.reason.is_empty());
        }
    }

    #[test]
    fn offers_are_bounded() {
        let offer = format!(
            r#"{{"offer_id":"{}","offer":{{"type":"offer","sdp":"x"}}}}"#,
            "o".repeat(20)
        );
        let offers = vec![offer; 11].join(",");
        let f = fail(&format!(
            r#"{{"action":"announce","info_hash":"{}","peer_id":"{}","offers":[{offers}]}}"#,
            ih(),
            "p".repeat(20)
        ));
        assert_eq!(f.kind, FailureKind::TooMany);
        let hashes = vec![format!("\"{}\"", ih()); 256].join(",");
        let f = fail(&format!(r#"{{"action":"scrape","info_hash":[{hashes}]}}"#));
        assert_eq!(f.kind, FailureKind::TooMany);
    }

    #[test]
    fn control_characters_in_offers_and_answers_are_refused_line_ends_pass() {
        // Real browser SDP (shared/fixtures), CRLF line ends and all, as simple-peer sends it.
        let sdp = include_str!("../../../fixtures/firefox-datachannel-offer-complete.sdp");
        let object = |sdp: &str| serde_json::json!({"type": "offer", "sdp": sdp}).to_string();
        let announce = |offer: &str, answer: Option<&str>| {
            let mut frame = serde_json::json!({
                "action": "announce", "info_hash": ih(), "peer_id": "p".repeat(20),
                "offers": [{"offer_id": "o".repeat(20), "offer": "OFFER"}],
            });
            if let Some(a) = answer {
                frame["answer"] = "ANSWER".into();
                frame["to_peer_id"] = "t".repeat(20).into();
                frame["offer_id"] = "q".repeat(20).into();
                frame["offers"] = serde_json::json!([]);
                return frame.to_string().replace("\"ANSWER\"", a);
            }
            frame.to_string().replace("\"OFFER\"", offer)
        };
        let good = object(sdp);
        assert!(good.contains(r"\r\n"));
        assert!(parse(&announce(&good, None), &LIMITS).is_ok());
        assert!(parse(&announce("", Some(&good)), &LIMITS).is_ok());
        for c in ["\u{1}", "\t", "\u{7f}", "\u{9f}", "\0"] {
            let bad = object(&sdp.replacen("a=", &format!("a={c}"), 1));
            for frame in [announce(&bad, None), announce("", Some(&bad))] {
                let f = fail(&frame);
                assert_eq!(f.kind, FailureKind::Invalid, "{c:?}: {}", f.reason);
                assert!(f.reason.contains("control characters"), "{}", f.reason);
            }
        }
    }

    #[test]
    fn scrape_of_one_or_many() {
        let one = format!(r#"{{"action":"scrape","info_hash":"{}"}}"#, ih());
        assert!(matches!(parse(&one, &LIMITS), Ok(Request::Scrape(v)) if v.len() == 1));
        let two = format!(
            r#"{{"action":"scrape","info_hash":["{}","{}"]}}"#,
            ih(),
            "j".repeat(20)
        );
        assert!(matches!(parse(&two, &LIMITS), Ok(Request::Scrape(v)) if v.len() == 2));
    }

    #[test]
    fn escaped_control_characters_in_ids() {
        let frame = format!(
            r#"{{"action":"announce","info_hash":"\u0000\u0001{}","peer_id":"{}","left":"0"}}"#,
            "i".repeat(18),
            "p".repeat(20)
        );
        let Ok(Request::Announce(a)) = parse(&frame, &LIMITS) else {
            panic!("refused");
        };
        assert_eq!(&a.info_hash.0[..2], &[0, 1]);
        assert!(a.seeder);
    }
}
