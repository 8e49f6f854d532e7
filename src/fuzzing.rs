//! The invariants the fuzz targets in `fuzz/` hold the parsers to, one
//! function per target, each panicking when an invariant breaks. They are
//! compiled for fuzzing (`--cfg fuzzing`, which cargo-fuzz sets) and for
//! tests, where [`tests`] runs each over seeds and their mutations, so the
//! invariants themselves are checked on every CI run.

use http::Method;
use serde_json::Value;

use crate::identifier::{
    IdClass, classify, is_username_not_group, looks_like_recased_bsuid, phone_digits,
};
use crate::logging::{Escaped, mask};
use crate::route::{self, Route};
use crate::send::facts_of;
use crate::send::payload::{PayloadError, SendPayload, Target};
use crate::send::policy::{self, Addressing, Decision, MessageKind, Policy};
use crate::webhook::learn;

/// Classification matches the documented shapes, and nothing an identifier
/// holds survives into a log line unescaped.
pub fn identifier(data: &[u8]) {
    let value = String::from_utf8_lossy(data);
    let value = value.as_ref();
    match classify(value) {
        IdClass::Phone => {
            let digits = phone_digits(value);
            assert!((7..=15).contains(&digits.len()), "{value:?}");
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_digit() || " +-()".contains(c)),
                "{value:?}"
            );
        }
        class @ (IdClass::Bsuid | IdClass::ParentBsuid) => {
            let bytes = value.as_bytes();
            assert!(bytes[..2].iter().all(u8::is_ascii_uppercase) && bytes[2] == b'.');
            let tail = &value[3..];
            let (parent, tail) = match tail.strip_prefix("ENT.") {
                Some(rest) if !rest.is_empty() => (true, rest),
                _ => (false, tail),
            };
            assert_eq!(parent, class == IdClass::ParentBsuid, "{value:?}");
            assert!((1..=128).contains(&tail.len()), "{value:?}");
            assert!(tail.bytes().all(|b| b.is_ascii_alphanumeric()), "{value:?}");
        }
        IdClass::Username => assert!(
            value.starts_with('@')
                || ((3..=35).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')),
            "{value:?}"
        ),
        IdClass::Invalid => {}
    }
    if is_username_not_group(value) && !value.starts_with('@') {
        assert!(value.len() <= 35, "{value:?}");
    }
    let _ = looks_like_recased_bsuid(value);
    for shown in [
        mask(value, false),
        mask(value, true),
        Escaped(value).to_string(),
    ] {
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() || ('\u{2028}'..='\u{202e}').contains(&c)),
            "{shown:?}"
        );
    }
}

/// The send body reader agrees with serde_json on what is a JSON object,
/// and a rewrite changes nothing but `to` and `recipient`: every other
/// member keeps its value, and the result is valid JSON the reader takes
/// again.
pub fn send_body(data: &[u8]) {
    // Valid JSON: UTF-8 (RFC 8259 §8.1), and what serde_json reads without
    // decoding strings (a lone surrogate escape is valid JSON text, though
    // no Rust string can hold it).
    let valid = std::str::from_utf8(data).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    let object = valid && data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let payload = match (SendPayload::parse(data), object) {
        (Ok(payload), true) => payload,
        (Ok(_), false) => panic!("the reader took what is no JSON object: {data:?}"),
        (Err(PayloadError::DuplicateField(_)), true) => return,
        (Err(error), true) => panic!("an object refused ({error}): {data:?}"),
        (Err(_), false) => return,
    };
    // Compared as values when every string decodes.
    let original: Option<Value> = serde_json::from_slice(data).ok();
    let facts = facts_of(&payload);
    let policy = Policy::default();
    if let Addressing::Person(person) = policy::address(&facts, &policy) {
        for known in [None, Some("16315551234")] {
            let decision = policy::decide(&person, MessageKind::default(), known, &policy);
            if let Decision::Rewrite { to, recipient, .. } = decision {
                check_rewrite(&payload, original.as_ref(), &to, &recipient);
            }
        }
    }
    // Any rewrite the reader can be asked for.
    let targets = [
        Target::Absent,
        Target::FromTo,
        Target::FromRecipient,
        Target::Value("US.1\"\\\u{1}".to_owned()),
    ];
    let pick = |at: usize| targets[usize::from(data.get(at).copied().unwrap_or(0)) % 4].clone();
    check_rewrite(&payload, original.as_ref(), &pick(0), &pick(1));
}

fn check_rewrite(
    payload: &SendPayload<'_>,
    original: Option<&Value>,
    to: &Target,
    recipient: &Target,
) {
    let rewritten = payload.rewrite(to, recipient);
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(&rewritten).is_ok(),
        "a rewrite is not JSON: {rewritten:?}"
    );
    assert!(SendPayload::parse(&rewritten).is_ok(), "{rewritten:?}");
    let Some(original) = original else { return };
    let after: Value = serde_json::from_slice(&rewritten)
        .unwrap_or_else(|err| panic!("a rewrite does not decode ({err}): {rewritten:?}"));
    let without = |value: &Value| {
        let mut object = value.as_object().expect("an object").clone();
        object.remove("to");
        object.remove("recipient");
        object
    };
    assert_eq!(without(original), without(&after), "{rewritten:?}");
    let field = |target: &Target| match target {
        Target::Absent => None,
        Target::FromTo => original.get("to").cloned(),
        Target::FromRecipient => original.get("recipient").cloned(),
        Target::Value(text) => Some(Value::String(text.clone())),
    };
    assert_eq!(after.get("to").cloned(), field(to), "{rewritten:?}");
    assert_eq!(
        after.get("recipient").cloned(),
        field(recipient),
        "{rewritten:?}"
    );
}

/// What a webhook teaches is only ever identifiers of the right shape, and
/// only from a JSON object.
pub fn webhook_learn(data: &[u8]) {
    let Ok(learned) = learn::learn(data) else {
        return;
    };
    assert!(matches!(
        serde_json::from_slice::<Value>(data),
        Ok(Value::Object(_))
    ));
    for item in learned {
        assert!(!item.phone_number_id.is_empty());
        match item.event {
            crate::identity::IdentityEvent::Seen(seen) => {
                assert_eq!(classify(&seen.bsuid), IdClass::Bsuid, "{seen:?}");
                if let Some(parent) = &seen.parent_bsuid {
                    assert_eq!(classify(parent), IdClass::ParentBsuid, "{seen:?}");
                }
                if let Some(phone) = &seen.phone {
                    assert!((7..=15).contains(&phone.len()), "{seen:?}");
                    assert!(phone.bytes().all(|b| b.is_ascii_digit()), "{seen:?}");
                }
                if let Some(username) = &seen.username {
                    assert!(!username.is_empty() && !username.starts_with('@'));
                }
            }
            crate::identity::IdentityEvent::Retired { bsuid } => {
                assert_eq!(classify(&bsuid), IdClass::Bsuid, "{bsuid:?}");
            }
        }
    }
}

/// Methods the route target chooses among.
const METHODS: [&str; 10] = [
    "POST", "GET", "post", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "Post",
];

/// The recognizer never lets a send through as something else.
///
/// Odd first byte: an arbitrary request. What it calls a send is canonical
/// and is recognised as itself once forwarded (the router forwards a send
/// under the path the recognizer gave); a POST it passes through has no
/// canonical send path; batches parse without panicking.
///
/// Even first byte: a canonical send path made from the data, disguised by
/// the data with escapes, dot and empty segments, `;params`, upper case,
/// leading zeros and trailing slashes. It must be recognised as that send.
pub fn route(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    if first % 2 == 0 {
        return disguised_send(rest);
    }
    let method = Method::from_bytes(METHODS[usize::from(first / 2) % METHODS.len()].as_bytes())
        .expect("a valid method");
    let has_body = first & 0x80 != 0;
    let text = String::from_utf8_lossy(rest);
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text.as_ref(), None),
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    match route::recognize(&method, &path, query, has_body) {
        Route::Send(send) => {
            assert_eq!(method, Method::POST);
            assert_eq!(route::send_route(&path), Some(send));
            assert_eq!(
                route::canonical_send_path(&path).as_deref(),
                Some(path.as_str())
            );
        }
        Route::SendAt(canonical) => {
            assert!(
                matches!(
                    route::recognize(&Method::POST, &canonical, None, true),
                    Route::Send(_)
                ),
                "{path:?} -> {canonical:?}"
            );
            assert_eq!(
                route::canonical_send_path(&path).as_deref(),
                Some(canonical.as_str())
            );
        }
        Route::Other if method == Method::POST => {
            assert_eq!(route::canonical_send_path(&path), None, "{path:?}");
        }
        Route::Refuse(_) | Route::Root | Route::Other => {}
    }
    if let Ok(Some(entries)) = route::batch_entries(query, rest) {
        for entry in entries {
            let _ = entry.route();
        }
    }
}

fn disguised_send(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let id = format!("{}", 1 + u64::from(next()) * 7919 + u64::from(next()));
    let version = match next() % 3 {
        0 => None,
        1 => Some("v21.0".to_owned()),
        _ => Some(format!("v{}", next() % 30)),
    };
    let endpoint = if next() % 2 == 0 {
        "messages"
    } else {
        "marketing_messages"
    };
    let canonical = match &version {
        Some(version) => format!("/{version}/{id}/{endpoint}"),
        None => format!("/{id}/{endpoint}"),
    };
    let mut segments: Vec<String> = version
        .into_iter()
        .chain([id, endpoint.to_owned()])
        .collect();
    for segment in &mut segments {
        let noise = next();
        if noise & 1 != 0 {
            *segment = segment.to_ascii_uppercase();
        }
        if noise & 2 != 0 {
            // Escape one character, once or twice.
            let at = usize::from(next()) % segment.len();
            let (head, tail) = segment.split_at(at);
            let mut chars = tail.chars();
            let c = chars.next().expect("not empty");
            let escape = if noise & 4 != 0 { "%25" } else { "%" };
            *segment = format!("{head}{escape}{:02X}{}", u32::from(c), chars.as_str());
        }
        if noise & 8 != 0 && segment.bytes().all(|b| b.is_ascii_digit()) {
            segment.insert(0, '0');
        }
        if noise & 16 != 0 {
            segment.push_str(";p=1");
        }
    }
    let mut path = String::new();
    for segment in &segments {
        let noise = next();
        path.push('/');
        if noise & 1 != 0 {
            path.push('/');
        }
        if noise & 2 != 0 {
            path.push_str("./");
        }
        if noise & 4 != 0 {
            path.push_str("junk/../");
        }
        path.push_str(segment);
    }
    if next() & 1 != 0 {
        path.push('/');
    }
    match route::recognize(&Method::POST, &path, None, true) {
        Route::Send(_) => assert_eq!(path, canonical),
        Route::SendAt(found) => assert_eq!(found, canonical, "{path:?}"),
        other => panic!("{path:?} ({canonical}) was recognised as {other:?}"),
    }
}

/// The request-head parser of the server loop.
pub fn request_head(data: &[u8]) {
    crate::server::check_request_head(data);
}

/// The response-head parser of the upstream client.
pub fn response_head(data: &[u8]) {
    crate::upstream::check_response_head(data);
}

/// Chunked decoding and body encoding, both directions.
pub fn chunked(data: &[u8]) {
    crate::http1::check_chunked(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator: the same inputs on every run.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// A mutation of `seed`: bytes flipped, inserted, removed or cut.
        fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
            let mut out = seed.to_vec();
            for _ in 0..=(self.next() % 4) {
                let at = if out.is_empty() {
                    0
                } else {
                    (self.next() as usize) % out.len()
                };
                match self.next() % 4 {
                    0 if !out.is_empty() => out[at] = self.next() as u8,
                    1 => out.insert(at, self.next() as u8),
                    2 if !out.is_empty() => {
                        out.remove(at);
                    }
                    _ => out.truncate(at),
                }
            }
            out
        }
    }

    fn run(check: fn(&[u8]), seeds: &[&[u8]]) {
        let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
        for seed in seeds {
            check(seed);
            for _ in 0..2_000 {
                check(&random.mutate(seed));
            }
        }
        for _ in 0..2_000 {
            let len = (random.next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| random.next() as u8).collect();
            check(&bytes);
        }
    }

    #[test]
    fn identifiers_hold_their_invariants() {
        run(
            identifier,
            &[
                b"+1 (631) 555-1234",
                b"US.13491208655302741918",
                b"US.ENT.11815799212886844830",
                b"pablo.morales",
                b"@pablo",
                b"abcdefgh\r\nX:1",
                b"Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD",
            ],
        );
    }

    #[test]
    fn send_bodies_hold_their_invariants() {
        run(
            send_body,
            &[
                br#"{"messaging_product":"whatsapp","to":"US.13491208655302741918","type":"text","text":{"body":"hi"}}"#,
                br#"{"to":"16315551234","recipient":"US.1","type":"template","template":{"name":"t"}}"#,
                br#" { "recipient" : "+1 631 555 1234" , "x" : [1, {"to": 2}] } "#,
                br#"{"to":16315551234,"recipient":null,"a\u0041":"\ud83d\ude00"}"#,
                br#"{}"#,
            ],
        );
    }

    #[test]
    fn webhooks_teach_only_well_formed_identifiers() {
        let fixtures = std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webhooks"
        ))
        .unwrap()
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
        let seeds: Vec<&[u8]> = fixtures.iter().map(Vec::as_slice).collect();
        run(webhook_learn, &seeds);
    }

    #[test]
    fn the_recognizer_never_passes_a_send_off_as_something_else() {
        run(
            route,
            &[
                b"\x03/v21.0/106540352242922/messages",
                b"\x83/V21.0//106540352242922/%6Dessages;x?method=post",
                b"\x05/v21.0/1/messages?method=POST",
                b"\x01/?batch=[{\"method\":\"POST\",\"relative_url\":\"1/messages\"}]",
                b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c",
                b"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            ],
        );
    }

    #[test]
    fn request_heads_hold_their_invariants() {
        run(
            request_head,
            &[
                b"POST /v21.0/1/messages HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}",
                b"GET / HTTP/1.1\r\nconnection: close, x\r\nx: \x80\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
                b"HEAD / HTTP/1.1\r\n\r\n",
            ],
        );
    }

    #[test]
    fn response_heads_hold_their_invariants() {
        run(
            response_head,
            &[
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
                b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1, 1\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\nconnection: close, x-a\r\nx-a: 1\r\n\r\n",
            ],
        );
    }

    #[test]
    fn chunked_bodies_read_back_what_was_framed() {
        run(
            chunked,
            &[
                b"\x03hello world",
                b"\x005\r\nhello\r\n0\r\n\r\n",
                b"\x07a;ext=1\r\n0123456789\r\n0\r\ntrailer: x\r\n\r\nafter",
                b"\x01ffffffffffffffffff\r\n",
                b"\x0f3\r\nabc\n0\r\n\r\n",
            ],
        );
    }
}
