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
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

use crate::http1::{ConnectionToken, connection_tokens};

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
pub(crate) const CLIENT_HEADER: HeaderName = HeaderName::from_static("x-sendgate-client");

/// The header that tells the sender what sendgate did with a send.
pub(crate) const DECISION_HEADER: HeaderName = HeaderName::from_static("x-sendgate-decision");

/// Room an upstream response's header map keeps for the field sendgate adds
/// to it (a send's `x-sendgate-decision`): a map sized to exactly the fields
/// parsed reallocates and rehashes on the first insert.
pub(crate) const ROOM_TO_ADD: usize = 1;

/// Removes hop-by-hop fields, including those listed in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// The first value of `name`, found by walking the fields in order. For a
/// name outside `http`'s standard set (such as [`CLIENT_HEADER`]) on a
/// request's handful of fields this costs less than `HeaderMap::get`,
/// which hashes the name's bytes first.
pub(crate) fn find_field<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
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
pub(crate) const NOT_FORWARDED: [HeaderName; 4] = [
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
}
