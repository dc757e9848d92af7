//! Raw deflate (RFC 1951) primed with the preset [`SDP_DICTIONARY`], and its bounded inverse.
//!
//! Invariants: [`deflate_into`] keeps its output only if it is strictly smaller than the input;
//! [`inflate`] never inflates past the cap it is given: its buffer never grows beyond one byte
//! over `max`, and it refuses the stream as soon as the output exceeds `max`.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{CodecError, SDP_DICTIONARY, to_usize};

/// Appends the raw deflate of `payload` to `out` if it is strictly smaller; returns whether.
pub(super) fn deflate_into(
    payload: &[u8],
    level: u32,
    out: &mut Vec<u8>,
) -> Result<bool, CodecError> {
    let mut deflater = Compress::new(Compression::new(level), false);
    deflater
        .set_dictionary(SDP_DICTIONARY)
        .map_err(CodecError::Deflate)?;
    // The output room is capped below the input size: a stream that doesn't fit isn't worth
    // sending, and deflating stops as soon as the room is full.
    let room = payload.len().saturating_sub(1);
    let pos = out.len();
    out.resize(pos + room, 0);
    loop {
        let (done_in, done_out) = (
            to_usize(deflater.total_in()),
            to_usize(deflater.total_out()),
        );
        let status = deflater
            .compress(
                &payload[done_in..],
                &mut out[pos + done_out..],
                FlushCompress::Finish,
            )
            .map_err(CodecError::Deflate)?;
        let written = to_usize(deflater.total_out());
        if status == Status::StreamEnd {
            out.truncate(pos + written);
            return Ok(true);
        }
        let stalled = written == done_out && to_usize(deflater.total_in()) == done_in;
        if written >= room || stalled {
            out.truncate(pos);
            return Ok(false);
        }
    }
}

/// Inflates a raw deflate stream primed with the dictionary, refusing more than `max` bytes.
pub(super) fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, CodecError> {
    let mut inflater = Decompress::new(false);
    inflater
        .set_dictionary(SDP_DICTIONARY)
        .map_err(CodecError::Inflate)?;
    // One byte of room beyond the limit tells "exactly max" from "more than max".
    let limit = max.saturating_add(1);
    // SDP batches inflate 3-5x; start there and double, never past the limit.
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).max(256).min(limit));
    loop {
        let (done_in, done_out) = (
            to_usize(inflater.total_in()),
            to_usize(inflater.total_out()),
        );
        let input = compressed.get(done_in..).unwrap_or_default();
        let status = inflater
            .decompress_vec(input, &mut out, FlushDecompress::None)
            .map_err(CodecError::Inflate)?;
        if out.len() > max {
            return Err(CodecError::TooLarge { max });
        }
        if status == Status::StreamEnd {
            break;
        }
        if out.len() == out.capacity() {
            // A full buffer at the limit holds more than `max` and was refused above.
            let grow = out
                .capacity()
                .max(256)
                .min(limit.saturating_sub(out.capacity()));
            if grow == 0 {
                return Err(CodecError::TooLarge { max });
            }
            out.reserve_exact(grow);
        } else if to_usize(inflater.total_in()) == done_in && out.len() == done_out {
            // Room to write and nothing happened: the input ran out before the final block.
            return Err(CodecError::Truncated);
        }
    }
    if to_usize(inflater.total_in()) != compressed.len() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(out)
}
