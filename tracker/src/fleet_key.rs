//! The fleet key: what lets a tracker trust what it reads from Redis.
//!
//! Redis is shared state any client with network access to it can write. Everything one tracker
//! hands another through it (relay batches, swarm members) carries an HMAC-SHA256 tag made with
//! the fleet key, and a reader drops whatever doesn't verify. Keys rotate without downtime: a
//! tracker signs with the current key and accepts the current and the previous one, so a fleet
//! is rolled over in two steps (every instance gets the new key as `previous`, then as
//! `current`), never refusing a genuine peer in between.
//!
//! Tags are truncated to 128 bits (as RFC 4868 allows for HMAC-SHA256): that is ample against
//! forgery and keeps a signed member short in a sorted set.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of a tag.
pub(crate) const TAG_LEN: usize = 16;

/// A truncated HMAC-SHA256 tag.
pub(crate) type Tag = [u8; TAG_LEN];

/// Shortest key accepted, bytes: a key is meant to be random (`openssl rand -hex 32`), and a
/// short one is a typo or a password.
pub(crate) const MIN_KEY_LEN: usize = 32;

/// Why a fleet key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FleetKeyError {
    /// Shorter than [`MIN_KEY_LEN`].
    #[error(
        "the fleet key {which} is {len} bytes; at least {MIN_KEY_LEN} are needed (e.g. `openssl rand -hex 32`)"
    )]
    TooShort {
        /// `current` or `previous`.
        which: &'static str,
        /// Its length.
        len: usize,
    },
}

/// The keys a tracker signs with and accepts.
#[derive(Clone)]
pub(crate) struct FleetKeys {
    current: Hmac<Sha256>,
    previous: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for FleetKeys {
    // Never print key material, even in a debug log of the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetKeys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl FleetKeys {
    /// Keys from their text (used as bytes, as given): `current` signs, both verify.
    pub(crate) fn new(current: &str, previous: Option<&str>) -> Result<Self, FleetKeyError> {
        let previous = match previous.filter(|p| !p.is_empty()) {
            Some(p) => Some(mac_for("previous", p)?),
            None => None,
        };
        Ok(Self {
            current: mac_for("current", current)?,
            previous,
        })
    }

    /// The tag of `parts` under the current key. Each part is length-prefixed, so
    /// `["ab", "c"]` and `["a", "bc"]` sign differently; by convention the first part names
    /// what is signed (`b"batch"`, `b"member"`), so a tag of one kind never passes as another.
    pub(crate) fn sign(&self, parts: &[&[u8]]) -> Tag {
        tag_of(self.current.clone(), parts)
    }

    /// Whether `tag` is the tag of `parts` under the current or the previous key, compared in
    /// constant time.
    pub(crate) fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        if tag.len() != TAG_LEN {
            return false;
        }
        let check = |mac: &Hmac<Sha256>| {
            let mut mac = mac.clone();
            feed(&mut mac, parts);
            mac.verify_truncated_left(tag).is_ok()
        };
        check(&self.current) || self.previous.as_ref().is_some_and(check)
    }
}

/// A tag as text, where it is stored in Redis (22 characters of base64url).
pub(crate) fn encode_tag(tag: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(tag)
}

/// A tag from its text, if it is one.
pub(crate) fn decode_tag(text: &str) -> Option<Tag> {
    let mut tag = [0u8; TAG_LEN];
    match URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut tag) {
        Ok(TAG_LEN) => Some(tag),
        _ => None,
    }
}

fn mac_for(which: &'static str, key: &str) -> Result<Hmac<Sha256>, FleetKeyError> {
    if key.len() < MIN_KEY_LEN {
        return Err(FleetKeyError::TooShort {
            which,
            len: key.len(),
        });
    }
    // HMAC takes a key of any length; the error arm can't happen.
    Hmac::<Sha256>::new_from_slice(key.as_bytes()).map_err(|_| FleetKeyError::TooShort {
        which,
        len: key.len(),
    })
}

fn feed(mac: &mut Hmac<Sha256>, parts: &[&[u8]]) {
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
}

fn tag_of(mut mac: Hmac<Sha256>, parts: &[&[u8]]) -> Tag {
    feed(&mut mac, parts);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&full[..TAG_LEN]);
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn a_tag_verifies_under_its_key_and_not_after_a_change() {
        let keys = FleetKeys::new(A, None).unwrap();
        let tag = keys.sign(&[b"batch", b"payload"]);
        assert!(keys.verify(&[b"batch", b"payload"], &tag));
        assert!(!keys.verify(&[b"batch", b"payloaD"], &tag));
        assert!(!keys.verify(&[b"member", b"payload"], &tag));
        let mut bent = tag;
        bent[0] ^= 1;
        assert!(!keys.verify(&[b"batch", b"payload"], &bent));
        assert!(!keys.verify(&[b"batch", b"payload"], &tag[..15]));
    }

    #[test]
    fn parts_are_framed_so_moving_a_boundary_changes_the_tag() {
        let keys = FleetKeys::new(A, None).unwrap();
        assert_ne!(keys.sign(&[b"ab", b"c"]), keys.sign(&[b"a", b"bc"]));
    }

    #[test]
    fn rotation_accepts_the_previous_key_and_signs_with_the_current() {
        let old = FleetKeys::new(A, None).unwrap();
        let rolling = FleetKeys::new(B, Some(A)).unwrap();
        let other = FleetKeys::new(B, None).unwrap();
        let by_old = old.sign(&[b"batch", b"x"]);
        assert!(rolling.verify(&[b"batch", b"x"], &by_old));
        assert!(!other.verify(&[b"batch", b"x"], &by_old));
        let by_rolling = rolling.sign(&[b"batch", b"x"]);
        assert!(other.verify(&[b"batch", b"x"], &by_rolling));
        assert!(!old.verify(&[b"batch", b"x"], &by_rolling));
    }

    #[test]
    fn short_keys_are_refused_and_keys_are_not_printed() {
        assert_eq!(
            FleetKeys::new("short", None).err(),
            Some(FleetKeyError::TooShort {
                which: "current",
                len: 5
            })
        );
        assert!(FleetKeys::new(A, Some("short")).is_err());
        assert!(FleetKeys::new(A, Some("")).is_ok());
        let shown = format!("{:?}", FleetKeys::new(A, None).unwrap());
        assert!(!shown.contains(A));
    }
}
