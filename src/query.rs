//! Decoding of URL query strings and path segments (RFC 3986 percent
//! encoding, plus `+` for space as HTML forms and Meta's handshake use it).

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded.
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
}

/// A query value: `%XX` escapes and `+` as space.
pub(crate) fn percent_decode(text: &str) -> String {
    decode(text, true)
}

/// A path segment: `%XX` escapes only (`+` is a plus sign, as in `+1631…`).
pub(crate) fn decode_path_segment(text: &str) -> String {
    decode(text, false)
}

fn decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of one hex digit.
pub(crate) fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        let pairs: Vec<_> =
            query_pairs("hub.mode=subscribe&hub.verify_token=a%20b%2Bc+d&hub.challenge=123&x")
                .collect();
        assert_eq!(
            pairs,
            [
                ("hub.mode".into(), "subscribe".into()),
                ("hub.verify_token".into(), "a b+c d".into()),
                ("hub.challenge".into(), "123".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(decode_path_segment("%2B1%20631+555"), "+1 631+555");
    }
}
