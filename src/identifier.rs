//! Pure classification of recipient identifiers (docs/cloud-api.md §1).
//!
//! The Cloud API knows three kinds of person identifier: a phone number
//! (`wa_id`), a business-scoped user ID (BSUID, optionally a *parent* BSUID)
//! and a username. Only the first two can be send targets, and each belongs in
//! its own field. Classification looks at shape alone: it never allocates and
//! never re-cases or trims a value, because BSUIDs are opaque and
//! case-sensitive.

/// What a recipient value is, judged by its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdClass {
    /// Digits with an optional leading `+` and the separators ` `, `-`, `(`, `)`;
    /// 7 to 15 digits (E.164).
    Phone,
    /// `CC.` followed by 1–128 alphanumerics, e.g. `US.13491208655302741918`.
    Bsuid,
    /// `CC.ENT.` followed by 1–128 alphanumerics, valid across linked portfolios.
    ParentBsuid,
    /// A WhatsApp username, with or without a leading `@`. Never a send target.
    Username,
    /// Anything else: empty, too many digits, junk.
    Invalid,
}

impl IdClass {
    /// BSUIDs and parent BSUIDs both go in the `recipient` field.
    pub fn is_bsuid(self) -> bool {
        matches!(self, IdClass::Bsuid | IdClass::ParentBsuid)
    }
}

/// E.164 allows at most 15 digits.
const PHONE_MAX_DIGITS: usize = 15;
/// The shortest numbers in the ITU plan (e.g. Niue, +683 plus four digits) have seven.
const PHONE_MIN_DIGITS: usize = 7;
/// A BSUID's opaque part is 1–128 alphanumerics.
const BSUID_MAX_TAIL: usize = 128;

/// Classifies one recipient value.
///
/// A value in the BSUID shape is a BSUID even though a username written in
/// upper case could look the same (`US.12345`): usernames are case-insensitive
/// and always reach Meta in lower case, so an upper-case country prefix is
/// the stronger signal.
pub fn classify(value: &str) -> IdClass {
    if let Some(class) = classify_bsuid(value) {
        return class;
    }
    if is_phone(value) {
        return IdClass::Phone;
    }
    if value.starts_with('@') || is_username(value) {
        return IdClass::Username;
    }
    IdClass::Invalid
}

/// `^[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}$`, without a regex engine.
fn classify_bsuid(value: &str) -> Option<IdClass> {
    let bytes = value.as_bytes();
    if bytes.len() < 4
        || !bytes[0].is_ascii_uppercase()
        || !bytes[1].is_ascii_uppercase()
        || bytes[2] != b'.'
    {
        return None;
    }
    let rest = &bytes[3..];
    let (class, tail) = match rest.strip_prefix(b"ENT.") {
        Some(tail) if !tail.is_empty() => (IdClass::ParentBsuid, tail),
        _ => (IdClass::Bsuid, rest),
    };
    let well_formed = !tail.is_empty()
        && tail.len() <= BSUID_MAX_TAIL
        && tail.iter().all(u8::is_ascii_alphanumeric);
    well_formed.then_some(class)
}

fn is_phone(value: &str) -> bool {
    // Spaces are separators, so they may come before the `+` too; no other
    // white space (a tab, a line feed) belongs in a phone.
    let trimmed = value.trim_start_matches(' ');
    let body = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let mut digits = 0;
    for byte in body.bytes() {
        match byte {
            b'0'..=b'9' => digits += 1,
            b' ' | b'-' | b'(' | b')' => {}
            _ => return false,
        }
    }
    (PHONE_MIN_DIGITS..=PHONE_MAX_DIGITS).contains(&digits)
}

/// The digits of a phone value, which is how Meta reports a `wa_id` and how the
/// identity store keys phones. `+1 (631) 555-1234` → `16315551234`.
pub fn phone_digits(value: &str) -> String {
    value.chars().filter(char::is_ascii_digit).collect()
}

/// Generic top-level domains a username may not end with (Meta forbids
/// usernames that read as web addresses).
const DOMAIN_ENDINGS: &[&str] = &[
    "com", "net", "org", "edu", "gov", "info", "biz", "io", "app", "dev", "co", "me", "xyz",
    "online", "site", "shop", "store",
];

/// Username rules from docs/cloud-api.md §1: a–z, 0–9, `.`, `_`; 3–35 characters;
/// at least one letter; no leading, trailing or doubled `.`; not starting
/// with `www`; no domain ending. Case-insensitive.
fn is_username(value: &str) -> bool {
    let len = value.len();
    if !(3..=35).contains(&len) {
        return false;
    }
    let bytes = value.as_bytes();
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'_';
    if !bytes.iter().all(allowed) || !bytes.iter().any(u8::is_ascii_alphabetic) {
        return false;
    }
    if value.starts_with('.') || value.ends_with('.') || value.contains("..") {
        return false;
    }
    if bytes[..3].eq_ignore_ascii_case(b"www") {
        return false;
    }
    match value.rsplit_once('.') {
        Some((_, ending)) => !DOMAIN_ENDINGS
            .iter()
            .any(|domain| domain.eq_ignore_ascii_case(ending)),
        None => true,
    }
}

/// True when the `to` of a group send is a username that an SDK took for a
/// group id, rather than a group id. pywa, for one, sends any `to` that is
/// not all digits as `recipient_type: "group"`.
///
/// Meta's group ids are long opaque tokens: its documented example is 58
/// base64 characters, and decodes to `capi_group:<business phone>:<group
/// number>`, which encodes to at least 28 characters with upper-case
/// letters among them. Usernames are 3 to 35 characters of `a`–`z`, `0`–`9`,
/// `.` and `_`. So a `to` with a leading `@`, or a valid username that is
/// not a run of 20 or more base64 characters with an upper-case letter, is
/// no group id.
pub fn is_username_not_group(value: &str) -> bool {
    value.starts_with('@') || (is_username(value) && !could_be_group_id(value))
}

/// The shape of Meta's group ids: 20 or more characters of the base64
/// alphabets (standard and URL-safe), at least one in upper case.
fn could_be_group_id(value: &str) -> bool {
    let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_');
    value.len() >= 20 && value.bytes().all(base64) && value.bytes().any(|b| b.is_ascii_uppercase())
}

/// True when a value would be a BSUID had it not been re-cased on the way,
/// e.g. `us.13491208655302741918`; used only to word a helpful error.
pub fn looks_like_recased_bsuid(value: &str) -> bool {
    let upper = value.to_ascii_uppercase();
    classify_bsuid(&upper).is_some() && classify_bsuid(value).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdClass::*;

    #[test]
    fn documented_examples() {
        assert_eq!(classify("+1 (631) 555-1234"), Phone);
        assert_eq!(classify("16315551234"), Phone);
        assert_eq!(classify("+16505551234"), Phone);
        assert_eq!(classify("US.13491208655302741918"), Bsuid);
        assert_eq!(classify("US.ENT.11815799212886844830"), ParentBsuid);
        assert_eq!(classify("pablo.morales"), Username);
        assert_eq!(classify("@pablomorales"), Username);
        assert_eq!(classify("@pablo.m"), Username);
    }

    #[test]
    fn phone_edges() {
        assert_eq!(
            classify("123456789012345"),
            Phone,
            "15 digits is the E.164 maximum"
        );
        assert_eq!(classify("1234567890123456"), Invalid, "16 digits");
        assert_eq!(classify("+49 30 901820"), Phone);
        assert_eq!(classify("683 1234"), Phone, "seven digits");
        assert_eq!(classify("12345"), Invalid, "too short for any plan");
        assert_eq!(classify(""), Invalid);
        assert_eq!(classify("+"), Invalid);
        assert_eq!(classify("   "), Invalid);
        assert_eq!(classify("1+6315551234"), Invalid, "+ only leads");
        assert_eq!(classify(" +1 631 555 1234"), Phone, "spaces are separators");
        assert_eq!(
            classify("\t\t+5-12)55--34"),
            Invalid,
            "found by fuzzing: other white space before the +"
        );
        assert_eq!(classify("++16315551234"), Invalid);
        assert_eq!(
            classify("1.631.555.1234"),
            Invalid,
            "a phone never has a dot"
        );
        assert_eq!(
            classify("１６３１５５５１２３４"),
            Invalid,
            "only ASCII digits"
        );
    }

    #[test]
    fn bsuid_edges() {
        assert_eq!(classify("US.1"), Bsuid);
        assert_eq!(
            classify("BR.abcDEF123"),
            Bsuid,
            "tail is case-sensitive alphanumerics"
        );
        assert_eq!(classify(&format!("US.{}", "9".repeat(128))), Bsuid);
        assert_ne!(classify(&format!("US.{}", "9".repeat(129))), Bsuid);
        assert_eq!(classify("US."), Invalid);
        assert_eq!(classify("U.123"), Username, "not a BSUID; a valid username");
        assert_eq!(classify("USA.123"), Username);
        assert_eq!(classify("US.ENT.1"), ParentBsuid);
        assert_eq!(classify("US.ENT"), Bsuid, "ENT alone is an opaque tail");
        assert_eq!(classify("US.ENT."), Invalid);
        assert_eq!(classify("US.123 "), Invalid, "never trimmed");
        assert_eq!(classify(" US.123"), Invalid);
        assert_eq!(classify("US.12-3"), Invalid);
    }

    #[test]
    fn lower_case_bsuid_is_a_username_not_a_bsuid() {
        assert_eq!(classify("us.123"), Username);
        assert!(looks_like_recased_bsuid("us.13491208655302741918"));
        assert!(!looks_like_recased_bsuid("US.13491208655302741918"));
        assert!(!looks_like_recased_bsuid("pablo.m"));
    }

    #[test]
    fn username_rules() {
        assert_eq!(classify("Pablo.Morales"), Username, "case-insensitive");
        assert_eq!(classify("a_b"), Username);
        assert_eq!(classify("ab"), Invalid, "too short");
        assert_eq!(classify(&"a".repeat(36)), Invalid, "too long");
        assert_eq!(classify("123_456"), Invalid, "needs a letter");
        assert_eq!(classify(".pablo"), Invalid);
        assert_eq!(classify("pablo."), Invalid);
        assert_eq!(classify("pa..blo"), Invalid);
        assert_eq!(classify("www.pablo"), Invalid);
        assert_eq!(classify("pablo.com"), Invalid);
        assert_eq!(classify("pablo m"), Invalid);
        assert_eq!(
            classify("@x"),
            Username,
            "a leading @ always means a username"
        );
    }

    #[test]
    fn group_targets_that_are_usernames() {
        // Meta's documented group id, and ids of its shape, are group ids.
        let meta_example = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD";
        assert!(!is_username_not_group(meta_example));
        assert!(!is_username_not_group("Y2FwaV9ncm91cDoxNjMxNTU1"));
        // What pywa sends as a group when given a username.
        for username in [
            "pablomorales",
            "pablo.morales",
            "@pablo.m",
            "lucia_99",
            "Pablo.M",
        ] {
            assert!(is_username_not_group(username), "{username}");
        }
        assert!(!is_username_not_group("ab"), "too short to be a username");
        assert!(
            !is_username_not_group(&"a".repeat(36)),
            "too long to be a username"
        );
    }

    #[test]
    fn digits_of_a_phone() {
        assert_eq!(phone_digits("+1 (631) 555-1234"), "16315551234");
        assert_eq!(phone_digits("16315551234"), "16315551234");
    }
}
