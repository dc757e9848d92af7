//! Members as written in a swarm's sorted set: `<peer id>.<tag>`, the tag the fleet key's HMAC
//! over the set's key and the peer id, and their verification when read back.

use crate::fleet_key::{FleetKeys, decode_tag, encode_tag};
use crate::metrics::{DirectorySkip, Shard};
use swarmtrack_protocol::{InstanceId, PeerId};

/// The signed member of `peer` in the set `key` (its bare id without keys:
/// `redis.allow_unsigned`).
pub(super) fn member(keys: Option<&FleetKeys>, key: &str, peer: PeerId) -> String {
    let id = peer.to_string();
    match keys {
        Some(keys) => {
            let tag = keys.sign(&[b"member", key.as_bytes(), id.as_bytes()]);
            format!("{id}.{}", encode_tag(&tag))
        }
        None => id,
    }
}

/// What a member read from the set `key` is (without keys, any peer id is taken).
fn verify_member(keys: Option<&FleetKeys>, key: &str, text: &str) -> Result<PeerId, DirectorySkip> {
    let Some(keys) = keys else {
        let id = text.split_once('.').map_or(text, |(id, _)| id);
        return PeerId::parse(id).ok_or(DirectorySkip::Unsigned);
    };
    let (id, tag) = text.split_once('.').ok_or(DirectorySkip::Unsigned)?;
    let peer = PeerId::parse(id).ok_or(DirectorySkip::Unsigned)?;
    let tag = decode_tag(tag).ok_or(DirectorySkip::BadSignature)?;
    if keys.verify(&[b"member", key.as_bytes(), id.as_bytes()], &tag) {
        Ok(peer)
    } else {
        Err(DirectorySkip::BadSignature)
    }
}

/// The members of another instance in a sample read from `key`, verified; the rest skipped
/// and counted.
pub(super) fn verify_sample(
    keys: Option<&FleetKeys>,
    key: &str,
    instance: InstanceId,
    sampled: &[String],
    metrics: &Shard,
) -> Vec<PeerId> {
    let mut out: Vec<PeerId> = Vec::with_capacity(sampled.len());
    for text in sampled {
        match verify_member(keys, key, text) {
            // This instance's members come from the local index, fresher and first. The same
            // peer may be there twice during a key rotation (signed under each key).
            Ok(peer) if peer.instance() == instance || out.contains(&peer) => {}
            Ok(peer) => out.push(peer),
            Err(reason) => metrics.directory_skipped(reason, 1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn members_verify_in_their_own_set_only() {
        let keys = FleetKeys::new(KEY, None).unwrap();
        let peer = PeerId::new(InstanceId(7), 3, 99);
        let m = member(Some(&keys), "st:swarm:{v}", peer);
        assert_eq!(m.len(), 22 + 1 + 22);
        assert_eq!(verify_member(Some(&keys), "st:swarm:{v}", &m), Ok(peer));
        assert_eq!(
            verify_member(Some(&keys), "st:swarm:{w}", &m),
            Err(DirectorySkip::BadSignature),
            "moved to another swarm"
        );
        assert_eq!(
            verify_member(Some(&keys), "st:swarm:{v}", &peer.to_string()),
            Err(DirectorySkip::Unsigned)
        );
        let other = PeerId::new(InstanceId(7), 4, 99).to_string();
        let forged = format!("{other}.{}", &m[23..]);
        assert_eq!(
            verify_member(Some(&keys), "st:swarm:{v}", &forged),
            Err(DirectorySkip::BadSignature)
        );
        assert_eq!(
            verify_member(Some(&keys), "st:swarm:{v}", &format!("{peer}.short")),
            Err(DirectorySkip::BadSignature)
        );
        let stranger = FleetKeys::new("fedcba9876543210fedcba9876543210", None).unwrap();
        assert_eq!(
            verify_member(Some(&stranger), "st:swarm:{v}", &m),
            Err(DirectorySkip::BadSignature)
        );
    }

    #[test]
    fn a_sample_keeps_verified_members_of_other_instances_once() {
        let keys = FleetKeys::new(KEY, None).unwrap();
        let metrics = crate::metrics::Metrics::new();
        let key = "st:swarm:{v}";
        let mine = PeerId::new(InstanceId(1), 1, 1);
        let theirs = PeerId::new(InstanceId(2), 1, 1);
        let sampled = vec![
            member(Some(&keys), key, mine),
            member(Some(&keys), key, theirs),
            member(Some(&keys), key, theirs),
            theirs.to_string(),
            "junk".to_string(),
            format!(
                "{}.AAAAAAAAAAAAAAAAAAAAAA",
                PeerId::new(InstanceId(3), 1, 1)
            ),
        ];
        let got = verify_sample(Some(&keys), key, InstanceId(1), &sampled, metrics.shared());
        assert_eq!(got, vec![theirs]);
        let text = metrics.render();
        assert!(text.contains(r#"tracker_directory_skipped_total{reason="unsigned"} 2"#));
        assert!(text.contains(r#"tracker_directory_skipped_total{reason="bad_signature"} 1"#));
    }
}
