//! WebSocket framing (RFC 6455 section 5), server side: reading a client's frame header and
//! unmasking its payload, writing unmasked frames.

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// The next fragment of a message.
    Continuation,
    /// A text message (UTF-8).
    Text,
    /// A binary message.
    Binary,
    /// Close, with an optional status code and reason.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Control frames: close, ping, pong.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last fragment of its message.
    pub fin: bool,
    /// What the frame is.
    pub opcode: Opcode,
    /// The masking key (client frames are always masked).
    pub mask: [u8; 4],
    /// Header length, bytes.
    pub header_len: usize,
    /// Payload length, bytes.
    pub payload_len: usize,
}

impl Header {
    /// Header and payload, bytes.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// A frame that breaks the protocol, or is larger than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Reserved bits set: no extension was negotiated.
    #[error("reserved bits set")]
    Reserved,
    /// An opcode RFC 6455 doesn't define.
    #[error("unknown opcode")]
    UnknownOpcode,
    /// A client frame without a mask.
    #[error("client frame not masked")]
    Unmasked,
    /// A control frame that is fragmented or over 125 bytes.
    #[error("invalid control frame")]
    BadControl,
    /// A payload over the limit.
    #[error("frame too large")]
    TooLarge,
}

/// Parses the header at the start of `buf`; `Ok(None)` when more bytes are needed. Frames whose
/// payload is over `max_payload` are refused from the header alone.
///
/// # Errors
/// [`FrameError`] for a frame that breaks the protocol or the limit.
pub fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(FrameError::UnknownOpcode)?;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut n = [0u8; 8];
            n.copy_from_slice(b);
            (u64::from_be_bytes(n), 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(FrameError::BadControl);
    }
    let payload_len = usize::try_from(len).map_err(|_| FrameError::TooLarge)?;
    if payload_len > max_payload {
        return Err(FrameError::TooLarge);
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        header_len: at + 4,
        payload_len,
    }))
}

/// Unmasks `data` in place; `data` starts at payload offset 0.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, so the mask lines up again at index 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Appends a server frame's header (final, unmasked) for a payload of `len` bytes.
pub fn push_header(out: &mut Vec<u8>, opcode: Opcode, len: usize) {
    out.push(0x80 | opcode.bits());
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a whole server frame.
pub fn push_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    push_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// The most bytes a frame header takes.
pub const MAX_HEADER: usize = 10;

/// Reserves room for a header, to be written by [`fill_header`] once the payload is in place.
/// Returns where the payload starts.
pub fn reserve_header(out: &mut Vec<u8>) -> usize {
    out.extend_from_slice(&[0; MAX_HEADER]);
    out.len()
}

/// Writes the header of the frame whose payload was appended after [`reserve_header`] returned
/// `payload_start`, moving the payload down over the unused header bytes.
pub fn fill_header(out: &mut Vec<u8>, payload_start: usize, opcode: Opcode) {
    let frame_start = payload_start - MAX_HEADER;
    let len = out.len() - payload_start;
    let mut header = Vec::with_capacity(MAX_HEADER);
    push_header(&mut header, opcode, len);
    let header_start = payload_start - header.len();
    out[header_start..payload_start].copy_from_slice(&header);
    if header_start > frame_start {
        out.copy_within(header_start.., frame_start);
        out.truncate(out.len() - (header_start - frame_start));
    }
}

/// A masked client frame, for tests of what reads frames.
#[cfg(test)]
pub(crate) fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_length_form_and_waits_for_more() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = client_frame(true, 0x2, &payload, [1, 2, 3, 4]);
            for cut in 0..frame.len().min(14) {
                let h = parse_header(&frame[..cut], 1 << 20).expect("valid");
                assert!(h.is_none() || h.is_some_and(|h| h.header_len <= cut));
            }
            let h = parse_header(&frame, 1 << 20)
                .expect("valid")
                .expect("complete");
            assert_eq!(
                (h.fin, h.opcode, h.payload_len),
                (true, Opcode::Binary, len)
            );
            assert_eq!(h.frame_len(), frame.len());
            let mut data = frame[h.header_len..].to_vec();
            unmask(&mut data, h.mask);
            assert_eq!(data, payload);
        }
    }

    #[test]
    fn refuses_what_the_protocol_forbids() {
        let masked = |b0: u8, b1: u8| vec![b0, b1, 0, 0, 0, 0];
        assert_eq!(
            parse_header(&masked(0xC1, 0x80), 100),
            Err(FrameError::Reserved)
        );
        assert_eq!(
            parse_header(&masked(0x83, 0x80), 100),
            Err(FrameError::UnknownOpcode)
        );
        assert_eq!(parse_header(&[0x81, 0x05], 100), Err(FrameError::Unmasked));
        assert_eq!(
            parse_header(&masked(0x09, 0x80), 100),
            Err(FrameError::BadControl)
        );
        let long_ping = [0x89, 0xFE, 0x00, 0x7E, 0, 0, 0, 0];
        assert_eq!(parse_header(&long_ping, 1000), Err(FrameError::BadControl));
        assert_eq!(
            parse_header(&masked(0x82, 0xE5), 100),
            Err(FrameError::TooLarge)
        );
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_header(&huge, 1 << 20), Err(FrameError::TooLarge));
    }

    #[test]
    fn headers_are_filled_in_after_the_payload() {
        for len in [0, 5, 125, 126, 300, 65535, 65536] {
            let payload = vec![7u8; len];
            let mut out = b"prefix".to_vec();
            let start = reserve_header(&mut out);
            out.extend_from_slice(&payload);
            fill_header(&mut out, start, Opcode::Text);
            let mut want = b"prefix".to_vec();
            push_frame(&mut want, Opcode::Text, &payload);
            assert_eq!(out, want, "len {len}");
        }
    }

    proptest! {
        #[test]
        fn unmask_is_bytewise_xor(data in proptest::collection::vec(any::<u8>(), 0..100), mask in any::<[u8; 4]>()) {
            let mut fast = data.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = parse_header(&data, 1000);
        }
    }
}
