//! Hop-by-hop header rules, RFC 9110 §7.6.1.
//!
//! A proxy must not forward the connection-specific fields of one hop to the
//! next: `Connection` itself, every field it names, and the fields that are
//! hop-by-hop by definition. Framing is redone for each hop: the upstream
//! client announces the exact length of the body it sends when the body
//! knows it (the sender's `Content-Length` when the body is untouched),
//! so a fixed-length body stays fixed-length and a chunked body stays
//! chunked.
//!
//! What both HTTP/1.1 loops (server and upstream client) share is here too,
//! spelled once: how a field name off the wire is read, what a `Connection`
//! value holds, and the framing lines they write.

use std::io::Write as _;

use http::header::{self, HeaderName, InvalidHeaderName};
use http::{HeaderMap, HeaderValue};

/// Fields that only ever describe a single connection (RFC 9110 §7.6.1, plus
/// the obsolete `Keep-Alive` and `Proxy-Connection` that clients still send).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The header a sender uses to name itself to sendgate; it is addressed to
/// this proxy, not to Meta.
pub const CLIENT_HEADER: HeaderName = HeaderName::from_static("x-sendgate-client");

/// The header that tells the sender what sendgate did with a send.
pub const DECISION_HEADER: HeaderName = HeaderName::from_static("x-sendgate-decision");

/// Room an upstream response's header map keeps for the field sendgate adds
/// to it (a send's `x-sendgate-decision`): a map sized to exactly the fields
/// parsed reallocates and rehashes on the first insert.
pub const ROOM_TO_ADD: usize = 1;

/// Removes hop-by-hop fields, including those listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (comparing known names is cheap) finds the
    // few hop-by-hop fields a message has, typically none or an upstream's
    // `Connection: keep-alive`, so that only those cost a hashed removal.
    let mut present = 0u8; // bit i: HOP_BY_HOP[i]
    for name in headers.keys() {
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << at;
        }
    }
    if present == 0 {
        return;
    }
    let mut named = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        named.extend(
            connection_tokens(value.as_bytes()).filter_map(|token| match token {
                ConnectionToken::Name(name) => HeaderName::from_bytes(name).ok(),
                ConnectionToken::Close | ConnectionToken::KeepAlive => None,
            }),
        );
    }
    for name in &named {
        headers.remove(name);
    }
    for (at, hop) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << at) != 0 {
            headers.remove(hop);
        }
    }
}

/// `HeaderName::from_bytes` for a field name off the wire, with the
/// spellings senders and Graph use most matched as they are first:
/// `from_bytes` maps every byte through a table before it looks for a
/// standard name, which was about 130 instructions a field.
pub fn field_name(bytes: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
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
pub enum ConnectionToken<'a> {
    /// The `close` option.
    Close,
    /// The `keep-alive` option (Keep-Alive is hop-by-hop anyway).
    KeepAlive,
    /// A field name, hop-by-hop for this message.
    Name(&'a [u8]),
}

/// The items of a `Connection` value, empty ones skipped.
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = ConnectionToken<'_>> {
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
pub fn connection_closes(value: &[u8]) -> bool {
    connection_tokens(value).any(|token| token == ConnectionToken::Close)
}

/// A `Content-Length` number: decimal digits only (no sign, no spaces, no
/// list), and none if it overflows.
pub fn decimal_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        let digit = char::from(digit).to_digit(10)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Appends a `content-length` field line, as both HTTP/1.1 loops frame
/// their messages (`itoa`, because `fmt` costs more than the rest of the
/// line).
pub fn push_content_length(out: &mut Vec<u8>, length: u64) {
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends the size line of a chunk of `len` bytes (RFC 9112 §7.1).
// Inlined into both loops' writers: as a call, the response writer lost
// its own inlining and cost about 400 instructions more per request
// (benches/load/icount.sh), chunked or not.
#[inline]
pub fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{len:x}\r\n");
}

/// What follows a chunk's bytes.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk of a chunked body, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The first value of `name`, found by walking the fields in order. For a
/// name outside `http`'s standard set (such as [`CLIENT_HEADER`]) on a
/// request's handful of fields this costs less than `HeaderMap::get`,
/// which hashes the name's bytes first.
pub fn find_field<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    headers
        .iter()
        .find_map(|(field, value)| (field == name).then_some(value))
}

/// Request fields that do not go upstream as the sender wrote them, beside
/// the hop-by-hop ones: the upstream client writes Host (or `:authority`)
/// for the upstream and frames the body it sends (which a rewrite may have
/// changed), and sendgate's own control header stops here. Each client
/// leaves these out as it writes the request, which costs less than taking
/// them out of the map first.
pub const NOT_FORWARDED: [HeaderName; 4] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    CLIENT_HEADER,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn strips_fixed_and_named_hop_by_hop_fields() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Trace-Hop"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-trace-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-connection", "keep-alive"),
            ("authorization", "Bearer t"),
            ("content-length", "12"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "content-length", "content-type"]);
    }

    #[test]
    fn each_hop_by_hop_field_alone_is_stripped() {
        for name in HOP_BY_HOP {
            let mut headers = map(&[("accept", "*/*"), (name.as_str(), "x")]);
            strip_hop_by_hop(&mut headers);
            assert!(!headers.contains_key(&name), "{name} was kept");
            assert!(headers.contains_key("accept"));
        }
    }

    #[test]
    fn a_field_is_found_by_its_name_in_any_spelling() {
        let headers = map(&[
            ("Accept", "*/*"),
            ("X-Sendgate-Client", "crm"),
            ("x-sendgate-client", "second"),
        ]);
        assert_eq!(find_field(&headers, &CLIENT_HEADER).unwrap(), "crm");
        assert_eq!(find_field(&headers, &header::ACCEPT).unwrap(), "*/*");
        assert_eq!(find_field(&headers, &DECISION_HEADER), None);
    }

    #[test]
    fn junk_connection_values_are_ignored() {
        let mut headers = map(&[("connection", ", ,bad header name,"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut headers);
        assert!(headers.contains_key("accept"));
        assert!(!headers.contains_key("connection"));
    }

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
}
