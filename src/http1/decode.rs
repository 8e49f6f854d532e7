//! Reading a chunked body (RFC 9112 §7.1) out of a buffer as its bytes
//! arrive. Everything is bounded (a chunk-size line, the trailers), and
//! bytes that do not frame as the RFC says are an error, never a guess.

use bytes::{Buf, Bytes, BytesMut};

/// The longest chunk-size line or trailer line, CRLF excluded.
const MAX_LINE: usize = 4 << 10;
/// The most trailer bytes read (and dropped) after a chunked body.
const MAX_TRAILERS: usize = 16 << 10;

/// Where the decoding of a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkedDecoder {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes are still to come.
    Data(u64),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last chunk: reading trailer lines (this many bytes so
    /// far) up to the empty line.
    Trailers(usize),
}

/// What decoding found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The body ended (trailers read and dropped).
    End,
    /// The buffer holds no whole next step: read more.
    NeedMore,
}

/// Why the bytes are no chunked body.
pub(crate) type Invalid = &'static str;

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        ChunkedDecoder::Size
    }

    /// Decodes from the front of `buf`: the next piece of data, the end, or
    /// a request for more bytes. Chunk extensions are ignored and trailers
    /// dropped.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Invalid> {
        loop {
            match self {
                ChunkedDecoder::Size => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&buf[..end])?;
                    buf.advance(end + 2);
                    *self = match size {
                        0 => ChunkedDecoder::Trailers(0),
                        size => ChunkedDecoder::Data(size),
                    };
                }
                ChunkedDecoder::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                    let data = buf.split_to(take).freeze();
                    *left -= take as u64;
                    if *left == 0 {
                        *self = ChunkedDecoder::DataEnd;
                    }
                    return Ok(Decoded::Data(data));
                }
                ChunkedDecoder::DataEnd => {
                    let crlf = &buf[..buf.len().min(2)];
                    if crlf != &b"\r\n"[..crlf.len()] {
                        return Err("chunk data not followed by CRLF");
                    }
                    if crlf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    buf.advance(2);
                    *self = ChunkedDecoder::Size;
                }
                ChunkedDecoder::Trailers(seen) => {
                    let Some(end) = line_end(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        return Ok(Decoded::End);
                    }
                    *seen += end + 2;
                    if *seen > MAX_TRAILERS {
                        return Err("trailers larger than 16 KiB");
                    }
                }
            }
        }
    }
}

/// Where the CRLF ending the first line of `buf` is, if the line is
/// complete. Lines are bounded, and must end in CRLF, not a bare LF.
fn line_end(buf: &[u8]) -> Result<Option<usize>, Invalid> {
    let window = &buf[..buf.len().min(MAX_LINE + 2)];
    match window.iter().position(|&byte| byte == b'\n') {
        Some(lf) if lf > 0 && window[lf - 1] == b'\r' => Ok(Some(lf - 1)),
        Some(_) => Err("line not ended by CRLF"),
        None if window.len() > MAX_LINE + 1 => Err("chunked line too long"),
        None => Ok(None),
    }
}

/// The size on a chunk-size line, strict hex; the extensions after it
/// (`;name=value`) are skipped but must hold no control characters.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Invalid> {
    let digits = line
        .iter()
        .take_while(|byte| byte.is_ascii_hexdigit())
        .count();
    if digits == 0 {
        return Err("chunk size is not hex");
    }
    let size = line[..digits]
        .iter()
        .try_fold(0u64, |size, &digit| {
            let digit = char::from(digit).to_digit(16)?;
            size.checked_mul(16)?.checked_add(u64::from(digit))
        })
        .ok_or("chunk size too large")?;
    let rest = &line[digits..];
    let spaces = rest
        .iter()
        .take_while(|&&byte| byte == b' ' || byte == b'\t')
        .count();
    let rest = &rest[spaces..];
    if !rest.is_empty() && rest[0] != b';' {
        return Err("chunk size is not hex");
    }
    if rest
        .iter()
        .any(|&byte| byte == 0x7f || (byte < 0x20 && byte != b'\t'))
    {
        return Err("control character in a chunk extension");
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes: the data, or the error.
    fn decode_in_steps(wire: &[u8], step: usize) -> Result<Vec<u8>, Invalid> {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut data = Vec::new();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                Decoded::End => return Ok(data),
                Decoded::NeedMore if fed >= wire.len() => return Err("cut short"),
                Decoded::NeedMore => {
                    let next = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunks_with_extensions_and_trailers_decode_in_any_pieces() {
        let wire = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            assert_eq!(
                decode_in_steps(wire, step).unwrap(),
                b"hello world",
                "{step}"
            );
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        for (wire, why) in [
            (&b"x\r\n"[..], "chunk size is not hex"),
            (b"5\nhello\r\n0\r\n\r\n", "line not ended by CRLF"),
            (b"5\r\nhelloXX0\r\n\r\n", "chunk data not followed by CRLF"),
            (b"5 x\r\nhello\r\n", "chunk size is not hex"),
            (
                b"5;a=\x01\r\nhello\r\n",
                "control character in a chunk extension",
            ),
            (b"10000000000000000\r\n", "chunk size too large"),
            (b"5\r\nhel", "cut short"),
        ] {
            assert_eq!(decode_in_steps(wire, 3), Err(why), "{wire:?}");
        }
        let long = [b'1'; MAX_LINE + 8];
        assert_eq!(decode_in_steps(&long, 512), Err("chunked line too long"));
    }
}
