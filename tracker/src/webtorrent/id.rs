//! The protocol's 20-character "binary" strings (`info_hash`, `peer_id`, `offer_id`) and the
//! swarm key an info hash maps to.
//!
//! Clients put 20 raw bytes in a JSON string, one character per byte (latin1), so every
//! character is at most U+00FF. Anything else is refused, never truncated: two different ids
//! must never map to the same bytes.

use std::fmt;

use crate::swarm_key::{WEBTORRENT_KEY_LEN, webtorrent_key};

/// A 20-byte id, as sent: 20 characters of at most U+00FF.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id20(pub [u8; 20]);

/// The code point of the escape after a backslash (`rest` starts after it) and the bytes it
/// took, the backslash included.
fn escape(rest: &[u8]) -> Option<(u32, usize)> {
    let simple = |c: u8| (u32::from(c), 2);
    match rest.first()? {
        b'u' => {
            let mut code = 0;
            for &h in rest.get(1..5)? {
                let digit = match h {
                    b'0'..=b'9' => h - b'0',
                    b'a'..=b'f' => h - b'a' + 10,
                    b'A'..=b'F' => h - b'A' + 10,
                    _ => return None,
                };
                code = code << 4 | u32::from(digit);
            }
            Some((code, 6))
        }
        b'b' => Some(simple(0x08)),
        b'f' => Some(simple(0x0c)),
        b'n' => Some(simple(b'\n')),
        b'r' => Some(simple(b'\r')),
        b't' => Some(simple(b'\t')),
        &other => Some(simple(other)),
    }
}

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

    /// Parses a JSON string token (quotes included, already checked as JSON) without building
    /// the string: ids are mostly escapes and two-byte characters.
    ///
    /// # Errors
    /// [`IdError`] when it isn't exactly 20 characters of at most U+00FF.
    pub fn from_json(token: &str) -> Result<Self, IdError> {
        let inner = token
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(token)
            .as_bytes();
        let mut out = [0u8; 20];
        let mut n = 0;
        let mut i = 0;
        // Random ids (aquatic_ws_load_test's, any client's) are half two-byte characters and
        // half ASCII in no order: a branch on which one mispredicts every other character,
        // and this was a fifth of the tracker's CPU under the load test. Both are decoded
        // without a branch; only escapes (control characters, `"` and `\`) and errors leave
        // the straight line.
        while n < 20 {
            let Some(&b) = inner.get(i) else { break };
            if b == b'\\' {
                break;
            }
            let next = inner.get(i + 1).copied().unwrap_or(0);
            let wide = b >> 7; // 1 for a lead byte
            // A lead byte must be 0xC2 or 0xC3 (U+0080..=U+00FF); the slow path says why not.
            if wide == 1 && b & 0xfe != 0xc2 {
                break;
            }
            let two = ((b & 0x03) << 6) | (next & 0x3f);
            out[n] = if wide == 1 { two } else { b };
            n += 1;
            i += 1 + usize::from(wide);
        }
        if n == 20 && i == inner.len() {
            return Ok(Self(out));
        }
        while let Some(&b) = inner.get(i) {
            let (code, used) = match b {
                b'\\' => escape(&inner[i + 1..]).ok_or(IdError::NotLatin1)?,
                0..0x80 => (u32::from(b), 1),
                // U+0080..=U+00FF take two bytes: 0xC2 or 0xC3, then a continuation byte.
                0xc2 | 0xc3 => {
                    let next = inner.get(i + 1).ok_or(IdError::NotLatin1)?;
                    ((u32::from(b & 0x1f) << 6) | u32::from(next & 0x3f), 2)
                }
                _ => return Err(IdError::NotLatin1),
            };
            let byte = u8::try_from(code).map_err(|_| IdError::NotLatin1)?;
            if let Some(slot) = out.get_mut(n) {
                *slot = byte;
            }
            n += 1;
            i += used;
        }
        if n != 20 {
            return Err(IdError::Length(n));
        }
        Ok(Self(out))
    }

    /// The key of the swarm this info hash names, written into `buf`.
    pub fn swarm_key<'b>(&self, buf: &'b mut [u8; WEBTORRENT_KEY_LEN]) -> &'b str {
        webtorrent_key(&self.0, buf)
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
    fn json_tokens_parse_like_their_strings() {
        let bytes: Vec<u8> = (0..=255).collect();
        for chunk in bytes.chunks(20).filter(|c| c.len() == 20) {
            let text: String = chunk.iter().map(|&b| char::from(b)).collect();
            let token = serde_json::to_string(&text).expect("json");
            assert_eq!(Id20::from_json(&token), Id20::parse(&text), "{token}");
            let mut spelled = String::from("\"");
            for &b in chunk {
                spelled.push_str(&format!("\\u{b:04x}"));
            }
            spelled.push('"');
            assert_eq!(
                Id20::from_json(&spelled).map(|i| i.0.to_vec()),
                Ok(chunk.to_vec())
            );
        }
        assert_eq!(
            Id20::from_json(r#""\ud83d\ude00aaaaaaaaaaaaaaaaaa""#),
            Err(IdError::NotLatin1)
        );
        assert_eq!(Id20::from_json(r#""short""#), Err(IdError::Length(5)));
    }

    #[test]
    fn random_ids_parse_like_their_strings() {
        // Random bytes mix ASCII, two-byte characters and escapes in any order, as the load
        // test's ids do; lengths around 20 check the count on both paths.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20_000 {
            let len = 18 + round % 5;
            let text: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from((x >> 24) as u8)
                })
                .collect();
            let token = serde_json::to_string(&text).expect("json");
            assert_eq!(Id20::from_json(&token), Id20::parse(&text), "{token}");
        }
        let wide = serde_json::to_string(&format!("{}\u{100}", "\u{e9}".repeat(19))).expect("json");
        assert_eq!(Id20::from_json(&wide), Err(IdError::NotLatin1));
    }
}
