//! What a WhatsApp webhook payload teaches about people (docs/cloud-api.md §6).
//!
//! Meta's webhooks are where phone ↔ BSUID pairs show up: incoming messages,
//! delivery statuses, shared contacts and the system messages that announce a
//! BSUID change. This module reads a payload and says what it teaches, as
//! [`IdentityEvent`]s tagged with the business number that received them.
//!
//! It is pure on purpose: no I/O, no clock, no store. The relay forwards the
//! raw body untouched whatever happens here; the caller decides when a body is
//! trustworthy (signature checked) and where the events go. Being pure also
//! lets every documented payload shape be pinned by a fixture test.
//!
//! Reading is tolerant and learning is strict. Unknown fields are ignored and
//! an item of an unexpected shape is skipped, not fatal to its neighbours,
//! because Meta marks these payloads "subject to change". But a value is only
//! believed when its shape matches the field it came from (see
//! [`classify`]), and an ambiguous event teaches nothing: a wrong mapping
//! would send one person's messages to another, a missing one only costs a
//! lookup.

use serde::Deserialize;
use serde_json::Value;

use crate::identifier::{IdClass, classify, phone_digits};
use crate::identity::model::{IdentityEvent, Observation};

/// One identity change and the business number whose webhook reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    pub phone_number_id: String,
    pub event: IdentityEvent,
}

/// The body is not a webhook payload: not JSON, or not a JSON object of the
/// `{"object": …, "entry": […]}` shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAWebhook;

impl std::fmt::Display for NotAWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a WhatsApp webhook payload")
    }
}

impl std::error::Error for NotAWebhook {}

/// The only `object` whose webhooks carry WhatsApp identities.
const WHATSAPP_OBJECT: &str = "whatsapp_business_account";
/// The only change `field` read here.
const MESSAGES_FIELD: &str = "messages";
/// `messages[].contacts[].origin` of a card the sender shares about
/// themselves in answer to a `REQUEST_CONTACT_INFO` button.
const CONTACT_REQUEST: &str = "contact_request";

/// The top level. Wrong types here mean the body is not a webhook at all.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    entry: Option<Vec<Value>>,
}

/// `entry[]`: one per WhatsApp Business Account. An entry that is not an
/// object is skipped.
#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Value,
}

/// `entry[].changes[]`. A change that is not an object is skipped.
#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    field: Value,
    #[serde(default)]
    value: Value,
}

/// Everything a webhook payload teaches. A payload that is not JSON or not the
/// shape below teaches nothing: Err(NotAWebhook).
///
/// `{"object":"whatsapp_business_account","entry":[{"id":WABA,"changes":[{"field":"messages","value":{...}}]}]}`
///
/// A well-formed payload for another `object` or another `field` is not an
/// error: it is `Ok` and teaches nothing. Events keep the order of the payload:
/// entries, changes, then within a change `contacts[]`, `messages[]` and
/// `statuses[]`. Nothing is merged; one `Seen` per item.
pub fn learn(payload: &[u8]) -> Result<Vec<Learned>, NotAWebhook> {
    let body: Value = serde_json::from_slice(payload).map_err(|_| NotAWebhook)?;
    if !body.is_object() {
        return Err(NotAWebhook);
    }
    let envelope = Envelope::deserialize(&body).map_err(|_| NotAWebhook)?;
    let object = envelope.object.ok_or(NotAWebhook)?;
    let mut learned = Vec::new();
    if object != WHATSAPP_OBJECT {
        return Ok(learned);
    }
    for entry in envelope.entry.iter().flatten() {
        let Ok(entry) = Entry::deserialize(entry) else {
            continue;
        };
        for change in list(&entry.changes) {
            let Ok(change) = Change::deserialize(change) else {
                continue;
            };
            if change.field.as_str() != Some(MESSAGES_FIELD) {
                continue;
            }
            let Some(phone_number_id) = phone_number_id(&change.value) else {
                continue;
            };
            let mut sink = Sink {
                phone_number_id,
                out: &mut learned,
            };
            learn_value(&change.value, &mut sink);
        }
    }
    Ok(learned)
}

/// Collects the events of one change, all for the same business number.
struct Sink<'a> {
    phone_number_id: String,
    out: &'a mut Vec<Learned>,
}

impl Sink<'_> {
    fn push(&mut self, event: IdentityEvent) {
        self.out.push(Learned {
            phone_number_id: self.phone_number_id.clone(),
            event,
        });
    }

    fn seen(&mut self, observation: Observation) {
        self.push(IdentityEvent::Seen(observation));
    }

    fn retired(&mut self, bsuid: String) {
        self.push(IdentityEvent::Retired { bsuid });
    }
}

/// `value.metadata.phone_number_id`, a string (or, tolerated, a number).
fn phone_number_id(value: &Value) -> Option<String> {
    match value.get("metadata")?.get("phone_number_id")? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(id) if id.is_u64() => Some(id.to_string()),
        _ => None,
    }
}

fn learn_value(value: &Value, sink: &mut Sink<'_>) {
    let contacts = items(value, "contacts");
    for contact in contacts {
        learn_contact(contact, sink);
    }
    let sender = lone_sender(contacts);
    for message in items(value, "messages") {
        learn_message(message, sender.as_ref(), sink);
    }
    for status in items(value, "statuses") {
        learn_status(status, sink);
    }
}

/// `value.contacts[]`: the person behind the messages or statuses beside it.
fn learn_contact(contact: &Value, sink: &mut Sink<'_>) {
    let Some(bsuid) = bsuid(text(contact, "user_id")) else {
        return;
    };
    sink.seen(Observation {
        bsuid,
        parent_bsuid: parent(text(contact, "parent_user_id")),
        phone: phone(text(contact, "wa_id")),
        username: username(contact.get("profile").and_then(|p| text(p, "username"))),
    });
}

/// A BSUID and its parent, as one sender.
struct Sender {
    bsuid: String,
    parent: Option<String>,
}

/// The sender named by `value.contacts[]` when it names exactly one person:
/// used only for a shared-contact message that lacks `from_user_id` (Meta's
/// contact-request example omits it).
fn lone_sender(contacts: &[Value]) -> Option<Sender> {
    let mut senders = contacts.iter().filter_map(|contact| {
        Some(Sender {
            bsuid: bsuid(text(contact, "user_id"))?,
            parent: parent(text(contact, "parent_user_id")),
        })
    });
    let first = senders.next()?;
    senders.next().is_none().then_some(first)
}

/// `value.messages[]`.
fn learn_message(message: &Value, lone_sender: Option<&Sender>, sink: &mut Sink<'_>) {
    let kind = text(message, "type");
    if kind == Some("system") {
        learn_system(message, sink);
        return;
    }
    let from = bsuid(text(message, "from_user_id")).map(|bsuid| Sender {
        bsuid,
        parent: parent(text(message, "from_parent_user_id")),
    });
    let from_phone = phone(text(message, "from"));
    if let Some(from) = &from {
        sink.seen(Observation {
            bsuid: from.bsuid.clone(),
            parent_bsuid: from.parent.clone(),
            phone: from_phone.clone(),
            username: None,
        });
    }
    if kind == Some("contacts") {
        // Phones already paired with this sender in this message.
        let mut taught: Vec<String> = from.as_ref().and(from_phone).into_iter().collect();
        if let Some(sender) = from.as_ref().or(lone_sender) {
            learn_shared_own_phones(message, sender, &mut taught, sink);
        }
    }
}

/// A `type: "contacts"` message whose cards have `origin: "contact_request"`
/// is the sender sharing their own phone. Cards of any other origin are other
/// people and teach nothing. The origin is read on the card, else on the
/// message (Meta has documented both places).
fn learn_shared_own_phones(
    message: &Value,
    sender: &Sender,
    taught: &mut Vec<String>,
    sink: &mut Sink<'_>,
) {
    let message_origin = text(message, "origin");
    for card in items(message, "contacts") {
        if text(card, "origin").or(message_origin) != Some(CONTACT_REQUEST) {
            continue;
        }
        for shared in items(card, "phones") {
            let Some(found) = phone(text(shared, "wa_id")).or_else(|| phone(text(shared, "phone")))
            else {
                continue;
            };
            if taught.contains(&found) {
                continue;
            }
            taught.push(found.clone());
            sink.seen(Observation {
                bsuid: sender.bsuid.clone(),
                parent_bsuid: sender.parent.clone(),
                phone: Some(found),
                username: None,
            });
        }
    }
}

/// A system message announcing a BSUID change: the previous BSUID is retired,
/// then the new identity, if the message names it, is seen. Other system
/// messages teach nothing.
///
/// The previous *parent* BSUID is never retired: parents are shared across the
/// linked portfolios and outlive one portfolio's BSUID.
fn learn_system(message: &Value, sink: &mut Sink<'_>) {
    let system = message.get("system").unwrap_or(&Value::Null);
    let changed_number = match text(system, "type") {
        // `customer_changed_number` is the pre-v12 name of the same event.
        Some("user_changed_number" | "customer_changed_number") => true,
        Some("user_changed_user_id") => false,
        _ => return,
    };
    let previous = bsuid(text(system, "previous_user_id"));
    if let Some(previous) = &previous {
        sink.retired(previous.clone());
    }
    let not_previous = |candidate: &String| Some(candidate) != previous.as_ref();
    // `system.user_id` is the new BSUID. Failing that, `from_user_id` is
    // believed new only when the previous one is named and differs from it:
    // without `previous_user_id` it could be the dead BSUID.
    let new_bsuid = match bsuid(text(system, "user_id")) {
        Some(named) => Some(named),
        None if previous.is_some() => bsuid(text(message, "from_user_id")),
        None => None,
    }
    .filter(not_previous);
    let Some(new_bsuid) = new_bsuid else {
        return;
    };
    let previous_parent = text(system, "previous_parent_user_id");
    let new_parent = parent(text(system, "parent_user_id")).or_else(|| {
        parent(text(message, "from_parent_user_id"))
            .filter(|candidate| Some(candidate.as_str()) != previous_parent)
    });
    let new_phone = if changed_number {
        // The message's own `from` is the old phone: never pair it with the
        // new BSUID, even when the system block seems to repeat it.
        let old_phone = phone(text(message, "from"));
        phone(text(system, "new_wa_id"))
            .or_else(|| phone(text(system, "wa_id")))
            .filter(|candidate| Some(candidate) != old_phone.as_ref())
    } else {
        phone(text(system, "wa_id")).or_else(|| phone(text(message, "from")))
    };
    sink.seen(Observation {
        bsuid: new_bsuid,
        parent_bsuid: new_parent,
        phone: new_phone,
        username: None,
    });
}

/// `value.statuses[]`: the recipient of an outgoing message. A failed send to
/// a phone carries no `recipient_user_id` and teaches nothing; a group
/// status names a group, not a person.
fn learn_status(status: &Value, sink: &mut Sink<'_>) {
    if text(status, "recipient_type") == Some("group") {
        return;
    }
    let Some(bsuid) = bsuid(text(status, "recipient_user_id")) else {
        return;
    };
    sink.seen(Observation {
        bsuid,
        parent_bsuid: parent(text(status, "recipient_parent_user_id")),
        phone: phone(text(status, "recipient_id")),
        username: None,
    });
}

/// A string field, or nothing when absent or of another type.
fn text<'a>(item: &'a Value, key: &str) -> Option<&'a str> {
    item.get(key).and_then(Value::as_str)
}

/// An array field, or nothing when absent or of another type.
fn items<'a>(item: &'a Value, key: &str) -> &'a [Value] {
    list(item.get(key).unwrap_or(&Value::Null))
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// A BSUID from a `*user_id` field, exactly as given.
fn bsuid(value: Option<&str>) -> Option<String> {
    value
        .filter(|v| classify(v) == IdClass::Bsuid)
        .map(str::to_owned)
}

/// A parent BSUID from a `*parent_user_id` field, exactly as given.
fn parent(value: Option<&str>) -> Option<String> {
    value
        .filter(|v| classify(v) == IdClass::ParentBsuid)
        .map(str::to_owned)
}

/// A phone from a `wa_id`/`from`/`recipient_id` field, as digits. An empty
/// string (Meta's way of withholding a phone) is not a phone.
fn phone(value: Option<&str>) -> Option<String> {
    value
        .filter(|v| classify(v) == IdClass::Phone)
        .map(phone_digits)
}

/// `profile.username`, stored without the leading `@` Meta shows (however
/// many), and not at all when nothing else is left.
fn username(value: Option<&str>) -> Option<String> {
    let bare = value?.trim_start_matches('@');
    (!bare.is_empty()).then(|| bare.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNID_A: &str = "427781093356201";
    const PNID_B: &str = "431190284471653";

    fn seen(
        phone_number_id: &str,
        bsuid: &str,
        parent: Option<&str>,
        phone: Option<&str>,
        username: Option<&str>,
    ) -> Learned {
        Learned {
            phone_number_id: phone_number_id.to_owned(),
            event: IdentityEvent::Seen(Observation {
                bsuid: bsuid.to_owned(),
                parent_bsuid: parent.map(str::to_owned),
                phone: phone.map(str::to_owned),
                username: username.map(str::to_owned),
            }),
        }
    }

    fn retired(phone_number_id: &str, bsuid: &str) -> Learned {
        Learned {
            phone_number_id: phone_number_id.to_owned(),
            event: IdentityEvent::Retired {
                bsuid: bsuid.to_owned(),
            },
        }
    }

    /// Wraps one `value` in a `messages` change for business number A.
    fn one_value(value: &str) -> Vec<u8> {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"318527460923114","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15557304482","phone_number_id":"{PNID_A}"}},{value}}}}}]}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn text_no_username() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/text_no_username.json");
        assert_eq!(
            learn(payload),
            Ok(vec![
                seen(
                    PNID_A,
                    "US.28471093756102938471",
                    None,
                    Some("16505550143"),
                    None
                ),
                seen(
                    PNID_A,
                    "US.28471093756102938471",
                    None,
                    Some("16505550143"),
                    None
                ),
            ])
        );
    }

    #[test]
    fn username_with_phone() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/username_with_phone.json");
        assert_eq!(
            learn(payload),
            Ok(vec![
                seen(
                    PNID_A,
                    "MX.90817263544536271809",
                    Some("MX.ENT.11873625490182736455"),
                    Some("5215512345678"),
                    Some("pablo.m"),
                ),
                seen(
                    PNID_A,
                    "MX.90817263544536271809",
                    Some("MX.ENT.11873625490182736455"),
                    Some("5215512345678"),
                    None,
                ),
            ])
        );
    }

    #[test]
    fn usernames_lose_every_leading_at_and_an_empty_one_is_none() {
        // Found by fuzzing: "@@x" was stored as "@x".
        let payload = |name: &str| {
            format!(
                r#"{{"object":"whatsapp_business_account","entry":[{{"changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"{PNID_A}"}},"contacts":[{{"user_id":"US.1","profile":{{"username":"{name}"}}}}]}}}}]}}]}}"#
            )
        };
        for (name, stored) in [
            ("@@pablo", Some("pablo")),
            ("@", None),
            ("pablo", Some("pablo")),
        ] {
            let learned = learn(payload(name).as_bytes()).unwrap();
            assert_eq!(
                learned,
                vec![seen(PNID_A, "US.1", None, None, stored)],
                "{name}"
            );
        }
    }

    #[test]
    fn username_no_phone() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/username_no_phone.json");
        assert_eq!(
            learn(payload),
            Ok(vec![
                seen(
                    PNID_A,
                    "GB.55120938471029384756",
                    None,
                    None,
                    Some("gh.okafor")
                ),
                seen(
                    PNID_A,
                    "DE.30918274650192837465",
                    Some("DE.ENT.90817263540918273645"),
                    None,
                    Some("nadia_k"),
                ),
                seen(PNID_A, "GB.55120938471029384756", None, None, None),
                seen(
                    PNID_A,
                    "DE.30918274650192837465",
                    Some("DE.ENT.90817263540918273645"),
                    None,
                    None,
                ),
            ])
        );
    }

    #[test]
    fn status_sent() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/status_sent.json");
        assert_eq!(
            learn(payload),
            Ok(vec![
                seen(
                    PNID_A,
                    "BR.40192837465019283746",
                    None,
                    Some("5511987654321"),
                    None,
                ),
                seen(
                    PNID_A,
                    "US.61029384756102938475",
                    Some("US.ENT.62039184756203918475"),
                    None,
                    None,
                ),
            ])
        );
    }

    #[test]
    fn status_failed() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/status_failed.json");
        assert_eq!(
            learn(payload),
            Ok(vec![seen(
                PNID_A,
                "IN.82736450918273645091",
                None,
                None,
                None
            )])
        );
    }

    #[test]
    fn user_changed_number() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/user_changed_number.json");
        assert_eq!(
            learn(payload),
            Ok(vec![
                retired(PNID_A, "US.28471093756102938471"),
                seen(
                    PNID_A,
                    "US.79102837465019283746",
                    Some("US.ENT.30495817263049581726"),
                    Some("16505550177"),
                    None,
                ),
            ])
        );
    }

    #[test]
    fn user_changed_user_id() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/user_changed_user_id.json");
        assert_eq!(
            learn(payload),
            Ok(vec![
                retired(PNID_A, "CO.10293847561029384756"),
                seen(PNID_A, "CO.56473829101928374655", None, None, None),
            ])
        );
    }

    #[test]
    fn shared_contact_request() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/shared_contact_request.json");
        assert_eq!(
            learn(payload),
            Ok(vec![
                seen(
                    PNID_A,
                    "ES.73019283746501928374",
                    None,
                    None,
                    Some("lucia.r")
                ),
                seen(PNID_A, "ES.73019283746501928374", None, None, None),
                seen(
                    PNID_A,
                    "ES.73019283746501928374",
                    None,
                    Some("34612345678"),
                    None
                ),
                // The second message shares Marta's card: only the sender is seen.
                seen(PNID_A, "ES.73019283746501928374", None, None, None),
            ])
        );
    }

    #[test]
    fn multi_entry() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/multi_entry.json");
        assert_eq!(
            learn(payload),
            Ok(vec![
                seen(
                    PNID_A,
                    "US.28471093756102938471",
                    None,
                    Some("16505550143"),
                    None
                ),
                seen(
                    PNID_A,
                    "US.28471093756102938471",
                    None,
                    Some("16505550143"),
                    None
                ),
                seen(
                    PNID_B,
                    "GB.91827364501928374650",
                    None,
                    Some("447700900123"),
                    None
                ),
            ])
        );
    }

    #[test]
    fn not_messages() {
        let payload = include_bytes!("../../tests/fixtures/webhooks/not_messages.json");
        assert_eq!(learn(payload), Ok(vec![]));
    }

    #[test]
    fn malformed_bodies_are_not_webhooks() {
        for body in [
            &b"{"[..],
            b"[]",
            b"",
            b"null",
            b"\"whatsapp_business_account\"",
            b"{}",
            br#"{"object":42,"entry":[]}"#,
            br#"{"object":"whatsapp_business_account","entry":"x"}"#,
        ] {
            assert_eq!(
                learn(body),
                Err(NotAWebhook),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn well_formed_bodies_that_teach_nothing() {
        for body in [
            &br#"{"object":"whatsapp_business_account"}"#[..],
            br#"{"object":"whatsapp_business_account","entry":null}"#,
            br#"{"object":"whatsapp_business_account","entry":[]}"#,
            br#"{"object":"whatsapp_business_account","entry":[7,{"changes":"x"},{}]}"#,
            br#"{"object":"instagram","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},"contacts":[{"user_id":"US.1","wa_id":"16505550143"}]}}]}]}"#,
        ] {
            assert_eq!(
                learn(body),
                Ok(vec![]),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn change_without_phone_number_id_is_skipped() {
        let body =
            br#"{"object":"whatsapp_business_account","entry":[{"id":"318527460923114","changes":[
            {"field":"messages","value":{"metadata":{"display_phone_number":"15557304482"},
             "contacts":[{"user_id":"US.28471093756102938471","wa_id":"16505550143"}]}},
            {"field":"messages","value":{"metadata":{"phone_number_id":""},
             "contacts":[{"user_id":"US.28471093756102938471","wa_id":"16505550143"}]}},
            {"field":"messages","value":{"metadata":{"phone_number_id":"427781093356201"},
             "contacts":[{"user_id":"US.28471093756102938471","wa_id":"16505550143"}]}}]}]}"#;
        assert_eq!(
            learn(body),
            Ok(vec![seen(
                PNID_A,
                "US.28471093756102938471",
                None,
                Some("16505550143"),
                None
            )])
        );
    }

    #[test]
    fn lower_case_bsuid_is_not_learned() {
        let body = one_value(
            r#""contacts":[{"profile":{"username":"@sam.k"},"wa_id":"16505550143","user_id":"us.28471093756102938471"}],
               "statuses":[{"id":"wamid.X","status":"read","recipient_id":"16505550143","recipient_user_id":"us.28471093756102938471"}]"#,
        );
        assert_eq!(learn(&body), Ok(vec![]));
    }

    #[test]
    fn sixteen_digit_phone_is_not_learned() {
        let body = one_value(
            r#""contacts":[{"wa_id":"1650555014312345","user_id":"US.28471093756102938471"}],
               "messages":[{"from":"+1 650 555 0143 12345","from_user_id":"US.28471093756102938471","type":"text","text":{"body":"hi"}}]"#,
        );
        assert_eq!(
            learn(&body),
            Ok(vec![
                seen(PNID_A, "US.28471093756102938471", None, None, None),
                seen(PNID_A, "US.28471093756102938471", None, None, None),
            ])
        );
    }

    #[test]
    fn fields_must_hold_their_own_kind() {
        // A parent BSUID in `user_id`, a BSUID in `parent_user_id`, a BSUID
        // in `wa_id`: none is believed where it does not belong.
        let body = one_value(
            r#""contacts":[
                {"user_id":"US.ENT.62039184756203918475","wa_id":"16505550143"},
                {"user_id":"US.28471093756102938471","parent_user_id":"US.61029384756102938475","wa_id":"US.61029384756102938475"}]"#,
        );
        assert_eq!(
            learn(&body),
            Ok(vec![seen(
                PNID_A,
                "US.28471093756102938471",
                None,
                None,
                None
            )])
        );
    }

    #[test]
    fn formatted_phones_are_stored_as_digits() {
        let body = one_value(
            r#""statuses":[{"id":"wamid.X","status":"delivered","recipient_id":"+1 (650) 555-0143","recipient_user_id":"US.28471093756102938471"}]"#,
        );
        assert_eq!(
            learn(&body),
            Ok(vec![seen(
                PNID_A,
                "US.28471093756102938471",
                None,
                Some("16505550143"),
                None
            )])
        );
    }

    #[test]
    fn an_item_of_the_wrong_shape_spares_its_neighbours() {
        let body = one_value(
            r#""contacts":[
                "junk",
                {"user_id":42,"wa_id":16505550143},
                {"user_id":"GB.55120938471029384756","wa_id":447700900123,"profile":"@x"},
                {"user_id":"US.28471093756102938471","wa_id":"16505550143","profile":{"username":"@"}}],
               "messages":{"not":"a list"},
               "statuses":[null,{"recipient_user_id":"BR.40192837465019283746","recipient_id":["5511987654321"]}]"#,
        );
        assert_eq!(
            learn(&body),
            Ok(vec![
                seen(PNID_A, "GB.55120938471029384756", None, None, None),
                seen(
                    PNID_A,
                    "US.28471093756102938471",
                    None,
                    Some("16505550143"),
                    None
                ),
                seen(PNID_A, "BR.40192837465019283746", None, None, None),
            ])
        );
    }

    #[test]
    fn numeric_phone_number_id_is_tolerated() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":427781093356201},"statuses":[{"recipient_user_id":"US.28471093756102938471"}]}}]}]}"#;
        assert_eq!(
            learn(body),
            Ok(vec![seen(
                PNID_A,
                "US.28471093756102938471",
                None,
                None,
                None
            )])
        );
    }

    #[test]
    fn changed_number_new_bsuid_from_the_message_and_new_wa_id() {
        // The other reading: no `system.user_id`; `from_user_id` is the new
        // BSUID; the new phone is in `new_wa_id`.
        let body = one_value(
            r#""messages":[{"from":"16505550143","from_user_id":"US.79102837465019283746","from_parent_user_id":"US.ENT.30495817263049581726","id":"wamid.X","timestamp":"1786447000","type":"system",
               "system":{"body":"User A changed from 16505550143 to 16505550177","type":"user_changed_number","new_wa_id":"16505550177","previous_user_id":"US.28471093756102938471","previous_parent_user_id":"US.ENT.11111111111111111111"}}]"#,
        );
        assert_eq!(
            learn(&body),
            Ok(vec![
                retired(PNID_A, "US.28471093756102938471"),
                seen(
                    PNID_A,
                    "US.79102837465019283746",
                    Some("US.ENT.30495817263049581726"),
                    Some("16505550177"),
                    None,
                ),
            ])
        );
    }

    #[test]
    fn changed_number_never_pairs_the_old_phone_with_the_new_bsuid() {
        // `from` is the old phone; the system block names no new phone, or
        // names the old one again. The old parent is not carried over either.
        for system_phone in ["", r#""wa_id":"16505550143","#] {
            let body = one_value(&format!(
                r#""messages":[{{"from":"16505550143","from_user_id":"US.28471093756102938471","from_parent_user_id":"US.ENT.11111111111111111111","type":"system",
                   "system":{{{system_phone}"type":"user_changed_number","user_id":"US.79102837465019283746","previous_user_id":"US.28471093756102938471","previous_parent_user_id":"US.ENT.11111111111111111111"}}}}]"#
            ));
            assert_eq!(
                learn(&body),
                Ok(vec![
                    retired(PNID_A, "US.28471093756102938471"),
                    seen(PNID_A, "US.79102837465019283746", None, None, None),
                ]),
                "{system_phone}"
            );
        }
    }

    #[test]
    fn changed_number_when_the_message_still_names_the_old_bsuid() {
        // No `system.user_id` and `from_user_id` is the retired BSUID: the new
        // identity is unknown, so only the retirement is learned.
        let body = one_value(
            r#""messages":[{"from":"16505550143","from_user_id":"US.28471093756102938471","type":"system",
               "system":{"wa_id":"16505550177","type":"user_changed_number","previous_user_id":"US.28471093756102938471"}}]"#,
        );
        assert_eq!(
            learn(&body),
            Ok(vec![retired(PNID_A, "US.28471093756102938471")])
        );
    }

    #[test]
    fn changed_number_without_previous_user_id_does_not_trust_from_user_id() {
        // Today's documented shape: only the new `wa_id`. `from_user_id` might
        // be the dead BSUID, so nothing is learned.
        let body = one_value(
            r#""messages":[{"from":"16505550143","from_user_id":"US.28471093756102938471","type":"system",
               "system":{"body":"User A changed from 16505550143 to 16505550177","wa_id":"16505550177","type":"user_changed_number"}}]"#,
        );
        assert_eq!(learn(&body), Ok(vec![]));
    }

    #[test]
    fn changed_user_id_keeps_the_current_phone() {
        // The phone did not change: the message's `from` is still the user's.
        let body = one_value(
            r#""messages":[{"from":"573001234567","from_user_id":"CO.56473829101928374655","type":"system",
               "system":{"type":"user_changed_user_id","previous_user_id":"CO.10293847561029384756","previous_parent_user_id":"CO.ENT.10293847561029384756"}}]"#,
        );
        assert_eq!(
            learn(&body),
            Ok(vec![
                retired(PNID_A, "CO.10293847561029384756"),
                seen(
                    PNID_A,
                    "CO.56473829101928374655",
                    None,
                    Some("573001234567"),
                    None
                ),
            ])
        );
    }

    #[test]
    fn other_system_messages_teach_nothing() {
        let body = one_value(
            r#""messages":[{"from":"16505550143","from_user_id":"US.28471093756102938471","type":"system",
               "system":{"body":"security code changed","type":"user_identity_changed","identity":"aGFzaA=="}}]"#,
        );
        assert_eq!(learn(&body), Ok(vec![]));
    }

    #[test]
    fn contact_request_origin_on_the_message() {
        // Meta's BSUID page puts `origin` on the message and omits
        // `from_user_id`; the lone contact names the sender. The phone falls
        // back to `phones[].phone` when there is no `wa_id`.
        let body = one_value(
            r#""contacts":[{"profile":{"name":"Lucía","username":"@lucia.r"},"user_id":"ES.73019283746501928374"}],
               "messages":[{"id":"wamid.X","timestamp":"1786447800","type":"contacts","origin":"contact_request",
                 "contacts":[{"vcard":"BEGIN:VCARD","phones":[{"phone":"+34 612 34 56 78"},{"phone":"+34 612 34 56 78","type":"CELL"}]}]}]"#,
        );
        assert_eq!(
            learn(&body),
            Ok(vec![
                seen(
                    PNID_A,
                    "ES.73019283746501928374",
                    None,
                    None,
                    Some("lucia.r")
                ),
                seen(
                    PNID_A,
                    "ES.73019283746501928374",
                    None,
                    Some("34612345678"),
                    None
                ),
            ])
        );
    }

    #[test]
    fn contact_card_origin_overrides_the_message() {
        let body = one_value(
            r#""messages":[{"from_user_id":"ES.73019283746501928374","type":"contacts","origin":"contact_request",
                 "contacts":[{"origin":"other","phones":[{"phone":"+34 699 11 12 22","wa_id":"34699111222"}]}]}]"#,
        );
        assert_eq!(
            learn(&body),
            Ok(vec![seen(
                PNID_A,
                "ES.73019283746501928374",
                None,
                None,
                None
            )])
        );
    }

    #[test]
    fn group_statuses_teach_nothing() {
        let body = one_value(
            r#""statuses":[{"id":"wamid.X","status":"sent","recipient_type":"group","recipient_id":"Y2FwaV9ncm91cDoxNTU1","recipient_user_id":"US.28471093756102938471"}]"#,
        );
        assert_eq!(learn(&body), Ok(vec![]));
    }
}
