//! HTTP/1.1 on the wire, as both of sendgate's own loops speak it: the
//! server loop that reads requests from senders (`server::http1`) and the
//! client that writes them to the upstream (`upstream::http1`).
//!
//! What is the same in both directions is written once, here: how a field
//! name off the wire is read, what a `Connection` value holds, what a
//! length is, which statuses have no body, how header values are taken
//! from a frozen head without copying, how a body is framed on the way out
//! ([`encode`]) and how a chunked body is read ([`decode`]); and the read
//! buffers the server loop borrows per thread ([`buffers`]). Each loop keeps
//! only the rules of its own side: which requests the server takes itself,
//! how the client decides a response's framing and reuse (RFC 9112 §6.3).

pub(crate) mod buffers;
pub(crate) mod decode;
pub(crate) mod encode;

use std::ops::Range;

use bytes::Bytes;
use http::header::{self, HeaderName, InvalidHeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};

/// `HeaderName::from_bytes` for a field name off the wire, with the
/// spellings senders and Graph use most matched as they are first:
/// `from_bytes` maps every byte through a table before it looks for a
/// standard name (BENCHMARKS.md, "Design choices").
pub(crate) fn field_name(bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    use header::*;
    Ok(match bytes {
        b"host" | b"Host" => HOST,
        b"date" | b"Date" => DATE,
        b"accept" | b"Accept" => ACCEPT,
        b"server" | b"Server" => SERVER,
        b"connection" | b"Connection" => CONNECTION,
        b"user-agent" | b"User-Agent" => USER_AGENT,
        b"content-type" | b"Content-Type" => CONTENT_TYPE,
        b"authorization" | b"Authorization" => AUTHORIZATION,
        b"content-length" | b"Content-Length" => CONTENT_LENGTH,
        b"accept-encoding" | b"Accept-Encoding" => ACCEPT_ENCODING,
        _ => return HeaderName::from_bytes(bytes),
    })
}

/// One item of a `Connection` value (RFC 9110 §7.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionToken<'a> {
    /// The `close` option.
    Close,
    /// The `keep-alive` option (Keep-Alive is hop-by-hop anyway).
    KeepAlive,
    /// A field name, hop-by-hop for this message.
    Name(&'a [u8]),
}

/// The items of a `Connection` value, empty ones skipped.
pub(crate) fn connection_tokens(value: &[u8]) -> impl Iterator<Item = ConnectionToken<'_>> {
    value
        .split(|&byte| byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
        .map(|token| {
            if token.eq_ignore_ascii_case(b"close") {
                ConnectionToken::Close
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                ConnectionToken::KeepAlive
            } else {
                ConnectionToken::Name(token)
            }
        })
}

/// Whether a `Connection` value asks for the connection to close.
pub(crate) fn connection_closes(value: &[u8]) -> bool {
    connection_tokens(value).any(|token| token == ConnectionToken::Close)
}

/// A `Content-Length` number: decimal digits only (no sign, no spaces, no
/// list), and none if it overflows.
pub(crate) fn decimal_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        let digit = char::from(digit).to_digit(10)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Statuses whose responses never carry a body, whatever their fields say
/// (RFC 9110 §6.4.1): informational, 204 and 304. (A response to HEAD has
/// none either; that is the request's rule, which only the client knows.)
pub(crate) fn status_has_no_body(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Where `part`, a slice `httparse` handed out of `buffer`, sits in it:
/// values are noted as places while parsing and taken from the frozen head
/// afterwards, so that they share its bytes instead of being copied.
pub(crate) fn place(buffer: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(buffer.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= buffer.len()).then_some(start..end)
}

/// A field whose value is not a valid header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidValue;

/// Appends the field `name` with the value at `value` in `head` to `map`,
/// sharing the head's bytes.
pub(crate) fn append_field(
    map: &mut HeaderMap,
    name: HeaderName,
    head: &Bytes,
    value: Range<usize>,
) -> Result<(), InvalidValue> {
    let value = HeaderValue::from_maybe_shared(head.slice(value)).map_err(|_| InvalidValue)?;
    map.append(name, value);
    Ok(())
}

/// The body framing's invariants (the `chunked` fuzz target). The first
/// byte picks sizes, the rest is the body: decoding it does not depend on
/// how its bytes arrive; what the encoder frames in chunks, the decoder
/// reads back whole; and a length encoder takes exactly its length.
#[cfg(any(test, fuzzing))]
pub(crate) fn check_chunked(data: &[u8]) {
    use encode::{Encoder, Overrun, Short};
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let whole = decode_in_pieces(body, body.len().max(1));
    assert_eq!(whole, decode_in_pieces(body, usize::from(first % 16) + 1));

    let part_size = usize::from(first) + 1;
    let mut framed = Vec::new();
    let mut chunked = Encoder::Chunked;
    for part in body.chunks(part_size) {
        chunked
            .encode(part, &mut framed)
            .expect("chunks have no limit");
    }
    chunked.finish(&mut framed).expect("chunks have no length");
    let read_back = decode_in_pieces(&framed, part_size);
    assert_eq!(read_back, (body.to_vec(), Ok(true), Vec::new()));

    let mut sent = Vec::new();
    let mut length = Encoder::Length(body.len() as u64);
    for part in body.chunks(part_size) {
        length.encode(part, &mut sent).expect("within the length");
    }
    assert_eq!(sent, body);
    assert_eq!(length.encode(b"x", &mut sent), Err(Overrun));
    assert_eq!(length.finish(&mut sent), Ok(()));
    let mut short = Encoder::Length(body.len() as u64 + 1);
    short.encode(body, &mut sent).expect("within the length");
    assert_eq!(short.finish(&mut sent), Err(Short));
}

/// Decodes `bytes` as a chunked body arriving `piece` bytes at a time:
/// the data, whether the body ended (or why it is invalid), and the bytes
/// after its end.
#[cfg(any(test, fuzzing))]
fn decode_in_pieces(
    bytes: &[u8],
    piece: usize,
) -> (Vec<u8>, Result<bool, decode::Invalid>, Vec<u8>) {
    use decode::{ChunkedDecoder, Decoded};
    let mut decoder = ChunkedDecoder::new();
    let mut buf = bytes::BytesMut::new();
    let mut data = Vec::new();
    let mut pieces = bytes.chunks(piece);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(part)) => {
                assert!(!part.is_empty(), "a data step with no data");
                data.extend_from_slice(&part);
            }
            Ok(Decoded::End) => {
                let mut after = buf.to_vec();
                pieces.for_each(|more| after.extend_from_slice(more));
                return (data, Ok(true), after);
            }
            Ok(Decoded::NeedMore) => match pieces.next() {
                Some(more) => buf.extend_from_slice(more),
                None => return (data, Ok(false), Vec::new()),
            },
            Err(why) => return (data, Err(why), Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_read_as_from_bytes_reads_them() {
        for name in [
            "host",
            "Host",
            "HOST",
            "date",
            "Date",
            "accept",
            "Accept",
            "server",
            "Server",
            "connection",
            "Connection",
            "user-agent",
            "User-Agent",
            "content-type",
            "Content-Type",
            "CONTENT-TYPE",
            "authorization",
            "Authorization",
            "content-length",
            "Content-Length",
            "accept-encoding",
            "Accept-Encoding",
            "x-sendgate-client",
            "X-Custom",
            "hosts",
            "hos",
            "a",
        ] {
            assert_eq!(
                field_name(name.as_bytes()).unwrap(),
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "{name}"
            );
        }
        for junk in [&b""[..], b"bad name", b"host:", b"\xff"] {
            assert!(field_name(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn content_length_is_decimal_digits_only() {
        assert_eq!(decimal_length(b"0"), Some(0));
        assert_eq!(decimal_length(b"0012"), Some(12));
        assert_eq!(decimal_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b" 1",
            b"1 ",
            b"-1",
            b"+1",
            b"1,1",
            b"0x10",
            b"18446744073709551616",
        ] {
            assert_eq!(decimal_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn connection_tokens_are_read_in_any_case_and_spacing() {
        use ConnectionToken::{Close, KeepAlive, Name};
        fn tokens(value: &[u8]) -> Vec<ConnectionToken<'_>> {
            connection_tokens(value).collect()
        }
        assert_eq!(tokens(b"Keep-Alive, Close"), [KeepAlive, Close]);
        assert_eq!(tokens(b" close ,,\tX-Hop"), [Close, Name(b"X-Hop")]);
        assert_eq!(
            tokens(b"closed, x-close"),
            [Name(b"closed"), Name(b"x-close")]
        );
        assert_eq!(tokens(b" , "), []);
        assert!(connection_closes(b"keep-alive, CLOSE"));
        assert!(!connection_closes(b"closed, x-close"));
        assert!(!connection_closes(b""));
    }

    #[test]
    fn only_informational_204_and_304_responses_have_no_body() {
        for status in [100, 103, 204, 304] {
            assert!(
                status_has_no_body(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [200, 201, 205, 302, 400, 500] {
            assert!(
                !status_has_no_body(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn places_are_found_only_inside_the_buffer() {
        let buffer = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert_eq!(place(buffer, &buffer[16..20]), Some(16..20));
        assert_eq!(place(&buffer[..10], &buffer[8..12]), None);
        assert_eq!(place(&buffer[4..], &buffer[..2]), None);
        let head = Bytes::from_static(buffer);
        let mut map = HeaderMap::new();
        append_field(&mut map, header::HOST, &head, 22..23).unwrap();
        assert_eq!(map[header::HOST], "a");
    }
}
