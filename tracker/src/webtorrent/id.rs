//! The protocol's 20-character "binary" strings (`info_hash`, `peer_id`, `offer_id`) and the
//! swarm key an info hash maps to.
//!
//! Clients put 20 raw bytes in a JSON string, one character per byte (latin1), so every
//! character is at most U+00FF. Anything else is refused, never truncated: two different ids
//! must never map to the same bytes.

use std::fmt;
use std::sync::Arc;

/// A 20-byte id, as sent: 20 characters of at most U+00FF.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id20(pub [u8; 20]);

/// Why a string is not an [`Id20`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not 20 characters.
    #[error("must be 20 characters, not {0}")]
    Length(usize),
    /// A character above U+00FF.
    #[error("must hold only characters up to U+00FF")]
    NotLatin1,
}

impl Id20 {
    /// Parses the string form.
    ///
    /// # Errors
    /// [`IdError`] when it isn't exactly 20 characters of at most U+00FF.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let mut out = [0u8; 20];
        let mut n = 0;
        for c in s.chars() {
            let byte = u8::try_from(u32::from(c)).map_err(|_| IdError::NotLatin1)?;
            if n < 20 {
                out[n] = byte;
            }
            n += 1;
        }
        if n != 20 {
            return Err(IdError::Length(n));
        }
        Ok(Self(out))
    }

    /// Appends the string form (one character per byte) to `out`.
    pub fn push_to(&self, out: &mut String) {
        out.extend(self.0.iter().map(|&b| char::from(b)));
    }
}

impl fmt::Display for Id20 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(40);
        self.push_to(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Id20 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Marks WebTorrent swarm keys. Native swarm ids may not hold control characters, so no
/// native id can name a WebTorrent swarm, and the two protocols' viewers of the same
/// video id never mix.
const KEY_PREFIX: &str = "wt\u{1f}";

/// The swarm key of an info hash: the prefix and the hash in hex. It names the swarm in the
/// local index, in Redis and on the relay hop.
pub fn swarm_key(info_hash: &Id20) -> Arc<str> {
    let mut s = String::with_capacity(KEY_PREFIX.len() + 40);
    s.push_str(KEY_PREFIX);
    for b in info_hash.0 {
        s.push(hex_digit(b >> 4));
        s.push(hex_digit(b & 0xf));
    }
    s.into()
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
}

/// Packs an offer's id and its offerer's peer id into a signal's `sid`, so the target's
/// session can check the answer without asking anyone: 40 characters of at most U+00FF.
pub fn offer_sid(offer_id: &Id20, offerer: &Id20) -> Box<str> {
    let mut s = String::with_capacity(80);
    offer_id.push_to(&mut s);
    offerer.push_to(&mut s);
    s.into()
}

/// Unpacks [`offer_sid`]; `None` for anything else.
pub fn parse_offer_sid(sid: &str) -> Option<(Id20, Id20)> {
    let split = sid.char_indices().nth(20).map(|(i, _)| i)?;
    let (a, b) = sid.split_at(split);
    Some((Id20::parse(a).ok()?, Id20::parse(b).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_exactly_twenty_latin1_characters() {
        let ok = "\u{0}\u{ff}abcdefghijklmnopqr";
        let id = Id20::parse(ok).expect("valid");
        assert_eq!(id.0[0], 0);
        assert_eq!(id.0[1], 0xff);
        assert_eq!(id.to_string(), ok);
        assert_eq!(Id20::parse(&"a".repeat(19)), Err(IdError::Length(19)));
        assert_eq!(Id20::parse(&"a".repeat(21)), Err(IdError::Length(21)));
        assert_eq!(Id20::parse(""), Err(IdError::Length(0)));
        // 20 characters, one of them outside latin1: refused, not truncated to a byte.
        let wide = format!("{}\u{100}", "a".repeat(19));
        assert_eq!(Id20::parse(&wide), Err(IdError::NotLatin1));
        let emoji = format!("{}\u{1f600}", "a".repeat(19));
        assert_eq!(Id20::parse(&emoji), Err(IdError::NotLatin1));
    }

    #[test]
    fn swarm_keys_are_hex_and_reserved() {
        let key = swarm_key(&Id20([0xab; 20]));
        assert_eq!(key.len(), 43);
        assert!(key.starts_with("wt\u{1f}abab"));
        assert!(key.chars().any(char::is_control));
    }

    #[test]
    fn offer_sids_round_trip() {
        let offer = Id20::parse("\u{ff}ffer_id_is_20_chars").expect("valid");
        let peer = Id20::parse(
            "-WW0001-\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
        )
        .expect("valid");
        let sid = offer_sid(&offer, &peer);
        assert_eq!(parse_offer_sid(&sid), Some((offer, peer)));
        assert_eq!(parse_offer_sid("short"), None);
    }
}
