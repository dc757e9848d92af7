//! A viewer's WebSocket (RFC 6455, client side), written for the message path.
//!
//! perf of the native mode on tokio-tungstenite had a fifth of the simulator's own (user-space)
//! CPU in the WebSocket layer around each frame: its compat shim registering read and write
//! wakers on every poll, each received frame copied into a message of its own (`BytesMut`
//! split and frozen), each sent one into a `Message` and again into the write buffer, its
//! 4 KiB read buffer zeroed before reads. Here a connection reads what the socket has into its
//! own buffer and hands out frames as ranges of it (nothing copied; the buffer is kept while
//! frames are waiting and released when it empties), and frames are written masked straight
//! into a caller's [`Outbox`], whose bytes go out in one `write` for everything a wake-up
//! produced. The opening handshake is checked as a browser checks it (status 101 and
//! `Sec-WebSocket-Accept`). Server frames are never masked; fragmented messages are joined;
//! pings are answered; no extension is negotiated.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng;
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::target::{ConnectError, Target};

/// Longest message accepted, bytes (as the tungstenite configuration it replaces).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Longest handshake response accepted, bytes.
const MAX_RESPONSE_BYTES: usize = 8 << 10;
/// Bytes asked of the socket per read (the buffer grows to a frame's size when one is longer).
const READ_BYTES: usize = 4096;
/// RFC 6455's GUID for the accept key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a received frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A text message.
    Text,
    /// A binary message.
    Binary,
    /// The server closed with this status code (1005 when it gave none).
    Close(u16),
}

/// A received message: its kind and where its payload lies in the connection's buffer
/// ([`WsClient::payload`]), valid until the next [`WsClient::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    range: Range<usize>,
    /// Bytes on the wire, header included.
    pub wire_len: usize,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server closed the TCP connection.
    #[error("connection closed")]
    Eof,
    /// The server broke the protocol (masked frame, bad opcode, too long, bad fragments).
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

/// Frames waiting to be written: built by a viewer's handlers, written by [`WsClient::flush`].
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    /// xorshift state for the masking keys (unpredictable enough for a proxy; RFC 6455 10.3).
    mask: u32,
    /// A payload being assembled (see [`Outbox::scratch`]).
    scratch: Vec<u8>,
}

impl Outbox {
    /// An empty outbox with its masking keys seeded from `rng`.
    pub fn new(rng: &mut impl Rng) -> Self {
        Self {
            buf: Vec::new(),
            mask: rng.random::<u32>() | 1,
            scratch: Vec::new(),
        }
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A cleared buffer to build a payload in, handed back to [`Outbox::text_scratch`]: the
    /// allocation is kept from frame to frame.
    pub fn scratch(&mut self) -> Vec<u8> {
        let mut s = std::mem::take(&mut self.scratch);
        s.clear();
        s
    }

    /// Queues `payload` (built in [`Outbox::scratch`]) as a text frame and keeps its buffer.
    /// Returns the frame's bytes on the wire.
    pub fn text_scratch(&mut self, payload: Vec<u8>) -> usize {
        let n = self.frame(0x1, &payload);
        self.scratch = payload;
        n
    }

    /// Queues a text frame; returns its bytes on the wire.
    pub fn text(&mut self, payload: &[u8]) -> usize {
        self.frame(0x1, payload)
    }

    /// Queues a binary frame; returns its bytes on the wire.
    pub fn binary(&mut self, payload: &[u8]) -> usize {
        self.frame(0x2, payload)
    }

    /// Queues a close frame with no status.
    pub fn close(&mut self) {
        self.frame(0x8, &[]);
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        x.to_ne_bytes()
    }

    /// Queues one masked frame (FIN set).
    fn frame(&mut self, opcode: u8, payload: &[u8]) -> usize {
        let start = self.buf.len();
        let len = payload.len();
        self.buf.push(0x80 | opcode);
        if len < 126 {
            self.buf.push(0x80 | len as u8);
        } else if let Ok(len) = u16::try_from(len) {
            self.buf.push(0x80 | 126);
            self.buf.extend_from_slice(&len.to_be_bytes());
        } else {
            self.buf.push(0x80 | 127);
            self.buf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let key = self.next_mask();
        self.buf.extend_from_slice(&key);
        let at = self.buf.len();
        self.buf.extend_from_slice(payload);
        mask(&mut self.buf[at..], key);
        self.buf.len() - start
    }
}

/// XORs `data` with the repeated `key`, four bytes at a time.
fn mask(data: &mut [u8], key: [u8; 4]) {
    let k = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ k;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// One client connection.
#[derive(Debug)]
pub struct WsClient {
    stream: TcpStream,
    /// Bytes read; `buf[start..]` not yet handed out.
    buf: Vec<u8>,
    start: usize,
    /// A fragmented message being joined: its kind and bytes so far.
    partial: Option<(Kind, Vec<u8>)>,
    /// The last message was a joined fragmented one (its payload is in `joined`).
    joined: Vec<u8>,
    /// Pongs owed (each ping's payload, framed), written with the next flush.
    pongs: Outbox,
}

/// Parsed frame header: FIN, opcode, payload length, header length.
fn header(b: &[u8]) -> Result<Option<(bool, u8, usize, usize)>, WsError> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[1] & 0x80 != 0 {
        return Err(WsError::Protocol("masked server frame"));
    }
    if b[0] & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set"));
    }
    let (len, hlen) = match b[1] & 0x7F {
        126 if b.len() < 4 => return Ok(None),
        126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() < 10 => return Ok(None),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (
                usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                10,
            )
        }
        n => (usize::from(n), 2),
    };
    if len > MAX_MESSAGE_BYTES {
        return Err(WsError::Protocol("frame too long"));
    }
    Ok(Some((b[0] & 0x80 != 0, b[0] & 0x0F, len, hlen)))
}

impl WsClient {
    /// Opens a WebSocket to `url` (at `target`'s address) from `source`: TCP, then the opening
    /// handshake, all within `timeout`.
    ///
    /// # Errors
    /// See [`ConnectError`].
    pub async fn connect(
        target: &Target,
        url: &str,
        source: IpAddr,
        timeout: Duration,
        rng: &mut impl Rng,
    ) -> Result<Self, ConnectError> {
        let key = BASE64.encode(rng.random::<[u8; 16]>());
        let attempt = async {
            let socket = TcpSocket::new_v4().map_err(|e| ConnectError::io(&e))?;
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| ConnectError::io(&e))?;
            let mut stream = socket
                .connect(target.addr())
                .await
                .map_err(|e| ConnectError::io(&e))?;
            // Signals are small and latency is measured: Nagle must not hold them back.
            stream.set_nodelay(true).map_err(|e| ConnectError::io(&e))?;
            let (host, path) = split_url(url)?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| ConnectError::io(&e))?;
            let mut buf = Vec::with_capacity(1024);
            let end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                if buf.len() >= MAX_RESPONSE_BYTES {
                    return Err(ConnectError::Other("handshake response too long".into()));
                }
                buf.reserve(1024);
                stream.readable().await.map_err(|e| ConnectError::io(&e))?;
                match stream.try_read_buf(&mut buf) {
                    Ok(0) => return Err(ConnectError::Other("closed during handshake".into())),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(ConnectError::io(&e)),
                }
            };
            check_response(&buf[..end], &key)?;
            buf.drain(..end);
            Ok(Self {
                stream,
                buf,
                start: 0,
                partial: None,
                joined: Vec::new(),
                pongs: Outbox::default(),
            })
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| ConnectError::Timeout)?
    }

    /// The next text, binary or close message. Cancel-safe: what was read stays buffered.
    ///
    /// # Errors
    /// The socket failed or closed, or the server broke the protocol.
    pub async fn next(&mut self) -> Result<Frame, WsError> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            if !self.pongs.is_empty() {
                let out = std::mem::take(&mut self.pongs.buf);
                self.stream.write_all(&out).await?;
            }
            self.read().await?;
        }
    }

    /// The payload of `frame`, the message [`WsClient::next`] returned last.
    pub fn payload(&self, frame: &Frame) -> &[u8] {
        if frame.range.end == usize::MAX {
            &self.joined
        } else {
            self.buf.get(frame.range.clone()).unwrap_or_default()
        }
    }

    /// Writes what `out` holds, in one `write` when the socket takes it all.
    ///
    /// # Errors
    /// The socket failed.
    pub async fn flush(&mut self, out: &mut Outbox) -> Result<(), WsError> {
        if !out.buf.is_empty() {
            self.stream.write_all(&out.buf).await?;
            out.buf.clear();
            // An outbox that once held a burst doesn't keep its peak.
            if out.buf.capacity() > 64 << 10 {
                out.buf = Vec::new();
            }
        }
        Ok(())
    }

    /// Reads what the socket has (at least one byte), compacting the buffer first.
    async fn read(&mut self) -> Result<(), WsError> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_BYTES);
        loop {
            self.stream.readable().await?;
            match self.stream.try_read_buf(&mut self.buf) {
                Ok(0) => return Err(WsError::Eof),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next complete message in the buffer, if any; pings queue a pong, pongs are
    /// dropped, fragments are joined.
    fn parse(&mut self) -> Result<Option<Frame>, WsError> {
        loop {
            let b = &self.buf[self.start..];
            let Some((fin, opcode, len, hlen)) = header(b)? else {
                self.release();
                return Ok(None);
            };
            if b.len() < hlen + len {
                return Ok(None);
            }
            let at = self.start + hlen;
            let range = at..at + len;
            let wire_len = hlen + len;
            self.start = range.end;
            let kind = match opcode {
                0x0 => {
                    let Some((kind, mut bytes)) = self.partial.take() else {
                        return Err(WsError::Protocol("continuation without a start"));
                    };
                    if bytes.len() + len > MAX_MESSAGE_BYTES {
                        return Err(WsError::Protocol("message too long"));
                    }
                    bytes.extend_from_slice(&self.buf[range]);
                    if !fin {
                        self.partial = Some((kind, bytes));
                        continue;
                    }
                    self.joined = bytes;
                    return Ok(Some(Frame {
                        kind,
                        range: 0..usize::MAX,
                        wire_len,
                    }));
                }
                0x1 => Kind::Text,
                0x2 => Kind::Binary,
                0x8 => {
                    let p = &self.buf[range.clone()];
                    let code = if p.len() >= 2 {
                        u16::from_be_bytes([p[0], p[1]])
                    } else {
                        1005
                    };
                    Kind::Close(code)
                }
                0x9 => {
                    let ping = self.buf[range].to_vec();
                    self.pongs.frame(0xA, &ping);
                    continue;
                }
                0xA => continue,
                _ => return Err(WsError::Protocol("unknown opcode")),
            };
            if !fin {
                if matches!(kind, Kind::Close(_)) || self.partial.is_some() {
                    return Err(WsError::Protocol("bad fragments"));
                }
                self.partial = Some((kind, self.buf[range].to_vec()));
                continue;
            }
            return Ok(Some(Frame {
                kind,
                range,
                wire_len,
            }));
        }
    }

    /// An idle connection holds no read buffer: most viewers wait far longer than they read.
    fn release(&mut self) {
        if self.start == self.buf.len() && self.buf.capacity() > 2 * READ_BYTES {
            self.buf = Vec::new();
            self.start = 0;
        }
    }
}

/// `ws://host:port/path?query` → (`host:port`, `/path?query`).
fn split_url(url: &str) -> Result<(&str, &str), ConnectError> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| ConnectError::Other(format!("{url:?} is not ws://")))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

/// Checks the handshake response: status 101 and the accept key for `key`.
fn check_response(head: &[u8], key: &str) -> Result<(), ConnectError> {
    let head = std::str::from_utf8(head)
        .map_err(|_| ConnectError::Other("handshake response not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ConnectError::Other("bad handshake status line".into()))?;
    if status != 101 {
        return Err(ConnectError::Status(status));
    }
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    let want = BASE64.encode(sha.finalize());
    let accepted = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == want
        })
    });
    if accepted {
        Ok(())
    } else {
        Err(ConnectError::Other("wrong Sec-WebSocket-Accept".into()))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    /// Unmasks one client frame the way a server does; returns (opcode, payload, bytes used).
    fn unmask(b: &[u8]) -> (u8, Vec<u8>, usize) {
        assert_eq!(b[0] & 0x80, 0x80, "FIN");
        assert_eq!(b[1] & 0x80, 0x80, "masked");
        let (len, mut at) = match b[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(b[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            n => (usize::from(n), 2),
        };
        let key = &b[at..at + 4];
        at += 4;
        let p = b[at..at + len]
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ key[i % 4])
            .collect();
        (b[0] & 0x0F, p, at + len)
    }

    #[test]
    fn outbox_frames_unmask_to_their_payloads() {
        let mut out = Outbox::new(&mut StdRng::seed_from_u64(1));
        let long: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mid = vec![b'x'; 300];
        out.text(b"hello");
        out.binary(&mid);
        out.text(&long);
        let mut s = out.scratch();
        s.extend_from_slice(b"{\"t\":\"join\"}");
        out.text_scratch(s);
        out.close();
        let mut b = &out.buf[..];
        let mut got = Vec::new();
        while !b.is_empty() {
            let (op, p, n) = unmask(b);
            got.push((op, p));
            b = &b[n..];
        }
        assert_eq!(
            got,
            vec![
                (1, b"hello".to_vec()),
                (2, mid),
                (1, long),
                (1, b"{\"t\":\"join\"}".to_vec()),
                (8, vec![])
            ]
        );
    }

    #[test]
    fn headers_are_read_and_bad_ones_refused() {
        assert_eq!(header(&[0x81, 5]).unwrap(), Some((true, 1, 5, 2)));
        assert_eq!(header(&[0x81]).unwrap(), None);
        assert_eq!(header(&[0x01, 126, 1]).unwrap(), None);
        assert_eq!(
            header(&[0x01, 126, 1, 0]).unwrap(),
            Some((false, 1, 256, 4))
        );
        assert!(header(&[0x81, 0x85]).is_err(), "masked");
        assert!(header(&[0xC1, 5]).is_err(), "reserved bit");
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(u64::MAX).to_be_bytes());
        assert!(header(&huge).is_err(), "too long");
    }

    #[test]
    fn the_handshake_response_is_checked() {
        // RFC 6455's example key and accept value.
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_response(ok.as_bytes(), key).is_ok());
        let wrong = ok.replace("s3pP", "AAAA");
        assert!(check_response(wrong.as_bytes(), key).is_err());
        let refused = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(
            check_response(refused.as_bytes(), key),
            Err(ConnectError::Status(503))
        ));
        assert_eq!(
            split_url("ws://127.0.0.1:9/v1/ws?swarm=a").unwrap(),
            ("127.0.0.1:9", "/v1/ws?swarm=a")
        );
    }
}
