//! The JSON the tracker sends WebTorrent clients, shaped as the reference server sends it.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;

use super::id::Id20;
use super::request::Failure;
use super::swarms::Counts;

/// The reply to an announce. `tracker_id` is this instance's id, sent as BEP 3's `tracker id`
/// (the reference sends none): it tells a player which instance of the fleet it is on, the
/// WebTorrent counterpart of the native `welcome.instance`. bittorrent-tracker clients keep it
/// and send it back as `trackerid` in their next announces, which the tracker ignores.
pub fn announce(info_hash: &Id20, counts: Counts, interval: u32, tracker_id: &str) -> String {
    #[derive(Serialize)]
    struct Reply<'a> {
        action: &'static str,
        info_hash: &'a str,
        complete: u32,
        incomplete: u32,
        interval: u32,
        #[serde(rename = "tracker id")]
        tracker_id: &'a str,
    }
    to_json(&Reply {
        action: "announce",
        info_hash: &info_hash.to_string(),
        complete: counts.complete,
        incomplete: counts.incomplete,
        interval,
        tracker_id,
    })
}

/// What an offer's or an answer's target receives: the SDP object byte for byte, and who
/// sent it.
#[derive(Serialize)]
pub struct Forward<'a> {
    action: &'static str,
    info_hash: &'a str,
    peer_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offer: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'a RawValue>,
    offer_id: &'a str,
}

impl<'a> Forward<'a> {
    /// An offer from `peer_id`.
    pub fn offer(
        info_hash: &'a str,
        peer_id: &'a str,
        offer: &'a RawValue,
        offer_id: &'a str,
    ) -> Self {
        Self {
            action: "announce",
            info_hash,
            peer_id,
            offer: Some(offer),
            answer: None,
            offer_id,
        }
    }

    /// An answer from `peer_id`.
    pub fn answer(
        info_hash: &'a str,
        peer_id: &'a str,
        answer: &'a RawValue,
        offer_id: &'a str,
    ) -> Self {
        Self {
            action: "announce",
            info_hash,
            peer_id,
            offer: None,
            answer: Some(answer),
            offer_id,
        }
    }

    /// The frame's text.
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// The reply to a scrape: counts per info hash, keyed by the hash as sent.
pub fn scrape(files: &[(Id20, Counts)], interval: u32) -> String {
    struct Files<'a>(&'a [(Id20, Counts)]);
    impl Serialize for Files<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            #[derive(Serialize)]
            struct File {
                complete: u32,
                incomplete: u32,
                downloaded: u64,
            }
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (hash, c) in self.0 {
                map.serialize_entry(
                    &hash.to_string(),
                    &File {
                        complete: c.complete,
                        incomplete: c.incomplete,
                        downloaded: c.downloaded,
                    },
                )?;
            }
            map.end()
        }
    }
    #[derive(Serialize)]
    struct Flags {
        min_request_interval: u32,
    }
    #[derive(Serialize)]
    struct Reply<'a> {
        action: &'static str,
        files: Files<'a>,
        flags: Flags,
    }
    to_json(&Reply {
        action: "scrape",
        files: Files(files),
        flags: Flags {
            min_request_interval: interval,
        },
    })
}

/// A refusal: `failure reason`, with the action and info hash when they were read.
pub fn failure(f: &Failure) -> String {
    #[derive(Serialize)]
    struct Reply<'a> {
        #[serde(rename = "failure reason")]
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        action: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        info_hash: Option<String>,
    }
    to_json(&Reply {
        reason: &f.reason,
        action: f.action.map(|a| a.as_str()),
        info_hash: f.info_hash.map(|h| h.to_string()),
    })
}

fn to_json(v: &impl Serialize) -> String {
    // These shapes hold only strings, numbers and already-valid raw JSON, which always
    // serialize; an empty frame is never sent (the caller skips it).
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webtorrent::request::{Action, FailureKind};

    #[test]
    fn shapes() {
        let ih = Id20([b'i'; 20]);
        let v: serde_json::Value = serde_json::from_str(&announce(
            &ih,
            Counts {
                complete: 1,
                incomplete: 2,
                downloaded: 3,
            },
            120,
            "1a2b3c4d",
        ))
        .expect("json");
        assert_eq!(
            v,
            serde_json::json!({"action":"announce","info_hash":"iiiiiiiiiiiiiiiiiiii","complete":1,"incomplete":2,"interval":120,"tracker id":"1a2b3c4d"})
        );
        let raw = RawValue::from_string(r#"{"type":"offer","sdp":"v=0\r\n"}"#.into()).expect("raw");
        let text = Forward::offer("h", "p", &raw, "o").to_json();
        assert_eq!(
            text,
            r#"{"action":"announce","info_hash":"h","peer_id":"p","offer":{"type":"offer","sdp":"v=0\r\n"},"offer_id":"o"}"#
        );
        let mut f = Failure::new(FailureKind::BadId, "invalid peer_id");
        f.action = Some(Action::Announce);
        f.info_hash = Some(ih);
        let v: serde_json::Value = serde_json::from_str(&failure(&f)).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"failure reason":"invalid peer_id","action":"announce","info_hash":"iiiiiiiiiiiiiiiiiiii"})
        );
        let v: serde_json::Value =
            serde_json::from_str(&scrape(&[(ih, Counts::default())], 120)).expect("json");
        assert_eq!(
            v["files"]["iiiiiiiiiiiiiiiiiiii"],
            serde_json::json!({"complete":0,"incomplete":0,"downloaded":0})
        );
    }
}
