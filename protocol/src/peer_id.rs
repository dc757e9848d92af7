//! Server-assigned peer ids: `instance (4) | slot (4) | nonce (8)`, 22 chars of base64url.
//!
//! The instance part routes a signal to the tracker that holds the viewer without any look-up;
//! the slot finds the connection in that tracker's table; the random nonce makes ids unguessable
//! and tells a reused slot from its previous holder.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a peer id on the wire: 16 bytes in base64url without padding.
pub const PEER_ID_LEN: usize = 22;

/// The id of one tracker instance, random at start.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub u32);

impl InstanceId {
    /// A fresh random instance id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for InstanceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        u32::from_str_radix(&s, 16)
            .map(InstanceId)
            .map_err(serde::de::Error::custom)
    }
}

/// A viewer's id: which instance holds it, which slot, and a random nonce.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId([u8; 16]);

impl PeerId {
    /// Builds an id from its parts.
    pub fn new(instance: InstanceId, slot: u32, nonce: u64) -> Self {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&instance.0.to_be_bytes());
        b[4..8].copy_from_slice(&slot.to_be_bytes());
        b[8..].copy_from_slice(&nonce.to_be_bytes());
        Self(b)
    }

    /// The instance that holds this viewer.
    pub fn instance(&self) -> InstanceId {
        InstanceId(u32::from_be_bytes([
            self.0[0], self.0[1], self.0[2], self.0[3],
        ]))
    }

    /// The connection slot inside that instance.
    pub fn slot(&self) -> u32 {
        u32::from_be_bytes([self.0[4], self.0[5], self.0[6], self.0[7]])
    }

    /// The random part that tells this viewer from earlier holders of the slot.
    pub fn nonce(&self) -> u64 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&self.0[8..]);
        u64::from_be_bytes(n)
    }

    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// An id from its raw 16 bytes, as [`PeerId::as_bytes`] gives them (the trackers' batch
    /// format carries ids this way).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Parses the 22-character wire form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != PEER_ID_LEN {
            return None;
        }
        let mut b = [0u8; 16];
        match URL_SAFE_NO_PAD.decode_slice(s.as_bytes(), &mut b) {
            Ok(16) => Some(Self(b)),
            _ => None,
        }
    }

    /// Writes the wire form into a stack buffer, so encoding never allocates.
    /// The wire form: 22 characters of base64url, as ASCII bytes.
    pub fn encode(&self) -> [u8; PEER_ID_LEN] {
        let mut out = [0u8; PEER_ID_LEN];
        // 16 bytes always encode to exactly 22 characters.
        let _ = URL_SAFE_NO_PAD.encode_slice(self.0, &mut out);
        out
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let enc = self.encode();
        // base64url output is ASCII.
        f.write_str(std::str::from_utf8(&enc).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let enc = self.encode();
        let text = std::str::from_utf8(&enc).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        PeerId::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid peer id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parts_and_text_round_trip(instance: u32, slot: u32, nonce: u64) {
            let id = PeerId::new(InstanceId(instance), slot, nonce);
            let text = id.to_string();
            prop_assert_eq!(text.len(), PEER_ID_LEN);
            let back = PeerId::parse(&text).ok_or_else(|| TestCaseError::fail("no parse"))?;
            prop_assert_eq!(back, id);
            prop_assert_eq!(back.instance(), InstanceId(instance));
            prop_assert_eq!(back.slot(), slot);
            prop_assert_eq!(back.nonce(), nonce);
            prop_assert_eq!(PeerId::from_bytes(*id.as_bytes()), id);
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = PeerId::parse(&s);
        }
    }

    #[test]
    fn rejects_wrong_lengths_and_alphabet() {
        assert!(PeerId::parse("").is_none());
        assert!(PeerId::parse("AAAAAAAAAAAAAAAAAAAAA").is_none()); // 21
        assert!(PeerId::parse("AAAAAAAAAAAAAAAAAAAAAAA").is_none()); // 23
        assert!(PeerId::parse("AAAAAAAAAAAAAAAAAAAA+/").is_none()); // not url-safe
    }
}
