//! Minified data-channel SDP and candidates, as the browser SDK sends them (`m1` format).
//!
//! A data-channel session needs only a handful of SDP fields; everything else is the same in
//! every browser session and the SDK on the other side puts it back. The format is documented
//! in docs/ARCHITECTURE.md ("Minified SDP"); the SDK (client/) writes and reads the same form:
//!
//! `1,<ice-ufrag>,<ice-pwd>,<hash>:<fingerprint base64>,<setup a|c|p>,<mid>,<sctp-port>,<max-message-size>[,<candidate>...]`
//!
//! and a candidate as `<foundation> <component> <transport> <priority> <address> <port> <type>`
//! followed by `raddr`, `rport` and `tcptype` pairs when present (`generation`, `ufrag`,
//! `network-id` and `network-cost` are dropped: the receiver doesn't need them).

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

fn b64(raw: &[u8]) -> String {
    STANDARD_NO_PAD.encode(raw)
}

/// Why an SDP can't be minified.
#[derive(Debug, thiserror::Error)]
pub enum MinifyError {
    /// A field the data channel needs is missing.
    #[error("SDP has no {0} line")]
    Missing(&'static str),
    /// A field doesn't have the expected shape.
    #[error("malformed {0}")]
    Malformed(&'static str),
}

/// Minifies a data-channel SDP (offer or answer, trickle or complete).
///
/// # Errors
/// When a field the data channel needs is missing or malformed.
pub fn minify(sdp: &str) -> Result<String, MinifyError> {
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| {
                l.trim_end()
                    .strip_prefix("a=")?
                    .strip_prefix(name)?
                    .strip_prefix(':')
            })
            .map(str::trim)
    };
    let ufrag = attr("ice-ufrag").ok_or(MinifyError::Missing("ice-ufrag"))?;
    let pwd = attr("ice-pwd").ok_or(MinifyError::Missing("ice-pwd"))?;
    let fingerprint = attr("fingerprint").ok_or(MinifyError::Missing("fingerprint"))?;
    let (hash, hex) = fingerprint
        .split_once(' ')
        .ok_or(MinifyError::Malformed("fingerprint"))?;
    let raw = hex
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| MinifyError::Malformed("fingerprint"))?;
    let setup = match attr("setup").ok_or(MinifyError::Missing("setup"))? {
        "actpass" => 'a',
        "active" => 'c',
        "passive" => 'p',
        _ => return Err(MinifyError::Malformed("setup")),
    };
    let mid = attr("mid").ok_or(MinifyError::Missing("mid"))?;
    let port = attr("sctp-port").ok_or(MinifyError::Missing("sctp-port"))?;
    let mms = attr("max-message-size").unwrap_or("65536");
    let mut out = format!(
        "1,{ufrag},{pwd},{hash}:{},{setup},{mid},{port},{mms}",
        b64(&raw)
    );
    for line in sdp.lines() {
        if let Some(c) = line.trim_end().strip_prefix("a=")
            && c.starts_with("candidate:")
        {
            out.push(',');
            out.push_str(&candidate(c)?);
        }
    }
    Ok(out)
}

/// Minifies one ICE candidate line (`candidate:...`, with or without the `a=`).
///
/// # Errors
/// When the line isn't a candidate.
pub fn candidate(line: &str) -> Result<String, MinifyError> {
    let body = line
        .trim()
        .trim_start_matches("a=")
        .strip_prefix("candidate:")
        .ok_or(MinifyError::Malformed("candidate"))?;
    let fields: Vec<&str> = body.split_ascii_whitespace().collect();
    // foundation component transport priority address port "typ" type [key value]...
    if fields.len() < 8 || fields[6] != "typ" {
        return Err(MinifyError::Malformed("candidate"));
    }
    let mut out = fields[..6].join(" ");
    out.push(' ');
    out.push_str(fields[7]);
    for pair in fields[8..].chunks(2) {
        if let [key @ ("raddr" | "rport" | "tcptype"), value] = pair {
            out.push(' ');
            out.push_str(key);
            out.push(' ');
            out.push_str(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrome_trickle_offer() {
        let sdp = include_str!("../../../fixtures/chrome-datachannel-offer.sdp");
        let m = minify(sdp).unwrap();
        assert_eq!(
            m,
            "1,zMoC,nDNXZvurjhraIwdspg/LF1q1,sha-256:Pnemf5SkBMYfJ//Fehn\
             ZkHi2a69iNrbE9j8katuE+nw,a,0,5000,262144"
        );
    }

    #[test]
    fn firefox_candidates() {
        let c = "candidate:2 1 TCP 2105458943 83442bb4-7643-4721-8bfd-8d99b3a6ea02.local 9 typ host tcptype active";
        assert_eq!(
            candidate(c).unwrap(),
            "2 1 TCP 2105458943 83442bb4-7643-4721-8bfd-8d99b3a6ea02.local 9 host tcptype active"
        );
        let chrome = "candidate:3962554493 1 udp 2113937151 604d.local 35486 typ host generation 0 ufrag zMoC network-cost 999";
        assert_eq!(
            candidate(chrome).unwrap(),
            "3962554493 1 udp 2113937151 604d.local 35486 host"
        );
    }

    #[test]
    fn refuses_what_is_not_sdp() {
        assert!(minify("v=0\r\n").is_err());
        assert!(candidate("candidate:1 2 3").is_err());
        assert!(candidate("not a candidate").is_err());
    }
}
