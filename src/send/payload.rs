//! Reading the facts of a send body, and rewriting only its recipient fields.
//!
//! The body is parsed once, borrowing: every top-level member is located by
//! byte span and only the handful of fields the decision needs are decoded.
//! A rewrite splices new bytes into the original at those spans, so every key
//! the sender wrote, its order, its whitespace and its escapes survive
//! untouched; only `to` and `recipient` change.
//!
//! The members are found by [`scan`](super::scan) when it can vouch for the
//! body, else by serde_json, which also words every error.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer as _};
use serde_json::value::RawValue;

use super::scan::{self, RawMember};

/// Why a body could not be read as a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// Not JSON, or JSON with trailing bytes.
    Malformed(String),
    /// Valid JSON, but not an object.
    NotAnObject,
    /// `to` or `recipient` given twice: which one Meta would use is unknowable.
    DuplicateField(&'static str),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::Malformed(why) => write!(f, "the request body is not valid JSON: {why}"),
            PayloadError::NotAnObject => f.write_str("the request body must be a JSON object"),
            PayloadError::DuplicateField(key) => {
                write!(
                    f,
                    "the field `{key}` appears more than once in the request body"
                )
            }
        }
    }
}

/// The value of a recipient field as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// A JSON string, unescaped.
    Text(Cow<'a, str>),
    /// A bare JSON number, e.g. `"to": 16315551234`; its digits as written.
    Number(&'a str),
    /// `null`, which SDKs write for an unset optional field.
    Null,
    /// An object, array or boolean: never a recipient.
    Other,
}

/// One top-level member: where its key and value sit in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    /// From the key's opening quote to its closing quote, inclusive.
    pub key: Range<usize>,
    /// The value's raw text, a slice of the body (JSON is UTF-8, checked by
    /// the reader), which also tells where it sits in the body.
    pub raw: &'a str,
    pub decoded: FieldValue<'a>,
}

impl Member<'_> {
    /// The value as text when it can be a recipient identifier; `None` for `null`.
    pub fn text(&self) -> Option<&str> {
        match &self.decoded {
            FieldValue::Text(text) => Some(text),
            FieldValue::Number(digits) => Some(digits),
            FieldValue::Null | FieldValue::Other => None,
        }
    }
}

/// What a send body says about its recipient and its message.
#[derive(Debug)]
pub struct SendPayload<'a> {
    body: &'a [u8],
    /// Byte offset of the object's closing `}`.
    close: usize,
    /// Where the last member's value ends; `None` for `{}`.
    last_value_end: Option<usize>,
    pub to: Option<Member<'a>>,
    pub recipient: Option<Member<'a>>,
    pub recipient_type: Option<Cow<'a, str>>,
    pub message_type: Option<Cow<'a, str>>,
    /// The `template` member's raw JSON.
    template: Option<&'a str>,
    /// Marketing Messages API sends with `bid_spec` cannot go to a BSUID (131062).
    pub has_bid_spec: bool,
}

/// The identity of a template named in a send (its category is not in the body).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TemplateRef {
    pub name: String,
    pub language: Option<String>,
}

impl<'a> SendPayload<'a> {
    /// Parses a send body. Only a JSON object is a send.
    pub fn parse(body: &'a [u8]) -> Result<Self, PayloadError> {
        match scan::object_members(body) {
            Some(members) => Self::from_members(
                body,
                members.into_iter().map(|member| RawMember {
                    key: Key::from_name(member.key),
                    value: member.value,
                }),
            ),
            None => Self::parse_with_serde(body),
        }
    }

    /// [`parse`](Self::parse) by serde_json alone: the authority on what is
    /// valid, and the words of every error.
    pub(super) fn parse_with_serde(body: &'a [u8]) -> Result<Self, PayloadError> {
        Self::from_members(body, serde_members(body)?)
    }

    fn from_members(
        body: &'a [u8],
        members: impl IntoIterator<Item = RawMember<'a, Key>>,
    ) -> Result<Self, PayloadError> {
        let open = first_non_space(body, 0).ok_or(PayloadError::NotAnObject)?;
        let close = body
            .iter()
            .rposition(|&b| b == b'}')
            .ok_or(PayloadError::NotAnObject)?;
        let mut payload = SendPayload {
            body,
            close,
            last_value_end: None,
            to: None,
            recipient: None,
            recipient_type: None,
            message_type: None,
            template: None,
            has_bid_spec: false,
        };
        // Between the end of one member (or the `{`) and the next value lie only
        // white space, a comma, the key and a colon, so the key's span follows
        // from the value spans without scanning strings.
        let mut boundary = open + 1;
        for member in members {
            let value = span_of(body, member.value);
            let key_start = first_non_space_or_comma(body, boundary);
            let colon = last_non_space_before(body, value.start);
            let key_end = last_non_space_before(body, colon) + 1;
            boundary = value.end;
            payload.last_value_end = Some(value.end);
            let slot = match member.key {
                Key::To => &mut payload.to,
                Key::Recipient => &mut payload.recipient,
                Key::RecipientType => {
                    payload.recipient_type = decode_str(member.value);
                    continue;
                }
                Key::Type => {
                    payload.message_type = decode_str(member.value);
                    continue;
                }
                Key::Template => {
                    payload.template = Some(member.value);
                    continue;
                }
                Key::BidSpec => {
                    payload.has_bid_spec = true;
                    continue;
                }
                Key::Other => continue,
            };
            if slot.is_some() {
                let name = if matches!(member.key, Key::To) {
                    "to"
                } else {
                    "recipient"
                };
                return Err(PayloadError::DuplicateField(name));
            }
            *slot = Some(Member {
                key: key_start..key_end,
                raw: member.value,
                decoded: decode_field(member.value),
            });
        }
        Ok(payload)
    }

    /// True for `recipient_type: "group"` sends, which address a group id.
    pub fn is_group(&self) -> bool {
        self.recipient_type.as_deref() == Some("group")
    }

    /// The template this send names, if it is a template send.
    pub fn template(&self) -> Option<TemplateRef> {
        #[derive(Deserialize)]
        struct Language {
            code: Option<String>,
        }
        #[derive(Deserialize)]
        struct Template {
            name: Option<String>,
            language: Option<Language>,
        }
        let template: Template = serde_json::from_str(self.template?).ok()?;
        Some(TemplateRef {
            name: template.name?,
            language: template.language.and_then(|language| language.code),
        })
    }

    /// The original bytes, forwarded as they are when nothing changes.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The body with `to` and `recipient` set as asked and nothing else changed.
    pub fn rewrite(&self, to: &Target, recipient: &Target) -> Vec<u8> {
        let to = FieldPlan {
            name: "to",
            existing: self.to.as_ref(),
            new_value: self.target_text(to),
        };
        let recipient = FieldPlan {
            name: "recipient",
            existing: self.recipient.as_ref(),
            new_value: self.target_text(recipient),
        };
        if let (Some(to_member), None, Some(recipient_member), None) = (
            to.existing,
            &to.new_value,
            recipient.existing,
            &recipient.new_value,
        ) {
            // Both go: next to each other, they leave as one member would,
            // or each would take the same comma.
            let (first, second) = match to_member.key.start < recipient_member.key.start {
                true => (to_member, recipient_member),
                false => (recipient_member, to_member),
            };
            let between = &self.body[self.value_span(first).end..second.key.start];
            if between
                .iter()
                .all(|&b| b == b',' || b.is_ascii_whitespace())
            {
                let both = self.with_comma(first.key.start, self.value_span(second).end);
                return apply(self.body, [Some(Edit::replace(both, "")), None]);
            }
        }
        apply(
            self.body,
            [
                self.edit_for(&to, &recipient),
                self.edit_for(&recipient, &to),
            ],
        )
    }

    /// The one edit (if any) that brings `field` to its new value. When one
    /// field is removed and the other is new, the removed member is renamed in
    /// place, so the recipient keeps the position the sender gave it.
    fn edit_for<'t>(&self, field: &'t FieldPlan<'_>, other: &'t FieldPlan<'_>) -> Option<Edit<'t>> {
        match (field.existing, field.new_value.as_deref()) {
            (Some(member), Some(value)) => {
                (member.raw != value).then(|| Edit::replace(self.value_span(member), value))
            }
            (Some(member), None) => Some(match (other.existing, other.new_value.as_deref()) {
                (None, Some(value)) => Edit::member(
                    member.key.start..self.value_span(member).end,
                    "",
                    other.name,
                    value,
                    "",
                ),
                _ => Edit::replace(self.member_with_comma(member), ""),
            }),
            (None, Some(value)) => match other.existing {
                // The other field's branch renames its member to this one.
                Some(_) if other.new_value.is_none() => None,
                Some(other) => Some(Edit::member(
                    other.key.start..other.key.start,
                    "",
                    field.name,
                    value,
                    ",",
                )),
                None => Some(match self.last_value_end {
                    Some(end) => Edit::member(end..end, ",", field.name, value, ""),
                    None => Edit::member(self.close..self.close, "", field.name, value, ""),
                }),
            },
            (None, None) => None,
        }
    }

    /// A field's new value as JSON text: borrowed from the body when it
    /// moves from the other field, so a rewrite allocates only its output.
    fn target_text(&self, target: &Target) -> Option<Cow<'a, str>> {
        match target {
            Target::Absent => None,
            Target::FromTo => self.to.as_ref().map(|m| Cow::Borrowed(m.raw)),
            Target::FromRecipient => self.recipient.as_ref().map(|m| Cow::Borrowed(m.raw)),
            Target::Value(value) => Some(Cow::Owned(
                serde_json::Value::from(value.as_str()).to_string(),
            )),
        }
    }

    /// Where a member's value sits in the body.
    fn value_span(&self, member: &Member<'_>) -> Range<usize> {
        span_of(self.body, member.raw)
    }

    /// A member's span plus the comma that separates it from its neighbour.
    fn member_with_comma(&self, member: &Member<'_>) -> Range<usize> {
        self.with_comma(member.key.start, self.value_span(member).end)
    }

    /// The members from the key at `key_start` to the value ending at
    /// `value_end`, plus the comma that separates them from a neighbour.
    fn with_comma(&self, key_start: usize, value_end: usize) -> Range<usize> {
        let after = first_non_space(self.body, value_end);
        match after {
            Some(pos) if self.body[pos] == b',' => {
                let next = first_non_space(self.body, pos + 1).unwrap_or(pos + 1);
                key_start..next
            }
            _ => {
                // The last member: take the comma before it, if any.
                let before = last_non_space_before(self.body, key_start);
                if self.body[before] == b',' {
                    before..value_end
                } else {
                    key_start..value_end
                }
            }
        }
    }
}

/// What a recipient field should hold after the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Absent,
    /// The raw value the body has in `to`.
    FromTo,
    /// The raw value the body has in `recipient`.
    FromRecipient,
    /// A new string value, e.g. a phone resolved from the identity store.
    Value(String),
}

/// One recipient field: where it is now and what it should become.
struct FieldPlan<'p> {
    name: &'static str,
    existing: Option<&'p Member<'p>>,
    new_value: Option<Cow<'p, str>>,
}

/// Replaces `range` of the body with the concatenation of `text`: the
/// pieces are borrowed, so an edit costs no allocation of its own.
struct Edit<'t> {
    range: Range<usize>,
    text: [&'t str; 6],
}

impl<'t> Edit<'t> {
    /// `range` becomes `text` (nothing, to remove it).
    fn replace(range: Range<usize>, text: &'t str) -> Self {
        let mut pieces = [""; 6];
        pieces[0] = text;
        Edit {
            range,
            text: pieces,
        }
    }

    /// `range` becomes `before"name":value after`.
    fn member(
        range: Range<usize>,
        before: &'static str,
        name: &'static str,
        value: &'t str,
        after: &'static str,
    ) -> Self {
        Edit {
            range,
            text: [before, "\"", name, "\":", value, after],
        }
    }

    fn len(&self) -> usize {
        self.text.iter().map(|piece| piece.len()).sum()
    }
}

/// Applies up to two non-overlapping edits to `body`.
fn apply(body: &[u8], mut edits: [Option<Edit<'_>>; 2]) -> Vec<u8> {
    edits.sort_by_key(|edit| edit.as_ref().map(|edit| edit.range.start));
    // The exact length: a Vec that is full becomes `Bytes` without the
    // shared header a spare capacity would cost.
    let added: usize = edits.iter().flatten().map(Edit::len).sum();
    let removed: usize = edits.iter().flatten().map(|edit| edit.range.len()).sum();
    let mut out = Vec::with_capacity(body.len() - removed + added);
    let mut cursor = 0;
    for edit in edits.iter().flatten() {
        out.extend_from_slice(&body[cursor..edit.range.start]);
        for piece in edit.text {
            out.extend_from_slice(piece.as_bytes());
        }
        cursor = edit.range.end;
    }
    out.extend_from_slice(&body[cursor..]);
    out
}

/// JSON white space (RFC 8259 §2).
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn first_non_space(body: &[u8], from: usize) -> Option<usize> {
    (from..body.len()).find(|&i| !is_space(body[i]))
}

fn first_non_space_or_comma(body: &[u8], from: usize) -> usize {
    (from..body.len())
        .find(|&i| !is_space(body[i]) && body[i] != b',')
        .unwrap_or(from)
}

fn last_non_space_before(body: &[u8], before: usize) -> usize {
    (0..before).rev().find(|&i| !is_space(body[i])).unwrap_or(0)
}

/// The span of a borrowed raw value inside the body it was parsed from.
fn span_of(body: &[u8], raw: &str) -> Range<usize> {
    let start = raw.as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.len()
}

/// A raw JSON value's text if it is a string; `None` for any other value.
fn decode_str(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        // Escapes in the string: it must be unescaped into a new String.
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

fn decode_field(raw: &str) -> FieldValue<'_> {
    match raw.as_bytes().first() {
        Some(b'"') => decode_str(raw).map_or(FieldValue::Other, FieldValue::Text),
        Some(b'-' | b'0'..=b'9') => FieldValue::Number(raw),
        Some(b'n') => FieldValue::Null,
        _ => FieldValue::Other,
    }
}

fn classify_json_error(err: &serde_json::Error) -> PayloadError {
    if err.is_data() {
        PayloadError::NotAnObject
    } else {
        PayloadError::Malformed(err.to_string())
    }
}

/// The top-level keys the send path cares about; every other key is `Other`
/// and costs no allocation.
enum Key {
    To,
    Recipient,
    RecipientType,
    Type,
    Template,
    BidSpec,
    Other,
}

impl Key {
    fn from_name(name: &str) -> Self {
        match name {
            "to" => Key::To,
            "recipient" => Key::Recipient,
            "recipient_type" => Key::RecipientType,
            "type" => Key::Type,
            "template" => Key::Template,
            "bid_spec" => Key::BidSpec,
            _ => Key::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read raw, so a key is valid exactly when serde_json's validator
        // says so: a key that no Rust string can hold (a lone surrogate
        // escape) is valid JSON and merely none of ours.
        let raw = <&RawValue>::deserialize(deserializer)?;
        Ok(decode_str(raw.get()).map_or(Key::Other, |name| Key::from_name(&name)))
    }
}

/// Every top-level member of `body` as serde_json reads it, in order and
/// with duplicates; `body` must be one JSON object and nothing else.
pub(super) fn serde_members<'a, K: Deserialize<'a>>(
    body: &'a [u8],
) -> Result<Vec<RawMember<'a, K>>, PayloadError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let members = (&mut deserializer)
        .deserialize_map(MembersVisitor(PhantomData))
        .map_err(|err| classify_json_error(&err))?;
    deserializer
        .end()
        .map_err(|err| PayloadError::Malformed(err.to_string()))?;
    Ok(members)
}

/// Collects every top-level member with its value borrowed raw, so each value
/// is validated and skipped without being built.
struct MembersVisitor<K>(PhantomData<K>);

impl<'de, K: Deserialize<'de>> Visitor<'de> for MembersVisitor<K> {
    type Value = Vec<RawMember<'de, K>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<K>()? {
            let value: &'de RawValue = map.next_value()?;
            members.push(RawMember {
                key,
                value: value.get(),
            });
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(body: &str, to: Target, recipient: Target) -> String {
        let payload = SendPayload::parse(body.as_bytes()).expect("valid send");
        let out = payload.rewrite(&to, &recipient);
        // Sized exactly, so that it becomes `Bytes` without a shared header.
        assert_eq!(
            out.len(),
            out.capacity(),
            "spare room in the rewrite of {body}"
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn both_fields_removed_leave_valid_json_wherever_they_are() {
        // Found by fuzzing: side by side, each removal took the comma
        // between them, and the edits overlapped.
        for (body, expected) in [
            (
                r#"       {"recipient":"a       p","to":"b "}"#,
                r#"       {}"#,
            ),
            (r#"{ "x":1, "recipient":"a" , "to":"b" }"#, r#"{ "x":1 }"#),
            (r#"{"to":"b","recipient":"a","x":1}"#, r#"{"x":1}"#),
            (r#"{"to":"b","x":1,"recipient":"a"}"#, r#"{"x":1}"#),
            (
                r#"{"x":1,"to":"b","y":2,"recipient":"a","z":3}"#,
                r#"{"x":1,"y":2,"z":3}"#,
            ),
        ] {
            assert_eq!(
                rewrite(body, Target::Absent, Target::Absent),
                expected,
                "{body}"
            );
        }
    }

    #[test]
    fn reads_the_recipient_facts() {
        let body = br#"{"messaging_product":"whatsapp","recipient_type":"individual","to":"US.1","type":"template","template":{"name":"otp_login","language":{"code":"en_US"}}}"#;
        let payload = SendPayload::parse(body).unwrap();
        assert_eq!(payload.to.as_ref().unwrap().text(), Some("US.1"));
        assert!(payload.recipient.is_none());
        assert_eq!(payload.recipient_type.as_deref(), Some("individual"));
        assert_eq!(payload.message_type.as_deref(), Some("template"));
        assert_eq!(
            payload.template(),
            Some(TemplateRef {
                name: "otp_login".into(),
                language: Some("en_US".into())
            })
        );
        assert!(!payload.is_group());
        assert!(!payload.has_bid_spec);
    }

    #[test]
    fn decodes_escapes_numbers_and_null() {
        let body = br#"{"to":"US.\u0031","recipient":null}"#;
        let payload = SendPayload::parse(body).unwrap();
        assert_eq!(payload.to.as_ref().unwrap().text(), Some("US.1"));
        assert_eq!(
            payload.recipient.as_ref().unwrap().decoded,
            FieldValue::Null
        );
        let payload = SendPayload::parse(br#"{"to":16315551234}"#).unwrap();
        assert_eq!(
            payload.to.unwrap().decoded,
            FieldValue::Number("16315551234")
        );
        let payload = SendPayload::parse(br#"{"to":{"a":1}}"#).unwrap();
        assert_eq!(payload.to.unwrap().decoded, FieldValue::Other);
    }

    #[test]
    fn a_key_with_a_lone_surrogate_is_some_other_member() {
        // Valid JSON text (RFC 8259 §8.2 leaves lone surrogates to the
        // reader), which Meta's parser takes; no Rust string holds the key,
        // and it can be none of the members a send decision reads.
        let body = br#"{"x\uD919y":1,"t\u006f":"+1 631 555 1234"}"#;
        let payload = SendPayload::parse(body).unwrap();
        assert_eq!(payload.to.unwrap().text(), Some("+1 631 555 1234"));
        assert!(payload.recipient.is_none());
    }

    #[test]
    fn rejects_what_is_not_a_send_object() {
        assert!(matches!(
            SendPayload::parse(b"{\"to\":"),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            SendPayload::parse(b"{} x"),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            SendPayload::parse(b""),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            SendPayload::parse(b"\xff\xfe"),
            Err(PayloadError::Malformed(_))
        ));
        assert_eq!(
            SendPayload::parse(b"[1,2]").unwrap_err(),
            PayloadError::NotAnObject
        );
        assert_eq!(
            SendPayload::parse(b"\"to\"").unwrap_err(),
            PayloadError::NotAnObject
        );
        assert_eq!(
            SendPayload::parse(br#"{"to":"1","to":"2"}"#).unwrap_err(),
            PayloadError::DuplicateField("to")
        );
    }

    #[test]
    fn untouched_targets_keep_every_byte() {
        let body = "{ \"to\" : \"+1 (631) 555-1234\",\n  \"type\":\"text\", \"text\":{\"body\":\"h\\u00e9\"} }";
        assert_eq!(rewrite(body, Target::FromTo, Target::Absent), body);
    }

    #[test]
    fn bsuid_in_to_is_renamed_in_place() {
        let body = r#"{"messaging_product":"whatsapp","to":"US.13491208655302741918","type":"text","text":{"body":"hi"}}"#;
        assert_eq!(
            rewrite(body, Target::Absent, Target::FromTo),
            r#"{"messaging_product":"whatsapp","recipient":"US.13491208655302741918","type":"text","text":{"body":"hi"}}"#
        );
    }

    #[test]
    fn phone_in_recipient_is_renamed_in_place() {
        let body = r#"{"recipient" : "16315551234", "type":"text"}"#;
        assert_eq!(
            rewrite(body, Target::FromRecipient, Target::Absent),
            r#"{"to":"16315551234", "type":"text"}"#
        );
    }

    #[test]
    fn swapped_fields_are_swapped_back() {
        let body = r#"{"to":"US.1","recipient":"16315551234","type":"text"}"#;
        assert_eq!(
            rewrite(body, Target::FromRecipient, Target::FromTo),
            r#"{"to":"16315551234","recipient":"US.1","type":"text"}"#
        );
    }

    #[test]
    fn duplicate_bsuid_in_to_is_removed() {
        let body = r#"{"to":"US.1","recipient":"US.1","type":"text"}"#;
        assert_eq!(
            rewrite(body, Target::Absent, Target::FromRecipient),
            r#"{"recipient":"US.1","type":"text"}"#
        );
        let last = r#"{"type":"text","recipient":"US.1", "to":"US.1"}"#;
        assert_eq!(
            rewrite(last, Target::Absent, Target::FromRecipient),
            r#"{"type":"text","recipient":"US.1"}"#
        );
    }

    #[test]
    fn resolved_phone_is_added_beside_the_bsuid() {
        let body = r#"{"messaging_product":"whatsapp","recipient":"US.1","type":"text"}"#;
        assert_eq!(
            rewrite(
                body,
                Target::Value("16315551234".into()),
                Target::FromRecipient
            ),
            r#"{"messaging_product":"whatsapp","to":"16315551234","recipient":"US.1","type":"text"}"#
        );
        // BSUID sent in `to`, phone known: `to` takes the phone, the BSUID moves.
        let body = r#"{"to":"US.1","type":"text"}"#;
        assert_eq!(
            rewrite(body, Target::Value("16315551234".into()), Target::FromTo),
            r#"{"recipient":"US.1","to":"16315551234","type":"text"}"#
        );
    }

    #[test]
    fn a_field_neither_member_holds_is_appended() {
        let phone = || Target::Value("16315551234".into());
        assert_eq!(
            rewrite(r#"{"type":"text" }"#, phone(), Target::Absent),
            r#"{"type":"text","to":"16315551234" }"#
        );
        assert_eq!(
            rewrite("{ }", phone(), Target::Absent),
            r#"{ "to":"16315551234"}"#
        );
    }

    #[test]
    fn null_recipient_is_replaced() {
        let body = r#"{"to":"US.1","recipient":null}"#;
        assert_eq!(
            rewrite(body, Target::Absent, Target::FromTo),
            r#"{"recipient":"US.1"}"#
        );
    }

    #[test]
    fn escaped_values_are_carried_raw() {
        let body = r#"{"to":"US.\u0031","x":1}"#;
        assert_eq!(
            rewrite(body, Target::Absent, Target::FromTo),
            r#"{"recipient":"US.\u0031","x":1}"#
        );
    }
}
