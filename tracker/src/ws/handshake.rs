//! The WebSocket opening handshake, server side (RFC 6455 section 4.2): checking a client's
//! upgrade request and answering it.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// Why an upgrade request was refused, with the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not a GET.
    #[error("a WebSocket upgrade must be a GET")]
    Method,
    /// `Connection: upgrade` and `Upgrade: websocket` missing.
    #[error("not a WebSocket upgrade request")]
    NotUpgrade,
    /// A version other than 13.
    #[error("unsupported WebSocket version: only 13")]
    Version,
    /// No valid `Sec-WebSocket-Key`.
    #[error("missing or invalid Sec-WebSocket-Key")]
    Key,
}

impl HandshakeError {
    /// The HTTP status to refuse with (426 tells the client which version to speak).
    pub fn status(self) -> StatusCode {
        match self {
            HandshakeError::Method => StatusCode::METHOD_NOT_ALLOWED,
            HandshakeError::Version => StatusCode::UPGRADE_REQUIRED,
            HandshakeError::NotUpgrade | HandshakeError::Key => StatusCode::BAD_REQUEST,
        }
    }
}

/// True when a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Checks an upgrade request and returns the `Sec-WebSocket-Accept` value to answer with.
///
/// # Errors
/// [`HandshakeError`] saying what is wrong.
pub fn accept(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::Method);
    }
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(HandshakeError::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::Key)?;
    // The key is 16 random bytes in base64; it is hashed as sent.
    let mut decoded = [0u8; 18];
    if STANDARD.decode_slice(key.as_bytes(), &mut decoded) != Ok(16) {
        return Err(HandshakeError::Key);
    }
    Ok(accept_value(key.as_bytes()))
}

fn accept_value(key: &[u8]) -> HeaderValue {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let encoded = STANDARD.encode(sha.finalize());
    // Base64 is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn rfc_6455_example() {
        // RFC 6455 section 1.3.
        let h = request(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        assert_eq!(
            accept(&Method::GET, &h),
            Ok(HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="))
        );
    }

    #[test]
    fn refusals() {
        let good = [
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            accept(&Method::POST, &request(&good)),
            Err(HandshakeError::Method)
        );
        assert_eq!(
            accept(&Method::GET, &request(&good[1..])),
            Err(HandshakeError::NotUpgrade)
        );
        let mut v8 = good;
        v8[2].1 = "8";
        assert_eq!(
            accept(&Method::GET, &request(&v8)),
            Err(HandshakeError::Version)
        );
        assert_eq!(
            HandshakeError::Version.status(),
            StatusCode::UPGRADE_REQUIRED
        );
        let mut short = good;
        short[3].1 = "c2hvcnQ=";
        assert_eq!(
            accept(&Method::GET, &request(&short)),
            Err(HandshakeError::Key)
        );
    }
}
