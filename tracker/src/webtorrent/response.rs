//! The JSON the tracker sends WebTorrent clients, shaped as the reference server sends it,
//! appended to a frame being written.

use serde::Serialize;
use serde::ser::SerializeMap;

use super::id::Id20;
use super::request::Failure;
use crate::json;
use crate::swarm::Counts;
use swarmtrack_protocol::InstanceId;

/// The reply to an announce. `tracker_id` is this instance's id, sent as BEP 3's `tracker id`
/// (the reference sends none): it tells a player which instance of the fleet it is on, the
/// WebTorrent counterpart of the native `welcome.instance`. bittorrent-tracker clients keep it
/// and send it back as `trackerid` in their next announces, which the tracker ignores.
pub fn announce(
    out: &mut Vec<u8>,
    info_hash: &Id20,
    counts: Counts,
    interval: u32,
    tracker_id: InstanceId,
) {
    out.extend_from_slice(br#"{"action":"announce","info_hash":"#);
    json::push_latin1(out, &info_hash.0);
    out.extend_from_slice(br#","complete":"#);
    json::push_u64(out, u64::from(counts.complete));
    out.extend_from_slice(br#","incomplete":"#);
    json::push_u64(out, u64::from(counts.incomplete));
    out.extend_from_slice(br#","interval":"#);
    json::push_u64(out, u64::from(interval));
    // Eight hex digits: nothing to escape.
    let _ = std::io::Write::write_fmt(out, format_args!(",\"tracker id\":\"{tracker_id}\"}}"));
}

/// Whether a forwarded frame carries an offer or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// `offer`.
    Offer,
    /// `answer`.
    Answer,
}

/// The start of what an offer's or answer's target receives, up to the SDP object:
/// `{"action":"announce","info_hash":..,"peer_id":..,"offer":`. The signal adds the SDP as
/// sent and the offer id ([`crate::signal::WtPayload::write_frame`]).
pub fn forward_head(info_hash: &Id20, peer_id: &Id20, carries: Carries) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(br#"{"action":"announce","info_hash":"#);
    json::push_latin1(&mut out, &info_hash.0);
    out.extend_from_slice(br#","peer_id":"#);
    json::push_latin1(&mut out, &peer_id.0);
    out.extend_from_slice(match carries {
        Carries::Offer => br#","offer":"#,
        Carries::Answer => br#","answer":"#,
    });
    out
}

/// The reply to a scrape: counts per info hash, keyed by the hash as sent.
pub fn scrape(out: &mut Vec<u8>, files: &[(Id20, Counts)], interval: u32) {
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
    to_json(
        out,
        &Reply {
            action: "scrape",
            files: Files(files),
            flags: Flags {
                min_request_interval: interval,
            },
        },
    );
}

/// A refusal: `failure reason`, with the action and info hash when they were read.
pub fn failure(out: &mut Vec<u8>, f: &Failure) {
    #[derive(Serialize)]
    struct Reply<'a> {
        #[serde(rename = "failure reason")]
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        action: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        info_hash: Option<String>,
    }
    to_json(
        out,
        &Reply {
            reason: &f.reason,
            action: f.action.map(|a| a.as_str()),
            info_hash: f.info_hash.map(|h| h.to_string()),
        },
    );
}

fn to_json(out: &mut Vec<u8>, v: &impl Serialize) {
    // These shapes hold only strings and numbers, which always serialize.
    let _ = serde_json::to_writer(out, v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::FailureKind;
    use crate::webtorrent::request::Action;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> serde_json::Value {
        let mut out = Vec::new();
        f(&mut out);
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn shapes() {
        let ih = Id20([b'i'; 20]);
        let counts = Counts {
            complete: 1,
            incomplete: 2,
            downloaded: 3,
        };
        assert_eq!(
            text(|o| announce(o, &ih, counts, 120, InstanceId(0x1a2b_3c4d))),
            serde_json::json!({"action":"announce","info_hash":"iiiiiiiiiiiiiiiiiiii","complete":1,"incomplete":2,"interval":120,"tracker id":"1a2b3c4d"})
        );
        let mut head = forward_head(&ih, &Id20([0xe9; 20]), Carries::Offer);
        head.extend_from_slice(br#"{"type":"offer","sdp":"v=0\r\n"},"offer_id":"o"}"#);
        let v: serde_json::Value = serde_json::from_slice(&head).expect("json");
        assert_eq!(v["peer_id"], "\u{e9}".repeat(20));
        assert_eq!(v["offer"]["sdp"], "v=0\r\n");
        let mut f = Failure::new(FailureKind::BadId, "invalid peer_id");
        f.action = Some(Action::Announce);
        f.info_hash = Some(ih);
        assert_eq!(
            text(|o| failure(o, &f)),
            serde_json::json!({"failure reason":"invalid peer_id","action":"announce","info_hash":"iiiiiiiiiiiiiiiiiiii"})
        );
        let v = text(|o| scrape(o, &[(ih, Counts::default())], 120));
        assert_eq!(
            v["files"]["iiiiiiiiiiiiiiiiiiii"],
            serde_json::json!({"complete":0,"incomplete":0,"downloaded":0})
        );
    }
}
