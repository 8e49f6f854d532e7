//! Framing a body on the way out (RFC 9112 §6, §7.1): a length announced
//! up front, or chunks. Responses to senders and requests to the upstream
//! are framed by the same [`Encoder`], so a rule (never send more than was
//! announced, say when less came) holds in both directions.

use std::io::Write as _;

/// What follows a chunk's bytes.
pub(crate) const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk of a chunked body, with no trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a body is framed, and how much of an announced length is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoder {
    /// As many bytes as `content-length` says; this many are still to come.
    Length(u64),
    /// `transfer-encoding: chunked`, for a body of unknown length.
    Chunked,
}

/// More body than the length announced: sending it would corrupt the
/// connection, so the message fails instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overrun;

/// Less body than the length announced: the peer must see the message cut
/// short (the connection closes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Short;

impl Encoder {
    /// The framing field of a message framed so, for its head.
    pub(crate) fn write_field(self, out: &mut Vec<u8>) {
        match self {
            Encoder::Length(length) => push_content_length(out, length),
            Encoder::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
    }

    /// Counts `len` more body bytes and writes what goes before them.
    // Inlined into both loops' writers: as a call, the response writer lost
    // its own inlining (BENCHMARKS.md, "Design choices").
    #[inline]
    pub(crate) fn begin(&mut self, len: usize, out: &mut Vec<u8>) -> Result<(), Overrun> {
        match self {
            Encoder::Length(left) => *left = left.checked_sub(len as u64).ok_or(Overrun)?,
            Encoder::Chunked => push_chunk_size(out, len),
        }
        Ok(())
    }

    /// Writes what goes after a part's bytes.
    #[inline]
    pub(crate) fn end(self, out: &mut Vec<u8>) {
        if let Encoder::Chunked = self {
            out.extend_from_slice(CHUNK_END);
        }
    }

    /// Appends non-empty `data` as the next part of the body.
    pub(crate) fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), Overrun> {
        if !data.is_empty() {
            self.begin(data.len(), out)?;
            out.extend_from_slice(data);
            self.end(out);
        }
        Ok(())
    }

    /// Writes the end of the body; `Short` when an announced length is not
    /// all there.
    pub(crate) fn finish(self, out: &mut Vec<u8>) -> Result<(), Short> {
        match self {
            Encoder::Length(0) => Ok(()),
            Encoder::Length(_) => Err(Short),
            Encoder::Chunked => {
                out.extend_from_slice(LAST_CHUNK);
                Ok(())
            }
        }
    }
}

/// Appends a `content-length` field line (`itoa`, because `fmt` costs more
/// than the rest of the line).
pub(crate) fn push_content_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends the size line of a chunk of `len` bytes (RFC 9112 §7.1).
#[inline]
fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{len:x}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(mut encoder: Encoder, parts: &[&[u8]]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        encoder.write_field(&mut out);
        for part in parts {
            encoder
                .encode(part, &mut out)
                .map_err(|Overrun| "overrun".to_owned())?;
        }
        encoder
            .finish(&mut out)
            .map_err(|Short| "short".to_owned())?;
        Ok(out)
    }

    #[test]
    fn a_length_is_announced_and_held_to() {
        assert_eq!(
            framed(Encoder::Length(5), &[b"ab", b"", b"cde"]).unwrap(),
            b"content-length: 5\r\nabcde"
        );
        assert_eq!(
            framed(Encoder::Length(5), &[b"abcdef"]).unwrap_err(),
            "overrun"
        );
        assert_eq!(framed(Encoder::Length(5), &[b"abcd"]).unwrap_err(), "short");
        assert_eq!(
            framed(Encoder::Length(0), &[]).unwrap(),
            b"content-length: 0\r\n"
        );
    }

    #[test]
    fn chunks_carry_their_size_and_end_with_the_last_chunk() {
        assert_eq!(
            framed(Encoder::Chunked, &[b"hello", b"", &[b'x'; 17]]).unwrap(),
            b"transfer-encoding: chunked\r\n5\r\nhello\r\n11\r\nxxxxxxxxxxxxxxxxx\r\n0\r\n\r\n"
        );
        assert_eq!(
            framed(Encoder::Chunked, &[]).unwrap(),
            b"transfer-encoding: chunked\r\n0\r\n\r\n"
        );
    }
}
