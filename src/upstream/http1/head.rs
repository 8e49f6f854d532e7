//! Reading a response head: the status, the fields into a header map
//! that shares the head's bytes, and what the framing and connection
//! fields say, noted as they are parsed.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode, Version};

use crate::headers::ROOM_TO_ADD;
use crate::http1::{
    ConnectionToken, append_field, connection_tokens, decimal_length, field_name, place,
};

/// The most header fields a response head may have.
const MAX_HEADERS: usize = 100;
/// Enough header fields for nearly every response (a Graph answer has
/// about ten); a head with more is parsed again with room for the most.
const FEW_HEADERS: usize = 24;
/// Why a response head is refused: the upstream broke HTTP/1.1.
pub(super) type Invalid = &'static str;

/// The largest response head read, interim (1xx) heads each counted alone.
pub(super) const MAX_HEAD: usize = 64 << 10;

/// A parsed final response head.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) hop: HopFields,
}

/// What the fields that frame the body and govern the connection say,
/// noted while the head is parsed, so that framing and reuse are decided
/// without looking them up in the map again.
pub(super) struct HopFields {
    /// Whether the last `Transfer-Encoding` field ends in `chunked`; none
    /// without the field.
    pub(super) chunked_last: Option<bool>,
    /// The one length every `Content-Length` value agrees on (several
    /// identical values are allowed, RFC 9110 §8.6), or why there is none.
    pub(super) content_length: Result<Option<u64>, &'static str>,
    /// `Connection` lists `close`.
    pub(super) close: bool,
    /// `Connection` lists `keep-alive`.
    pub(super) keep_alive: bool,
}

impl HopFields {
    /// Notes a `Transfer-Encoding` value: the last coding of the last field
    /// is the one that frames the body.
    fn note_transfer_encoding(&mut self, value: &[u8]) {
        let last = value
            .rsplit(|&byte| byte == b',')
            .map(<[u8]>::trim_ascii)
            .find(|coding| !coding.is_empty());
        self.chunked_last = Some(last.is_some_and(|last| last.eq_ignore_ascii_case(b"chunked")));
    }

    /// Notes a `Content-Length` value, which may be a list.
    fn note_content_length(&mut self, value: &[u8]) {
        let Ok(mut found) = self.content_length else {
            return;
        };
        for item in value.split(|&byte| byte == b',') {
            let Some(length) = decimal_length(item.trim_ascii()) else {
                self.content_length = Err("content-length is not a number");
                return;
            };
            if found.is_some_and(|found| found != length) {
                self.content_length = Err("conflicting content-length values");
                return;
            }
            found = Some(length);
        }
        self.content_length = Ok(found);
    }

    /// Notes a `Connection` value; true when it holds only the options
    /// `close` and `keep-alive`, which this hop has then fully consumed.
    fn note_connection(&mut self, value: &[u8]) -> bool {
        let mut options_only = true;
        for token in connection_tokens(value) {
            match token {
                ConnectionToken::Close => self.close = true,
                ConnectionToken::KeepAlive => self.keep_alive = true,
                ConnectionToken::Name(_) => options_only = false,
            }
        }
        options_only
    }
}

impl Default for HopFields {
    fn default() -> Self {
        HopFields {
            chunked_last: None,
            content_length: Ok(None),
            close: false,
            keep_alive: false,
        }
    }
}

/// Where one header field's name and value are in the head.
struct Span {
    name: Range<usize>,
    value: Range<usize>,
}

/// Takes a final response head off the front of `buf` if one is complete;
/// interim (1xx) heads before it are skipped. The header values share the
/// head's bytes instead of being copied, and the fields go into the map
/// taken from `spare`, emptied: the request's, whose allocation would
/// otherwise be freed as this one is made.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    spare: &mut HeaderMap,
) -> Result<Option<Head>, Invalid> {
    // Room for a field is 32 bytes zeroed per response (its span; the
    // httparse slot is left uninitialised): a table for a hundred costs
    // more than parsing a Graph answer's half dozen. So a small table
    // first, and the full one only for a head that overflows it (1xx heads
    // already read stay read).
    let parsed = match parse_head_within::<FEW_HEADERS>(buf, spare) {
        Err(Overflow::TooManyFields) => parse_head_within::<MAX_HEADERS>(buf, spare),
        parsed => parsed,
    };
    parsed.map_err(|overflow| match overflow {
        Overflow::TooManyFields => "more than 100 header fields",
        Overflow::Other(err) => err,
    })
}

/// Why [`parse_head_within`] gave up.
enum Overflow {
    /// The head has more fields than the table had room for.
    TooManyFields,
    Other(Invalid),
}

impl From<Invalid> for Overflow {
    fn from(err: Invalid) -> Self {
        Overflow::Other(err)
    }
}

/// [`parse_head`] with room for `N` header fields.
fn parse_head_within<const N: usize>(
    buf: &mut BytesMut,
    spare: &mut HeaderMap,
) -> Result<Option<Head>, Overflow> {
    loop {
        if buf.is_empty() {
            // The usual case before the first read: nothing to parse yet.
            return Ok(None);
        }
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; N];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Overflow::TooManyFields),
            Err(_) => return Err("malformed response head".into()),
        };
        if len > MAX_HEAD {
            return Err("response head larger than 64 KiB".into());
        }
        let status = response
            .code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or("status code")?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err("101 Switching Protocols, never asked for".into());
        }
        if status.is_informational() {
            // 100 Continue, 103 Early Hints: the answer is still to come.
            buf.advance(len);
            continue;
        }
        let version = match response.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // httparse hands out slices of `buf`; note where they are, so that
        // the values can point into the head once it is frozen.
        let within = &buf[..len];
        let mut spans = [const {
            Span {
                name: 0..0,
                value: 0..0,
            }
        }; N];
        let count = response.headers.len();
        for (span, header) in spans.iter_mut().zip(response.headers.iter()) {
            *span = Span {
                name: place(within, header.name.as_bytes()).ok_or("header field")?,
                value: place(within, header.value).ok_or("header field")?,
            };
        }
        let head = buf.split_to(len).freeze();
        let mut headers = std::mem::take(spare);
        headers.clear();
        headers.reserve(count + ROOM_TO_ADD);
        let mut hop = HopFields::default();
        for span in &spans[..count] {
            let name = field_name(&head[span.name.clone()]).map_err(|_| "header field name")?;
            let value = &head[span.value.clone()];
            if name == CONNECTION {
                if hop.note_connection(value) {
                    // Only options for this hop, which the relay would
                    // strip anyway; a field that names others stays, so
                    // that the relay strips those too.
                    continue;
                }
            } else if name == TRANSFER_ENCODING {
                hop.note_transfer_encoding(value);
            } else if name == CONTENT_LENGTH {
                hop.note_content_length(value);
            }
            append_field(&mut headers, name, &head, span.value.clone())
                .map_err(|_| "header field value")?;
        }
        if hop.chunked_last.is_some() {
            // With Transfer-Encoding, a Content-Length is not the body's
            // length (RFC 9112 §6.3): relayed beside the decoded body, it
            // would frame the client's answer wrong.
            headers.remove(CONTENT_LENGTH);
        }
        return Ok(Some(Head {
            status,
            version,
            headers,
            hop,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_with_many_fields_parse_up_to_the_limit() {
        let head_with = |fields: usize| {
            let mut head = String::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n");
            for n in 0..fields {
                head.push_str(&format!("x-field-{n}: value {n}\r\n"));
            }
            BytesMut::from(format!("{head}\r\n").as_bytes())
        };
        for fields in [
            FEW_HEADERS - 1,
            FEW_HEADERS,
            FEW_HEADERS + 1,
            60,
            MAX_HEADERS,
        ] {
            let head = parse_head(&mut head_with(fields), &mut HeaderMap::new())
                .unwrap_or_else(|_| panic!("{fields} fields"))
                .expect("a whole head");
            assert_eq!(head.headers.len(), fields);
            let last = format!("x-field-{}", fields - 1);
            assert_eq!(head.headers[last.as_str()], format!("value {}", fields - 1));
        }
        assert!(matches!(
            parse_head(&mut head_with(MAX_HEADERS + 1), &mut HeaderMap::new()),
            Err("more than 100 header fields")
        ));
    }
}
