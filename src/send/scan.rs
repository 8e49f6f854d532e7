//! The fast path for finding a send body's top-level members.
//!
//! serde_json is costly at handing over the members of a short text send
//! (each value is buffered as a `RawValue`, then checked as UTF-8 again;
//! BENCHMARKS.md, "Design choices"). This scanner
//! walks the bytes once, allocates nothing but the member list, and accepts
//! only what is certainly valid JSON. It is stricter than serde_json, never
//! looser: anything it is unsure of (a key with escapes, nesting deeper than
//! [`MAX_DEPTH`]) and anything invalid returns `None`, and the caller asks
//! serde_json, which has the last word and writes the error message. A
//! differential test holds the two to the same answers.

/// Containers nested inside a member's value beyond which the scanner leaves
/// the body to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 64;

/// One top-level member of a send body, its key read as `K`: the key's
/// text as [`object_members`] finds it, or the payload's `Key` for the
/// decision.
pub(super) struct RawMember<'a, K> {
    pub key: K,
    /// The value's raw JSON, borrowed from the body.
    pub value: &'a str,
}

/// The members of `body` if it is one JSON object (with white space around
/// it) that this scanner vouches for; `None` leaves the verdict to serde_json.
/// Each key is its text as written: free of escapes, so also as decoded.
pub(super) fn object_members(body: &[u8]) -> Option<Vec<RawMember<'_, &str>>> {
    // Outside strings only ASCII is valid JSON, and serde_json checks every
    // string as UTF-8, so checking the whole body at once is the same test.
    let text = std::str::from_utf8(body).ok()?;
    let mut pos = skip_space(body, 0);
    if body.get(pos) != Some(&b'{') {
        return None;
    }
    pos = skip_space(body, pos + 1);
    let mut members = Vec::with_capacity(8);
    if body.get(pos) == Some(&b'}') {
        pos += 1;
    } else {
        loop {
            let (key_end, escaped) = string_end(body, pos)?;
            if escaped {
                return None;
            }
            let key = &text[pos + 1..key_end - 1];
            let value_start = after_colon(body, key_end)?;
            pos = value_end(body, value_start)?;
            members.push(RawMember {
                key,
                value: &text[value_start..pos],
            });
            pos = skip_space(body, pos);
            match body.get(pos) {
                Some(b',') => pos = skip_space(body, pos + 1),
                Some(b'}') => {
                    pos += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_space(body, pos) == body.len()).then_some(members)
}

/// JSON white space (RFC 8259 §2).
fn skip_space(body: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = body.get(pos) {
        pos += 1;
    }
    pos
}

/// From just after a key to the start of its value.
fn after_colon(body: &[u8], pos: usize) -> Option<usize> {
    let pos = skip_space(body, pos);
    (body.get(pos) == Some(&b':')).then(|| skip_space(body, pos + 1))
}

/// From a key's opening quote to the start of its value.
fn key_and_colon(body: &[u8], pos: usize) -> Option<usize> {
    after_colon(body, string_end(body, pos)?.0)
}

/// Where the string opening at `pos` ends (just past its closing quote), and
/// whether it has escapes.
// Inlined, with `next_special`, into its three callers: a send body is a
// dozen short strings, and the call and its returned pair cost about as
// much as scanning one.
#[inline(always)]
fn string_end(body: &[u8], pos: usize) -> Option<(usize, bool)> {
    if body.get(pos) != Some(&b'"') {
        return None;
    }
    let mut pos = pos + 1;
    let mut escaped = false;
    loop {
        pos = next_special(body, pos);
        match *body.get(pos)? {
            b'"' => return Some((pos + 1, escaped)),
            b'\\' => {
                escaped = true;
                pos += match *body.get(pos + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                    // Like serde_json, a lone surrogate passes here; it fails
                    // only when the string is decoded.
                    b'u' if body
                        .get(pos + 2..pos + 6)?
                        .iter()
                        .all(u8::is_ascii_hexdigit) =>
                    {
                        6
                    }
                    _ => return None,
                };
            }
            _ => return None, // a control character
        }
    }
}

/// The first `"`, `\` or control character at or after `pos` (or the end),
/// eight bytes at a time: string contents are most of a send body.
#[inline(always)]
fn next_special(body: &[u8], mut pos: usize) -> usize {
    const ONES: u64 = u64::MAX / 255; // 0x01 in every byte
    const HIGH_BITS: u64 = ONES << 7;
    // The high bit of each byte of `word` that is zero, plus maybe some above
    // the lowest such byte (a borrow), never below it: so the lowest bit set
    // marks the first match.
    let zero_bytes = |word: u64| word.wrapping_sub(ONES) & !word;
    while let Some(chunk) = body.get(pos..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(*chunk);
        let below_space = word.wrapping_sub(ONES * 0x20) & !word;
        let found = (below_space
            | zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\'))))
            & HIGH_BITS;
        if found != 0 {
            return pos + found.trailing_zeros() as usize / 8;
        }
        pos += 8;
    }
    while body
        .get(pos)
        .is_some_and(|&byte| byte >= 0x20 && byte != b'"' && byte != b'\\')
    {
        pos += 1;
    }
    pos
}

/// Where the number starting at `pos` ends (RFC 8259 §6: no leading zeros,
/// digits on both sides of a point, an exponent with digits).
fn number_end(body: &[u8], mut pos: usize) -> Option<usize> {
    if body.get(pos) == Some(&b'-') {
        pos += 1;
    }
    pos = match *body.get(pos)? {
        b'0' => pos + 1,
        b'1'..=b'9' => digits_end(body, pos + 1),
        _ => return None,
    };
    if body.get(pos) == Some(&b'.') {
        pos = at_least_one_digit(body, pos + 1)?;
    }
    if let Some(b'e' | b'E') = body.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = body.get(pos) {
            pos += 1;
        }
        pos = at_least_one_digit(body, pos)?;
    }
    Some(pos)
}

fn digits_end(body: &[u8], mut pos: usize) -> usize {
    while body.get(pos).is_some_and(u8::is_ascii_digit) {
        pos += 1;
    }
    pos
}

fn at_least_one_digit(body: &[u8], pos: usize) -> Option<usize> {
    let end = digits_end(body, pos);
    (end > pos).then_some(end)
}

fn literal_end(body: &[u8], pos: usize, word: &[u8]) -> Option<usize> {
    let end = pos + word.len();
    (body.get(pos..end)? == word).then_some(end)
}

/// Where the value starting at `pos` ends. Nested containers are tracked
/// without recursion, one bit per level (set for an object), so no body can
/// exhaust the stack.
fn value_end(body: &[u8], mut pos: usize) -> Option<usize> {
    let mut objects: u64 = 0;
    let mut depth = 0;
    loop {
        // A value starts at `pos`.
        match *body.get(pos)? {
            b'"' => pos = string_end(body, pos)?.0,
            open @ (b'{' | b'[') => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let object = open == b'{';
                pos = skip_space(body, pos + 1);
                if body.get(pos) == Some(if object { &b'}' } else { &b']' }) {
                    pos += 1;
                } else {
                    depth += 1;
                    objects = objects << 1 | u64::from(object);
                    if object {
                        pos = key_and_colon(body, pos)?;
                    }
                    continue;
                }
            }
            b't' => pos = literal_end(body, pos, b"true")?,
            b'f' => pos = literal_end(body, pos, b"false")?,
            b'n' => pos = literal_end(body, pos, b"null")?,
            b'-' | b'0'..=b'9' => pos = number_end(body, pos)?,
            _ => return None,
        }
        // A value ended at `pos`: close what it ends, or go on to the next.
        loop {
            if depth == 0 {
                return Some(pos);
            }
            pos = skip_space(body, pos);
            let in_object = objects & 1 == 1;
            match *body.get(pos)? {
                b',' => {
                    pos = skip_space(body, pos + 1);
                    if in_object {
                        pos = key_and_colon(body, pos)?;
                    }
                    break;
                }
                b'}' if in_object => {}
                b']' if !in_object => {}
                _ => return None,
            }
            pos += 1;
            depth -= 1;
            objects >>= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::payload::{self, SendPayload};
    use super::*;

    /// serde_json's answer: the members in order, or `None` if it refuses.
    fn serde_members(body: &[u8]) -> Option<Vec<(String, String)>> {
        let members = payload::serde_members::<String>(body).ok()?;
        Some(
            members
                .into_iter()
                .map(|m| (m.key, m.value.to_owned()))
                .collect(),
        )
    }

    fn scanned(body: &[u8]) -> Option<Vec<(String, String)>> {
        object_members(body).map(|members| {
            members
                .iter()
                .map(|m| (m.key.to_owned(), m.value.to_owned()))
                .collect()
        })
    }

    /// The scanner may decline what serde_json accepts, never the reverse,
    /// and where it accepts it finds the same members; so the send's facts
    /// (and errors) are the same whichever path read them.
    fn assert_agrees(body: &[u8]) {
        let shown = String::from_utf8_lossy(body);
        if let Some(ours) = scanned(body) {
            assert_eq!(
                Some(&ours),
                serde_members(body).as_ref(),
                "scanner and serde_json disagree on {shown:?}"
            );
        }
        assert_eq!(
            format!("{:?}", SendPayload::parse(body)),
            format!("{:?}", SendPayload::parse_with_serde(body)),
            "the send's facts differ on {shown:?}"
        );
    }

    const SEEDS: [&str; 5] = [
        r#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"+16315551234","type":"text","text":{"body":"hello"}}"#,
        "{ \"to\" : 16315551234 ,\n\t\"recipient\":null, \"x\":[true,false,-0.5e+7,{}], \"y\":[[]] }\r\n",
        r#"{"template":{"name":"otp","language":{"code":"en_US"},"components":[{"type":"body","parameters":[{"type":"text","text":"h\u00e9 \"q\" \\ \/ \b\f\n\r\t"}]}]},"to":"US.1"}"#,
        r#"{"a":{"b":{"c":[1,2.25,3E2,-4e-2,0]}},"k\u00e9y":"v","":""}"#,
        "{}",
    ];

    #[test]
    fn accepts_what_sends_look_like() {
        for seed in SEEDS {
            // Keys with escapes are left to serde_json.
            let expect_scanned = !seed.contains(r"k\u00e9y");
            assert_eq!(
                object_members(seed.as_bytes()).is_some(),
                expect_scanned,
                "{seed}"
            );
            assert!(serde_members(seed.as_bytes()).is_some(), "{seed}");
            assert_agrees(seed.as_bytes());
        }
        let pair = |key: &str, value: &str| (key.to_owned(), value.to_owned());
        assert_eq!(
            scanned(SEEDS[1].as_bytes()).unwrap(),
            [
                pair("to", "16315551234"),
                pair("recipient", "null"),
                pair("x", "[true,false,-0.5e+7,{}]"),
                pair("y", "[[]]"),
            ]
        );
    }

    #[test]
    fn edge_cases_agree_with_serde_json() {
        let cases: &[&[u8]] = &[
            b"",
            b" ",
            b"{",
            b"}",
            b"[]",
            b"\"to\"",
            b"{}x",
            b"{} {}",
            b"\xef\xbb\xbf{}",
            b"{,}",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"{\"a\":01}",
            b"{\"a\":-}",
            b"{\"a\":1.}",
            b"{\"a\":.5}",
            b"{\"a\":+1}",
            b"{\"a\":1e}",
            b"{\"a\":1e+}",
            b"{\"a\":-0}",
            b"{\"a\":0.0e-0}",
            b"{\"a\":1E999999}",
            b"{\"a\":tru}",
            b"{\"a\":nul}",
            b"{\"a\":truex}",
            b"{\"a\":NaN}",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":\"\\ud83d\\ude00\"}",
            b"{\"a\":\"\\udc00\"}",
            b"{\"a\":\"\\u12\"}",
            b"{\"a\":\"\\u12g4\"}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":\"\\'\"}",
            b"{\"a\":\"\x1f\"}",
            b"{\"a\":\"\x7f\"}",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"\xc3\xa9\"}",
            b"{\"a\":\"\xed\xa0\x80\"}",
            b"{\"a\":[1,]}",
            b"{\"a\":[,1]}",
            b"{\"a\":{\"b\"}}",
            b"{\"a\":{\"b\":1,}}",
            b"{\"a\":[}",
            b"{\"a\":{]}",
            b"{\"a\":\"x}",
            b"{\"\":1}",
            b"{\"a\":1}\x00",
            b"\x0b{}",
            b"{\"a\":[1 2]}",
            b"{\"a\":{\"b\":1 \"c\":2}}",
        ];
        for case in cases {
            assert_agrees(case);
        }
    }

    #[test]
    fn nesting_is_bounded_and_agrees() {
        for depth in [1, 63, 64, 65, 127, 128, 200, 100_000] {
            let body = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                object_members(body.as_bytes()).is_some(),
                depth <= MAX_DEPTH as usize
            );
            assert_agrees(body.as_bytes());
            let unclosed = format!("{{\"a\":{}}}", "{\"b\":".repeat(depth));
            assert_agrees(unclosed.as_bytes());
        }
    }

    /// Every one-byte deletion, replacement and insertion of each seed, with
    /// the bytes that matter to JSON's grammar: tens of thousands of bodies
    /// near valid ones, where a scanner's mistakes live.
    #[test]
    fn mutations_of_valid_bodies_agree_with_serde_json() {
        const BYTES: &[u8] = b"{}[]\":,\\ \t\n-+.0159eEtfnu\x00\x1f\x7f\xc3\xff/x";
        let mut checked = 0;
        let mut accepted = BTreeMap::<bool, usize>::new();
        for seed in SEEDS {
            let seed = seed.as_bytes();
            let mut check = |body: Vec<u8>| {
                assert_agrees(&body);
                *accepted.entry(object_members(&body).is_some()).or_default() += 1;
                checked += 1;
            };
            for at in 0..seed.len() {
                let mut deleted = seed.to_vec();
                deleted.remove(at);
                check(deleted);
            }
            for at in 0..=seed.len() {
                for &byte in BYTES {
                    if at < seed.len() {
                        let mut replaced = seed.to_vec();
                        replaced[at] = byte;
                        check(replaced);
                    }
                    let mut inserted = seed.to_vec();
                    inserted.insert(at, byte);
                    check(inserted);
                }
            }
        }
        assert!(checked > 20_000, "{checked}");
        // Both verdicts are well represented, so the agreement means something.
        assert!(
            accepted[&true] > 1_000 && accepted[&false] > 1_000,
            "{accepted:?}"
        );
    }
}
