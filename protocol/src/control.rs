//! Control characters (U+0000-U+001F, U+007F-U+009F) in relayed text: SDP and ICE candidates.
//!
//! Neither ever holds one, but for the line ends of SDP (CRLF, RFC 8866). They are refused
//! because they cost the receivers: a JSON writer escapes each as six bytes (`\u0001`), so a
//! MessagePack SDP full of them is six times larger once relayed to a JSON viewer, and every
//! byte bound downstream (outbox, unsent output) would be a sixth of what it says.
//!
//! Both checks run on the text as it was sent, without unescaping it: a JSON string token
//! (quotes and escapes included; JSON itself refuses raw U+0000-U+001F inside a string, so only
//! escapes and the raw U+007F-U+009F need looking at), or a plain UTF-8 string (MessagePack).

/// True when the plain UTF-8 string `s` holds a control character; CR and LF pass when
/// `line_ends` is set.
pub fn plain_has_control(s: &[u8], line_ends: bool) -> bool {
    let suspect = if line_ends {
        Extremes::<true>::of([s]).suspect()
    } else {
        Extremes::<false>::of([s]).suspect()
    };
    suspect && plain_has_control_exact(s, line_ends)
}

/// True when any of the plain UTF-8 strings holds a control character (CR and LF included):
/// a MessagePack `cands` list, looked at in one pass over all its strings.
pub fn plain_list_has_control<'a, I>(list: I) -> bool
where
    I: IntoIterator<Item = &'a [u8]> + Clone,
{
    Extremes::<false>::of(list.clone()).suspect()
        && list.into_iter().any(|s| plain_has_control_exact(s, false))
}

/// The lowest and the highest byte of some strings (CR and LF passed over when `LINE_ENDS`),
/// in 16 lanes. A string with none of them is within U+0020-U+007E: real SDP and candidates
/// are ASCII, and anything else (a control character, or just UTF-8) goes to the exact scan.
///
/// Min and max of 16-byte windows vectorize into two SSE2 instructions each (and three more
/// for the line ends); a string's tail is one more window, overlapping the one before, and
/// the lanes are folded once for a whole list. Callgrind, 72 captured candidates: 92
/// instructions a candidate checked alone (142 for a plain loop, whose scalar tail dominates
/// at ~80 bytes), fewer within a list.
struct Extremes<const LINE_ENDS: bool> {
    lowest: [u8; 16],
    highest: [u8; 16],
}

impl<const LINE_ENDS: bool> Extremes<LINE_ENDS> {
    fn of<'a>(strings: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut e = Self {
            lowest: [0xff; 16],
            highest: [0; 16],
        };
        for s in strings {
            match s.last_chunk::<16>() {
                Some(last) => {
                    for window in s.as_chunks::<16>().0 {
                        e.add(window);
                    }
                    e.add(last);
                }
                None => {
                    // Shorter than a window: padded with a byte that changes neither.
                    let mut window = [b' '; 16];
                    window[..s.len()].copy_from_slice(s);
                    e.add(&window);
                }
            }
        }
        e
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop, reason = "the form measured to vectorize")]
    fn add(&mut self, window: &[u8; 16]) {
        for i in 0..16 {
            let c = window[i];
            // A line end counts as the highest byte for `lowest`: passed over.
            let line_end = LINE_ENDS & ((c == b'\r') | (c == b'\n'));
            self.lowest[i] = self.lowest[i].min(c | 0u8.wrapping_sub(u8::from(line_end)));
            self.highest[i] = self.highest[i].max(c);
        }
    }

    fn suspect(&self) -> bool {
        let lowest = self.lowest.into_iter().fold(0xff, u8::min);
        let highest = self.highest.into_iter().fold(0, u8::max);
        lowest < 0x20 || highest >= 0x7f
    }
}

fn plain_has_control_exact(s: &[u8], line_ends: bool) -> bool {
    // Over byte pairs: C1 controls are U+0080-U+009F, in UTF-8 the pairs C2 80..=C2 9F.
    let Some((&last, _)) = s.split_last() else {
        return false;
    };
    let (a, b) = (&s[..s.len() - 1], &s[1..]);
    let mut bad = false;
    for i in 0..a.len() {
        bad |= c0_or_del(a[i], line_ends) | ((a[i] == 0xc2) & (b[i] < 0xa0));
    }
    bad | c0_or_del(last, line_ends)
}

/// U+0000-U+001F (but CR and LF when `line_ends`) or U+007F.
#[inline(always)]
fn c0_or_del(c: u8, line_ends: bool) -> bool {
    let line_end = (c == b'\r') | (c == b'\n');
    ((c < 0x20) & !(line_ends & line_end)) | (c == 0x7f)
}

/// True when the JSON string token `token` (valid JSON) holds a control character, raw or
/// escaped; `\r` and `\n` pass when `line_ends` is set.
pub fn json_has_control(token: &[u8], line_ends: bool) -> bool {
    if !line_ends {
        // A candidate (or a whole list of them: outside its strings a JSON list has none of
        // them) has no byte that can start one, escape, DEL or C1 pair, and one SIMD pass
        // (memchr3) says so. Callgrind, `simulator pairs` JSON: 117 instructions a relayed
        // message, where a scan of each unescaped candidate took 247.
        return memchr::memchr3(b'\\', 0x7f, 0xc2, token).is_some()
            && json_has_control_exact(token, false);
    }
    // An SDP has an escape on every line (`\r\n`), so memchr3 would stop every few dozen
    // bytes. One branch-free pass instead finds what might be one, as cheaply as it can: an
    // escape but `\r` and `\n`, a byte from DEL up (C1 controls are among the UTF-8
    // sequences, and real SDP is ASCII). It can be wrong only towards suspicion, and the exact
    // scan below runs only then. `y - b'n'` is 0 or 4 after a backslash that escapes a line
    // end, so OR-ing them leaves nothing outside bit 2 unless another escape is there; the
    // loop vectorizes into about 8 SSE2 instructions per 16 bytes (callgrind: 0.66 instructions a
    // byte, where comparing against a list of the suspect escapes took 2.2).
    let Some((&last, _)) = token.split_last() else {
        return false;
    };
    let (a, b) = (&token[..token.len() - 1], &token[1..]);
    let mut highest = last;
    let mut escapes = 0u8;
    for (&x, &y) in a.iter().zip(b) {
        highest = highest.max(x);
        let backslash = 0u8.wrapping_sub(u8::from(x == b'\\'));
        escapes |= backslash & y.wrapping_sub(b'n');
    }
    (highest >= 0x7f || escapes & !4 != 0) && json_has_control_exact(token, true)
}

fn json_has_control_exact(token: &[u8], line_ends: bool) -> bool {
    let mut at = 0;
    while let Some(i) = memchr::memchr3(b'\\', 0x7f, 0xc2, &token[at..]) {
        let i = at + i;
        match token[i] {
            0x7f => return true,
            0xc2 => {
                if token.get(i + 1).is_some_and(|&b| b < 0xa0) {
                    return true;
                }
                at = i + 1;
            }
            _ => {
                let Some(&e) = token.get(i + 1) else {
                    return false;
                };
                match e {
                    b'n' | b'r' if line_ends => {}
                    b'n' | b'r' | b'b' | b'f' | b't' => return true,
                    b'u' => {
                        let hex = token.get(i + 2..i + 6).unwrap_or_default();
                        let code = std::str::from_utf8(hex)
                            .ok()
                            .and_then(|h| u16::from_str_radix(h, 16).ok());
                        match code {
                            Some(0x0a | 0x0d) if line_ends => {}
                            Some(c) if c < 0x20 || (0x7f..=0x9f).contains(&c) => return true,
                            _ => {}
                        }
                    }
                    _ => {}
                }
                // Past the escaped character, so `\\` isn't read as the start of another.
                at = i + 2;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json(s: &str) -> Vec<u8> {
        serde_json::to_vec(s).expect("a string")
    }

    #[test]
    fn sdp_line_ends_pass_and_nothing_else_does() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n";
        assert!(!plain_has_control(sdp.as_bytes(), true));
        assert!(!json_has_control(&json(sdp), true));
        assert!(plain_has_control(sdp.as_bytes(), false));
        assert!(json_has_control(&json(sdp), false));
        for c in ['\0', '\t', '\u{1}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}'] {
            let s = format!("a=x{c}y\r\n");
            assert!(plain_has_control(s.as_bytes(), true), "{c:?}");
            assert!(json_has_control(&json(&s), true), "{c:?}");
            // The same as a \u escape, which a JSON writer may choose for any character.
            let escaped = format!("\"a=x\\u{:04x}y\"", c as u32);
            assert!(json_has_control(escaped.as_bytes(), true), "{escaped}");
        }
        for ok in ["é", "\u{a0}", "\u{ff}", "日本", "\\", "\"", "/", "\u{2028}"] {
            assert!(!plain_has_control(ok.as_bytes(), false), "{ok:?}");
            assert!(!json_has_control(&json(ok), false), "{ok:?}");
        }
        // A backslash escaped is not the start of an escape.
        assert!(!json_has_control(br#""\\n\\t""#, false));
        assert!(!json_has_control(br#""\u000a\u000D""#, true));
        assert!(json_has_control(br#""\u000a""#, false));
    }

    #[test]
    fn a_list_is_suspect_when_any_of_its_strings_is() {
        let cand = "candidate:1 1 udp 2113937151 192.168.1.2 35486 typ host generation 0";
        let list = |v: &[&'static str]| v.iter().map(|s| s.as_bytes()).collect::<Vec<_>>();
        assert!(!plain_list_has_control(list(&[cand, cand, "", "short"])));
        assert!(plain_list_has_control(list(&[cand, "a\rb"])));
        assert!(plain_list_has_control(list(&[cand, "x\u{85}"])));
        // UTF-8 that isn't a control character makes the list suspect, not refused.
        assert!(!plain_list_has_control(list(&[cand, "é日本"])));
        assert!(!plain_list_has_control(list(&[])));
    }

    proptest! {
        #[test]
        fn a_list_agrees_with_its_strings(v in proptest::collection::vec(any::<String>(), 0..6)) {
            let want = v.iter().any(|s| s.chars().any(char::is_control));
            prop_assert_eq!(plain_list_has_control(v.iter().map(|s| s.as_bytes())), want);
        }

        #[test]
        fn both_agree_with_the_unescaped_text(s in any::<String>(), line_ends in any::<bool>()) {
            let want = s.chars().any(|c| c.is_control() && !(line_ends && (c == '\r' || c == '\n')));
            prop_assert_eq!(plain_has_control(s.as_bytes(), line_ends), want);
            prop_assert_eq!(json_has_control(&json(&s), line_ends), want);
        }
    }
}
