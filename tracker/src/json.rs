//! Writing JSON text by hand for the frames the tracker sends on the message path: quoted and
//! escaped strings, the WebTorrent protocol's latin1 ids, and numbers, appended to a buffer.
//! The escaping is serde_json's, so a field reads the same whichever wrote it.

use std::io::Write;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// How one byte below 0x80 is written inside a JSON string.
fn escape(b: u8) -> Option<&'static [u8]> {
    match b {
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        b'\n' => Some(b"\\n"),
        b'\r' => Some(b"\\r"),
        b'\t' => Some(b"\\t"),
        0x08 => Some(b"\\b"),
        0x0c => Some(b"\\f"),
        _ => None,
    }
}

fn push_control(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(b"\\u00");
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xf)]);
}

/// Appends `s` as a JSON string, quotes included.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match escape(b) {
            Some(e) => out.extend_from_slice(e),
            None => push_control(out, b),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a string whose characters are the given bytes (U+0000..=U+00FF, the WebTorrent
/// protocol's "binary strings"), as a JSON string, quotes included.
pub fn push_latin1(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2 + 2);
    out.push(b'"');
    for &b in bytes {
        if b >= 0x80 {
            // U+0080..=U+00FF in UTF-8.
            out.push(0xc0 | (b >> 6));
            out.push(0x80 | (b & 0x3f));
        } else if let Some(e) = escape(b) {
            out.extend_from_slice(e);
        } else if b < 0x20 {
            push_control(out, b);
        } else {
            out.push(b);
        }
    }
    out.push(b'"');
}

/// Appends a number.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    // Writing to a Vec can't fail.
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn latin1_ids_read_back_as_their_bytes() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        push_latin1(&mut out, &bytes);
        let s: String = serde_json::from_slice(&out).expect("valid JSON");
        let back: Vec<u8> = s
            .chars()
            .map(|c| u8::try_from(u32::from(c)).expect("latin1"))
            .collect();
        assert_eq!(back, bytes);
    }

    proptest! {
        #[test]
        fn strings_escape_like_serde_json(s in any::<String>()) {
            let mut out = Vec::new();
            push_str(&mut out, &s);
            prop_assert_eq!(out, serde_json::to_vec(&s).expect("serializes"));
        }
    }
}
