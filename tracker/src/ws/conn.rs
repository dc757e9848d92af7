//! One WebSocket connection's byte stream: frames in, frames out, on a plain TCP socket.
//!
//! Reads go into a buffer the caller lends (one per worker thread), so an idle connection holds
//! no read buffer: only the bytes of a frame that hasn't fully arrived are kept, and only until
//! it has. Each complete data frame is copied out once, into a [`Bytes`] that the signals made
//! from it share. Writes go straight to the socket; only what the socket doesn't take at once
//! is kept, bounded, and freed once written. Pings are answered here; every other frame is an
//! [`Event`] for the session.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::frame::{self, FrameError, Opcode};
use swarmtrack_protocol::Format;

/// Output buffer capacity kept between writes; a larger one is given back once written.
const IDLE_OUT_CAPACITY: usize = 0;

/// Bounds of one connection.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// Largest frame, and largest message once fragments are joined, in bytes.
    pub max_message: usize,
    /// Most bytes written but not yet taken by the socket; past it the client is too slow.
    pub max_unsent: usize,
}

/// A complete data message.
#[derive(Debug, Clone)]
pub enum Message {
    /// A text message, checked to be UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// The message's bytes.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Message::Text(b) | Message::Binary(b) => b,
        }
    }

    /// A text message's text (checked again, with SIMD: cheaper than carrying the proof
    /// without `unsafe`); `None` for a binary message or one that isn't UTF-8.
    pub fn text(&self) -> Option<&str> {
        match self {
            Message::Text(b) => simdutf8::basic::from_utf8(b).ok(),
            Message::Binary(_) => None,
        }
    }
}

/// What the client sent.
#[derive(Debug)]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A ping, already answered.
    Ping,
    /// A pong: the client answered our ping.
    Pong,
    /// The client closed (the echo is queued), or the stream ended.
    Closed,
}

/// Why the connection can't go on.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// A frame that breaks RFC 6455.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A frame or message over the limit.
    #[error("frame too large")]
    TooBig,
    /// A text message that isn't UTF-8.
    #[error("invalid UTF-8 in a text message")]
    Utf8,
    /// More unsent output than allowed: the client doesn't read.
    #[error("slow consumer")]
    Slow,
    /// The socket failed.
    #[error("socket error")]
    Io(#[source] io::Error),
}

impl From<FrameError> for WsError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge => WsError::TooBig,
            FrameError::Reserved => WsError::Protocol("reserved bits set"),
            FrameError::UnknownOpcode => WsError::Protocol("unknown opcode"),
            FrameError::Unmasked => WsError::Protocol("client frame not masked"),
            FrameError::BadControl => WsError::Protocol("invalid control frame"),
        }
    }
}

/// A message arriving in fragments.
struct Fragments {
    format: Format,
    data: BytesMut,
    started: Instant,
}

/// One connection's socket and the little state its framing needs.
pub struct WsConn {
    stream: TcpStream,
    limits: WsLimits,
    /// Read but not yet parsed: the start of a frame still arriving.
    partial: BytesMut,
    fragments: Option<Fragments>,
    /// Written but not yet taken by the socket, from `unsent_at` on.
    unsent: Vec<u8>,
    unsent_at: usize,
    /// While bytes wait: when the socket last took some (or when they started waiting).
    progress_at: Instant,
    /// A close frame was sent: nothing more may be.
    close_sent: bool,
}

impl WsConn {
    /// Wraps an upgraded socket; `read_ahead` holds bytes already read from it.
    pub fn new(stream: TcpStream, read_ahead: Bytes, limits: WsLimits) -> Self {
        Self {
            stream,
            limits,
            partial: BytesMut::from(&read_ahead[..]),
            fragments: None,
            unsent: Vec::new(),
            unsent_at: 0,
            progress_at: Instant::now(),
            close_sent: false,
        }
    }

    /// When the message still arriving in fragments began, if one is.
    pub fn fragments_since(&self) -> Option<Instant> {
        self.fragments.as_ref().map(|f| f.started)
    }

    /// Reads what the socket has, into `scratch`, and appends the events of every complete
    /// frame to `events`; `Ready(Ok)` with no event means more bytes are needed. Bytes already
    /// held (read ahead, or part of a frame) are parsed first.
    ///
    /// # Errors
    /// [`WsError`]: the connection must end.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        scratch: &mut [u8],
        events: &mut Vec<Event>,
    ) -> Poll<Result<(), WsError>> {
        if !self.partial.is_empty() && self.parse_partial(events)? {
            return Poll::Ready(Ok(()));
        }
        let mut buf = ReadBuf::new(scratch);
        match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(WsError::Io(e))),
            Poll::Ready(Ok(())) => {}
        }
        let n = buf.filled().len();
        if n == 0 {
            events.push(Event::Closed);
            return Poll::Ready(Ok(()));
        }
        if self.partial.is_empty() {
            let used = self.parse_slice(&mut scratch[..n], events)?;
            self.partial.extend_from_slice(&scratch[used..n]);
        } else {
            self.partial.extend_from_slice(&scratch[..n]);
            self.parse_partial(events)?;
        }
        Poll::Ready(Ok(()))
    }

    /// Parses the complete frames at the start of `data` (unmasking them in place); returns
    /// how many bytes they took.
    fn parse_slice(&mut self, data: &mut [u8], events: &mut Vec<Event>) -> Result<usize, WsError> {
        let mut used = 0;
        while let Some(h) = frame::parse_header(&data[used..], self.limits.max_message)? {
            let Some(frame) = data.get_mut(used..used + h.frame_len()) else {
                break;
            };
            let payload = &mut frame[h.header_len..];
            frame::unmask(payload, h.mask);
            self.on_frame(h.fin, h.opcode, Payload::Slice(payload), events)?;
            used += h.frame_len();
        }
        if self.partial.is_empty() && used < data.len() {
            // The rest of the frame will come in later reads: make room for all of it now.
            self.partial.reserve(data.len() - used);
        }
        Ok(used)
    }

    /// Parses the complete frames held in `partial`; true when there was at least one.
    fn parse_partial(&mut self, events: &mut Vec<Event>) -> Result<bool, WsError> {
        let mut any = false;
        while let Some(h) = frame::parse_header(&self.partial, self.limits.max_message)? {
            if self.partial.len() < h.frame_len() {
                self.partial.reserve(h.frame_len() - self.partial.len());
                break;
            }
            let mut frame = self.partial.split_to(h.frame_len());
            let mut payload = frame.split_off(h.header_len);
            frame::unmask(&mut payload, h.mask);
            self.on_frame(h.fin, h.opcode, Payload::Owned(payload), events)?;
            any = true;
        }
        if self.partial.is_empty() {
            // Give back the buffer of a large frame.
            self.partial = BytesMut::new();
        }
        Ok(any)
    }

    fn on_frame(
        &mut self,
        fin: bool,
        opcode: Opcode,
        payload: Payload<'_>,
        events: &mut Vec<Event>,
    ) -> Result<(), WsError> {
        match opcode {
            Opcode::Text | Opcode::Binary if self.fragments.is_some() => {
                Err(WsError::Protocol("a new message inside a fragmented one"))
            }
            Opcode::Text | Opcode::Binary => {
                let format = if opcode == Opcode::Text {
                    Format::Json
                } else {
                    Format::MsgPack
                };
                if fin {
                    events.push(message(payload.into_bytes(), format)?);
                } else {
                    self.fragments = Some(Fragments {
                        format,
                        data: BytesMut::from(payload.as_slice()),
                        started: Instant::now(),
                    });
                }
                Ok(())
            }
            Opcode::Continuation => {
                let Some(f) = &mut self.fragments else {
                    return Err(WsError::Protocol("a continuation without a message"));
                };
                if f.data.len() + payload.as_slice().len() > self.limits.max_message {
                    return Err(WsError::TooBig);
                }
                f.data.extend_from_slice(payload.as_slice());
                if fin && let Some(f) = self.fragments.take() {
                    events.push(message(f.data.freeze(), f.format)?);
                }
                Ok(())
            }
            Opcode::Ping => {
                self.send_control(Opcode::Pong, payload.as_slice())?;
                events.push(Event::Ping);
                Ok(())
            }
            Opcode::Pong => {
                events.push(Event::Pong);
                Ok(())
            }
            Opcode::Close => {
                // Echo the status code (RFC 6455 5.5.1), then the connection is over.
                let code = payload.as_slice().get(..2).unwrap_or_default().to_vec();
                if !self.close_sent {
                    self.send_control(Opcode::Close, &code)?;
                    self.close_sent = true;
                }
                events.push(Event::Closed);
                Ok(())
            }
        }
    }

    fn send_control(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), WsError> {
        let mut buf = Vec::with_capacity(payload.len() + 2);
        frame::push_frame(&mut buf, opcode, payload);
        self.send(&buf)
    }

    /// Writes `bytes` (whole frames) now, keeping what the socket doesn't take.
    ///
    /// # Errors
    /// [`WsError::Slow`] when more than `max_unsent` bytes would be waiting; [`WsError::Io`]
    /// when the socket failed.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), WsError> {
        if self.close_sent || bytes.is_empty() {
            return Ok(());
        }
        if !self.has_unsent() {
            let written = match self.stream.try_write(bytes) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(WsError::Io(e)),
            };
            if written == bytes.len() {
                return Ok(());
            }
            self.unsent.clear();
            self.unsent_at = 0;
            self.unsent.extend_from_slice(&bytes[written..]);
            self.progress_at = Instant::now();
        } else {
            self.unsent.extend_from_slice(bytes);
            self.write_unsent()?;
        }
        if self.unsent.len() - self.unsent_at > self.limits.max_unsent {
            return Err(WsError::Slow);
        }
        Ok(())
    }

    /// While written bytes wait for the socket: since when it took none of them.
    pub fn stalled_since(&self) -> Option<Instant> {
        self.has_unsent().then_some(self.progress_at)
    }

    /// True when written bytes wait for the socket.
    pub fn has_unsent(&self) -> bool {
        self.unsent_at < self.unsent.len()
    }

    fn write_unsent(&mut self) -> Result<(), WsError> {
        while self.has_unsent() {
            match self.stream.try_write(&self.unsent[self.unsent_at..]) {
                Ok(0) => return Err(WsError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.unsent_at += n;
                    self.progress_at = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(WsError::Io(e)),
            }
        }
        self.unsent_at = 0;
        self.unsent.clear();
        if self.unsent.capacity() > IDLE_OUT_CAPACITY {
            self.unsent = Vec::new();
        }
        Ok(())
    }

    /// Writes what waits for the socket; `Ready(Ok)` once all of it is written.
    ///
    /// # Errors
    /// [`WsError::Io`] when the socket failed.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        while self.has_unsent() {
            match self.stream.poll_write_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(WsError::Io(e))),
                Poll::Ready(Ok(())) => {}
            }
            self.write_unsent()?;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends a close frame (unless one was), then closes our side and waits a little for the
    /// client's: a socket closed with unread input would reset the connection instead.
    pub async fn close(mut self, code: Option<u16>, reason: &str, within: std::time::Duration) {
        let closing = async {
            if !self.close_sent {
                let mut payload = Vec::new();
                if let Some(code) = code {
                    payload.extend_from_slice(&code.to_be_bytes());
                    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
                }
                let _ = self.send_control(Opcode::Close, &payload);
                self.close_sent = true;
            }
            if std::future::poll_fn(|cx| self.poll_flush(cx))
                .await
                .is_err()
            {
                return;
            }
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.stream).await;
            let mut sink = [0u8; 1024];
            loop {
                match tokio::io::AsyncReadExt::read(&mut self.stream, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(within, closing).await;
    }
}

/// A frame's payload: in the read buffer lent for this read, or split off `partial`.
enum Payload<'a> {
    Slice(&'a mut [u8]),
    Owned(BytesMut),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Slice(s) => s,
            Payload::Owned(b) => b,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Payload::Slice(s) => Bytes::copy_from_slice(s),
            Payload::Owned(b) => b.freeze(),
        }
    }
}

fn message(data: Bytes, format: Format) -> Result<Event, WsError> {
    let msg = match format {
        Format::Json => {
            // RFC 6455: a text message that isn't UTF-8 fails the connection.
            simdutf8::basic::from_utf8(&data).map_err(|_| WsError::Utf8)?;
            Message::Text(data)
        }
        Format::MsgPack => Message::Binary(data),
    };
    Ok(Event::Message(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        super::super::frame::client_frame(fin, opcode, payload, [9, 8, 7, 6])
    }

    async fn pair(limits: WsLimits) -> (WsConn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (WsConn::new(server, Bytes::new(), limits), client)
    }

    /// Reads until at least one event came.
    async fn events(ws: &mut WsConn) -> Vec<Event> {
        let mut scratch = vec![0u8; 64 * 1024];
        let mut events = Vec::new();
        while events.is_empty() {
            poll_fn(|cx| ws.poll_read(cx, &mut scratch, &mut events))
                .await
                .expect("valid frames");
        }
        events
    }

    const LIMITS: WsLimits = WsLimits {
        max_message: 1 << 20,
        max_unsent: 64 << 20,
    };

    #[tokio::test]
    async fn buffers_go_back_to_their_idle_size_after_a_large_frame() {
        let (mut ws, mut client) = pair(LIMITS).await;
        // A 200 KB frame in pieces: kept while it arrives, given back once parsed.
        let big = vec![b'x'; 200_000];
        let frame = client_frame(true, 0x2, &big);
        let (head, tail) = frame.split_at(100_000);
        client.write_all(head).await.expect("write");
        let mut scratch = vec![0u8; 64 * 1024];
        let mut got = Vec::new();
        while ws.partial.len() < head.len() {
            poll_fn(|cx| ws.poll_read(cx, &mut scratch, &mut got))
                .await
                .expect("valid");
        }
        assert!(got.is_empty());
        assert!(ws.partial.capacity() >= frame.len(), "room for the frame");
        client.write_all(tail).await.expect("write");
        let got = events(&mut ws).await;
        assert!(matches!(&got[..], [Event::Message(m)] if m.bytes().len() == big.len()));
        assert_eq!(ws.partial.capacity(), 0, "read buffer given back");

        // Fragments: joined in a buffer of their own, gone once the message is whole.
        client
            .write_all(&client_frame(false, 0x1, &[b'a'; 50_000]))
            .await
            .expect("write");
        client
            .write_all(&client_frame(true, 0x9, b"ping"))
            .await
            .expect("write");
        let got = events(&mut ws).await;
        assert!(matches!(&got[..], [Event::Ping]));
        assert!(ws.fragments_since().is_some());
        client
            .write_all(&client_frame(true, 0x0, &[b'b'; 50_000]))
            .await
            .expect("write");
        let got = events(&mut ws).await;
        assert!(matches!(&got[..], [Event::Message(m)] if m.bytes().len() == 100_000));
        assert!(ws.fragments_since().is_none());
        assert_eq!(ws.partial.capacity(), 0);

        // Output the socket doesn't take is kept, then given back once written.
        let out = vec![b'y'; 16 << 20];
        ws.send(&out).expect("within max_unsent");
        assert!(ws.has_unsent(), "16 MB is more than loopback buffers hold");
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 20];
            let mut n = 0;
            while n < (16 << 20) + 6 {
                n += client.read(&mut sink).await.expect("read");
            }
            client
        });
        poll_fn(|cx| ws.poll_flush(cx)).await.expect("flushed");
        assert!(!ws.has_unsent());
        assert_eq!(
            ws.unsent.capacity(),
            IDLE_OUT_CAPACITY,
            "write buffer given back"
        );
        // The ping's pong (6 bytes) went first; the reader took everything.
        let _client = reader.await.expect("reader");
    }

    #[tokio::test]
    async fn unsent_output_past_the_bound_is_a_slow_consumer() {
        let limits = WsLimits {
            max_message: 1 << 20,
            max_unsent: 256 * 1024,
        };
        let (mut ws, _client) = pair(limits).await;
        let chunk = vec![b'z'; 64 * 1024];
        let mut result = Ok(());
        for _ in 0..1000 {
            result = ws.send(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(WsError::Slow)));
        assert!(ws.unsent.len() - ws.unsent_at <= limits.max_unsent + chunk.len());
    }
}
