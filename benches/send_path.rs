//! Micro-benchmarks of the pure send-path phases, each beside the naive
//! alternative a proxy would write first: parse the whole body into a
//! `serde_json::Value`, read the recipient fields from it and, to rewrite,
//! edit the tree and serialise it again.
//!
//! Groups:
//!
//! - `classify/ours`: `classify` alone over a mix of identifiers
//!   (throughput per identifier, so ns per classification = time / 7).
//! - `classify_body/{ours,naive_value}`: find `to` in a send body and classify
//!   it, over the same mix of identifiers, one body each.
//! - `decide/table/<case>`: `address` + `decide` on ready facts.
//! - `decide/{ours,naive_value}/<case>`: body bytes to a decision.
//! - `rewrite/{ours,naive_value}/<body>`: body bytes to the bytes forwarded
//!   upstream, moving a BSUID from `to` to `recipient` (or, for the
//!   `untouched_*` bodies, forwarding the original bytes).
//!
//! Run with `cargo bench --bench send_path`.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

use sendgate::identifier::{IdClass, classify};
use sendgate::send::facts_of;
use sendgate::send::payload::{Member, SendPayload, Target};
use sendgate::send::policy::{
    Addressing, BlockReason, Decision, Facts, MessageKind, Policy, Recipient, address, decide,
};

const PHONE_FORMATTED: &str = "+1 (631) 555-1234";
const PHONE_DIGITS: &str = "16315551234";
const BSUID: &str = "US.13491208655302741918";
const PARENT_BSUID: &str = "US.ENT.11815799212886844830";

/// One of each shape the classifier tells apart, plus junk.
const IDENTIFIERS: [(&str, IdClass); 7] = [
    (PHONE_FORMATTED, IdClass::Phone),
    (PHONE_DIGITS, IdClass::Phone),
    (BSUID, IdClass::Bsuid),
    (PARENT_BSUID, IdClass::ParentBsuid),
    ("pablo.morales", IdClass::Username),
    ("@pablo.m", IdClass::Username),
    ("not a recipient!", IdClass::Invalid),
];

/// A realistic text send (about 330 bytes); `__RECIPIENT__` is replaced by the
/// recipient member.
const TEXT_BODY: &str = r#"{
  "messaging_product": "whatsapp",
  "recipient_type": "individual",
  __RECIPIENT__,
  "type": "text",
  "text": {
    "preview_url": true,
    "body": "Hi Pablo, your order #A-2291 has shipped and arrives Thursday. Track it: https://example.com/t/A-2291"
  },
  "biz_opaque_callback_data": "order-A-2291"
}"#;

/// A realistic template send with header, body and button parameters (about
/// 680 bytes).
const TEMPLATE_BODY: &str = r#"{
  "messaging_product": "whatsapp",
  "recipient_type": "individual",
  __RECIPIENT__,
  "type": "template",
  "template": {
    "name": "order_shipped_v2",
    "language": {"code": "en_US"},
    "components": [
      {"type": "header", "parameters": [
        {"type": "image", "image": {"link": "https://cdn.example.com/img/parcel.png"}}]},
      {"type": "body", "parameters": [
        {"type": "text", "text": "Pablo"},
        {"type": "text", "text": "A-2291"},
        {"type": "text", "text": "Thursday, 12 June"}]},
      {"type": "button", "sub_type": "url", "index": "0", "parameters": [
        {"type": "text", "text": "A-2291"}]}
    ]
  }
}"#;

/// `shape` with its recipient member set to `"key": "value"`.
fn body(shape: &str, key: &str, value: &str) -> Vec<u8> {
    shape
        .replace("__RECIPIENT__", &format!("\"{key}\": \"{value}\""))
        .into_bytes()
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

// ---------------------------------------------------------------------------
// Our path, as `send::judge` runs it.

/// `address` then, for a person, `decide`. The known phone only counts for a
/// BSUID-only send, as in the proxy, which looks it up only then.
fn table(facts: &Facts<'_>, known_phone: Option<&str>, policy: &Policy) -> Decision {
    match address(facts, policy) {
        Addressing::Untouched => Decision::Forward,
        Addressing::Blocked(reason) => Decision::Block(reason),
        Addressing::Person(person) => {
            let known_phone = known_phone.filter(|_| person.is_bsuid_only());
            decide(&person, MessageKind::default(), known_phone, policy)
        }
    }
}

fn ours_classify_to(body: &[u8]) -> IdClass {
    let payload = SendPayload::parse(body).expect("bench bodies are valid sends");
    payload
        .to
        .as_ref()
        .and_then(Member::text)
        .map_or(IdClass::Invalid, classify)
}

fn ours_decide(body: &[u8], known_phone: Option<&str>, policy: &Policy) -> Decision {
    let payload = SendPayload::parse(body).expect("bench bodies are valid sends");
    table(&facts_of(&payload), known_phone, policy)
}

/// Parse, then splice the BSUID from `to` into `recipient`.
fn ours_rewrite(body: &[u8]) -> Vec<u8> {
    let payload = SendPayload::parse(body).expect("bench bodies are valid sends");
    payload.rewrite(&Target::Absent, &Target::FromTo)
}

/// Parse, find nothing to change, forward the original bytes.
fn ours_untouched(body: &[u8]) -> &[u8] {
    let payload = SendPayload::parse(body).expect("bench bodies are valid sends");
    payload.body()
}

// ---------------------------------------------------------------------------
// The naive path: a whole `serde_json::Value` per body.

fn naive_parse(body: &[u8]) -> Value {
    let value: Value = serde_json::from_slice(body).expect("bench bodies are valid JSON");
    assert!(value.is_object(), "bench bodies are objects");
    value
}

/// A recipient field's text: strings as they are, numbers by their digits,
/// `null` absent, anything else an (invalid) empty value.
fn naive_text(value: Option<&Value>) -> Option<Cow<'_, str>> {
    match value? {
        Value::Null => None,
        Value::String(text) => Some(Cow::Borrowed(text)),
        Value::Number(number) => Some(Cow::Owned(number.to_string())),
        _ => Some(Cow::Borrowed("")),
    }
}

fn as_recipient(text: Option<&str>) -> Option<Recipient<'_>> {
    text.map(|value| Recipient {
        value,
        class: classify(value),
    })
}

fn naive_classify_to(body: &[u8]) -> IdClass {
    let value = naive_parse(body);
    value
        .get("to")
        .and_then(Value::as_str)
        .map_or(IdClass::Invalid, classify)
}

fn naive_decide(body: &[u8], known_phone: Option<&str>, policy: &Policy) -> Decision {
    let value = naive_parse(body);
    let group = value.get("recipient_type").and_then(Value::as_str) == Some("group");
    let to = naive_text(value.get("to"));
    let recipient = naive_text(value.get("recipient"));
    let facts = Facts {
        group,
        to: as_recipient(to.as_deref()),
        recipient: as_recipient(recipient.as_deref()),
    };
    table(&facts, known_phone, policy)
}

/// Parse, move `to` to `recipient` in the tree, serialise the tree again.
fn naive_rewrite(body: &[u8]) -> Vec<u8> {
    let mut value = naive_parse(body);
    let object = value.as_object_mut().expect("checked in naive_parse");
    if let Some(to) = object.remove("to") {
        object.insert("recipient".to_owned(), to);
    }
    serde_json::to_vec(&value).expect("a Value always serialises")
}

/// Parse the tree, find nothing to change, forward the original bytes.
fn naive_untouched(body: &[u8]) -> &[u8] {
    black_box(naive_parse(body));
    body
}

// ---------------------------------------------------------------------------
// Benchmarks.

fn bench_classify(c: &mut Criterion) {
    for (id, class) in IDENTIFIERS {
        assert_eq!(classify(id), class, "{id}");
    }
    let bodies: Vec<(Vec<u8>, IdClass)> = IDENTIFIERS
        .iter()
        .map(|&(id, class)| (body(TEXT_BODY, "to", id), class))
        .collect();
    for (body, class) in &bodies {
        assert_eq!(ours_classify_to(body), *class);
        assert_eq!(naive_classify_to(body), *class);
    }

    let mut group = c.benchmark_group("classify");
    group.throughput(Throughput::Elements(IDENTIFIERS.len() as u64));
    group.bench_function("ours", |b| {
        b.iter(|| {
            for (id, _) in IDENTIFIERS {
                black_box(classify(black_box(id)));
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("classify_body");
    group.throughput(Throughput::Elements(bodies.len() as u64));
    group.bench_function("ours", |b| {
        b.iter(|| {
            for (body, _) in &bodies {
                black_box(ours_classify_to(black_box(body)));
            }
        })
    });
    group.bench_function("naive_value", |b| {
        b.iter(|| {
            for (body, _) in &bodies {
                black_box(naive_classify_to(black_box(body)));
            }
        })
    });
    group.finish();
}

/// A decision case: its name, body, what the identity store knows and the
/// decision it must reach.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    known_phone: Option<&'static str>,
    expect: fn(&Decision) -> bool,
}

fn decide_cases() -> Vec<Case> {
    vec![
        Case {
            name: "phone_only",
            body: body(TEXT_BODY, "to", PHONE_FORMATTED),
            known_phone: None,
            expect: |d| *d == Decision::Forward,
        },
        Case {
            name: "bsuid_in_to",
            body: body(TEXT_BODY, "to", BSUID),
            known_phone: None,
            expect: |d| {
                matches!(d, Decision::Rewrite { to: Target::Absent, recipient: Target::FromTo, actions }
                    if actions.to_recipient && !actions.resolved)
            },
        },
        Case {
            name: "bsuid_only_known_phone",
            body: body(TEXT_BODY, "recipient", BSUID),
            known_phone: Some(PHONE_DIGITS),
            expect: |d| {
                matches!(d, Decision::Rewrite { to: Target::Value(phone), recipient: Target::FromRecipient, actions }
                    if phone == PHONE_DIGITS && actions.resolved)
            },
        },
        Case {
            name: "username",
            body: body(TEXT_BODY, "to", "@pablo.m"),
            known_phone: None,
            expect: |d| {
                *d == Decision::Block(BlockReason::UsernameTarget {
                    recased_bsuid: false,
                })
            },
        },
    ]
}

fn bench_decide(c: &mut Criterion) {
    let policy = Policy::default();
    let cases = decide_cases();
    let mut group = c.benchmark_group("decide");
    for case in &cases {
        let ours = ours_decide(&case.body, case.known_phone, &policy);
        assert!((case.expect)(&ours), "{}: ours decided {ours:?}", case.name);
        let naive = naive_decide(&case.body, case.known_phone, &policy);
        assert_eq!(naive, ours, "{}: the two paths disagree", case.name);

        let payload = SendPayload::parse(&case.body).expect("valid send");
        let facts = facts_of(&payload);
        group.bench_function(format!("table/{}", case.name), |b| {
            b.iter(|| {
                black_box(table(
                    black_box(&facts),
                    black_box(case.known_phone),
                    &policy,
                ))
            })
        });
        group.bench_function(format!("ours/{}", case.name), |b| {
            b.iter(|| {
                black_box(ours_decide(
                    black_box(&case.body),
                    black_box(case.known_phone),
                    &policy,
                ))
            })
        });
        group.bench_function(format!("naive_value/{}", case.name), |b| {
            b.iter(|| {
                black_box(naive_decide(
                    black_box(&case.body),
                    black_box(case.known_phone),
                    &policy,
                ))
            })
        });
    }
    group.finish();
}

fn bench_rewrite(c: &mut Criterion) {
    let rewritten = [
        ("text", body(TEXT_BODY, "to", BSUID)),
        ("template", body(TEMPLATE_BODY, "to", BSUID)),
    ];
    let untouched = [
        ("untouched_text", body(TEXT_BODY, "to", PHONE_DIGITS)),
        (
            "untouched_template",
            body(TEMPLATE_BODY, "to", PHONE_DIGITS),
        ),
    ];

    let mut group = c.benchmark_group("rewrite");
    for (name, body) in &rewritten {
        // Both rewrites must mean the same JSON: BSUID in `recipient`, no `to`.
        let ours = ours_rewrite(body);
        let naive = naive_rewrite(body);
        let ours_value: Value = serde_json::from_slice(&ours).expect("ours is JSON");
        assert_eq!(ours_value, naive_parse(&naive), "{name}");
        assert_eq!(ours_value.get("recipient"), Some(&Value::from(BSUID)));
        assert_eq!(ours_value.get("to"), None);

        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| black_box(ours_rewrite(black_box(body))))
        });
        group.bench_function(format!("naive_value/{name}"), |b| {
            b.iter(|| black_box(naive_rewrite(black_box(body))))
        });
    }
    for (name, body) in &untouched {
        let payload = SendPayload::parse(body).expect("valid send");
        let decision = table(&facts_of(&payload), None, &Policy::default());
        assert_eq!(decision, Decision::Forward, "{name} is forwarded as is");

        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("ours/{name}"), |b| {
            b.iter(|| black_box(ours_untouched(black_box(body))))
        });
        group.bench_function(format!("naive_value/{name}"), |b| {
            b.iter(|| black_box(naive_untouched(black_box(body))))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_classify, bench_decide, bench_rewrite
}
criterion_main!(benches);
