//! Every spelling of a send is inspected, or refused, never forwarded
//! uninspected; batches that hold sends likewise; and every other request
//! still streams through byte for byte.

use crate::support::{Answer, FakeUpstream, Proxy, call, raw_exchange};
use http::StatusCode;

const NUMBER: &str = "106540352242922";
const USERNAME_SEND: &str =
    r#"{"messaging_product":"whatsapp","to":"pablomorales","type":"text","text":{"body":"hi"}}"#;
const PHONE_SEND: &str =
    r#"{"messaging_product":"whatsapp","to":"16315551234","type":"text","text":{"body":"hi"}}"#;

async fn request(proxy: &Proxy, method: &str, path: &str, body: &str) -> Answer {
    call(
        proxy.addr,
        method,
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer t"),
        ],
        body.as_bytes(),
    )
    .await
}

/// Each spelling, carrying a username target: blocked or refused, and
/// nothing reaches the upstream.
#[tokio::test]
async fn no_spelling_of_a_send_reaches_meta_uninspected() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "").await;
    let n = NUMBER;
    let variants = [
        ("POST", format!("/v21.0/{n}/messages/")),
        ("POST", format!("//v21.0//{n}//messages")),
        ("POST", format!("/v21.0/./{n}/messages")),
        ("POST", format!("/v21.0/x/../{n}/messages")),
        ("POST", format!("/v21.0/{n}/%6Dessages")),
        ("POST", format!("/v21.0/{n}/%256Dessages")),
        ("POST", format!("/v21.0/{n}%2Fmessages")),
        ("POST", format!("/V21.0/{n}/messages")),
        ("POST", format!("/v21.0/{n}/MESSAGES")),
        ("POST", format!("/v21.0/{n}/Marketing_Messages")),
        ("POST", format!("/v21.0/{n}/messages;x=1")),
        ("POST", format!("/v21.0/0{n}/messages")),
        ("POST", format!("/{n}/messages/")),
        ("post", format!("/v21.0/{n}/messages")),
        ("Post", format!("/v21.0/{n}/messages")),
        ("GET", format!("/v21.0/{n}/messages?method=post")),
        (
            "GET",
            format!("/v21.0/{n}/messages?method=POST&to=pablomorales"),
        ),
        ("DELETE", format!("/v21.0/{n}/messages?method=post")),
        ("POST", format!("/v21.0/{n}/messages?method=get")),
        ("POST", format!("/v21.0/{n}/messages?to=pablomorales")),
        ("PUT", format!("/v21.0/{n}/messages")),
        ("PATCH", format!("/v21.0/{n}/messages")),
    ];
    for (method, path) in &variants {
        let answer = request(&proxy, method, path, USERNAME_SEND).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(answer.graph_error_code(), 100, "{method} {path}");
        assert!(
            answer.decision().starts_with("blocked: "),
            "{method} {path}: {}",
            answer.decision()
        );
    }
    assert!(upstream.seen().is_empty(), "{:#?}", upstream.seen());
}

#[tokio::test]
async fn a_send_in_another_spelling_goes_upstream_canonical_and_untouched() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "").await;
    for (method, path) in [
        (
            "POST",
            format!("/V21.0/{NUMBER}/%6Dessages/?access_token=t"),
        ),
        ("post", format!("/v21.0/{NUMBER}/messages;x")),
    ] {
        let answer = request(&proxy, method, &path, PHONE_SEND).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.decision(), "forwarded");
    }
    let seen = upstream.seen();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].uri,
        format!("/v21.0/{NUMBER}/messages?access_token=t")
    );
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].uri, format!("/v21.0/{NUMBER}/messages"));
    assert!(seen.iter().all(|s| s.body == PHONE_SEND.as_bytes()));
}

#[tokio::test]
async fn a_lower_case_method_on_the_wire_is_still_a_send() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "").await;
    let head = format!(
        "post /v21.0/{NUMBER}/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{USERNAME_SEND}",
        USERNAME_SEND.len()
    );
    let answer = raw_exchange(proxy.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("username_target"), "{answer}");
    assert!(upstream.seen().is_empty());
}

fn batch_of(entries: &str) -> String {
    format!(r#"{{"access_token":"t","batch":{entries}}}"#)
}

const BATCH_USERNAME: &str = r#"[{"method":"GET","relative_url":"me"},{"method":"POST","relative_url":"v21.0/106540352242922/messages","body":"messaging_product=whatsapp&to=pablomorales&type=text&text=%7B%22body%22%3A%22hi%22%7D"}]"#;
const BATCH_PHONE: &str = r#"[{"method":"POST","relative_url":"v21.0/106540352242922/messages","body":"messaging_product=whatsapp&to=16315551234&type=text"}]"#;

#[tokio::test]
async fn a_batch_holding_a_send_is_refused_by_default() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "").await;
    for path in ["/", "/v21.0", "//v21.0/"] {
        for batch in [BATCH_USERNAME, BATCH_PHONE] {
            let answer = request(&proxy, "POST", path, &batch_of(batch)).await;
            assert_eq!(answer.status, 400, "{path}");
            assert_eq!(answer.decision(), "blocked: batch_contains_send");
        }
    }
    // The same batch form-encoded, and in the query.
    let form = format!("batch={}", urlencode(BATCH_USERNAME));
    let answer = request(&proxy, "POST", "/", &form).await;
    assert_eq!(answer.decision(), "blocked: batch_contains_send");
    let answer = request(&proxy, "POST", &format!("/?{form}"), "").await;
    assert_eq!(answer.decision(), "blocked: batch_contains_send");
    assert!(upstream.seen().is_empty());
    // A batch of reads, and a root POST that is no batch, go through untouched.
    let reads = batch_of(r#"[{"method":"GET","relative_url":"me"}]"#);
    let answer = request(&proxy, "POST", "/", &reads).await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.only().body, reads.as_bytes());
}

#[tokio::test]
async fn an_inspected_batch_goes_out_only_when_every_send_would() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "[policy]\nbatch = \"inspect\"\n").await;
    let answer = request(&proxy, "POST", "/", &batch_of(BATCH_USERNAME)).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.decision(), "blocked: username_target");
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.ends_with("(batch entry 1)"), "{message}");
    assert!(upstream.seen().is_empty());
    let rewrite = batch_of(
        r#"[{"method":"POST","relative_url":"v21.0/1/messages","body":"to=US.13491208655302741918&type=text"}]"#,
    );
    let answer = request(&proxy, "POST", "/", &rewrite).await;
    assert_eq!(answer.decision(), "blocked: batch_send_needs_rewrite");
    let body = batch_of(BATCH_PHONE);
    let answer = request(&proxy, "POST", "/", &body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.decision(), "forwarded");
    assert_eq!(upstream.only().body, body.as_bytes(), "forwarded untouched");
}

#[tokio::test]
async fn non_send_paths_still_stream_byte_exact() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "").await;
    let cases = [
        ("GET", format!("/v21.0/{NUMBER}?fields=throughput"), ""),
        ("GET", format!("/v21.0/{NUMBER}/media?x=%2F%6D&y=a+b"), ""),
        ("POST", format!("/v21.0/{NUMBER}/media"), "{\"file\":\"x\"}"),
        (
            "POST",
            "/v21.0/102290129340398/message_templates".to_owned(),
            "{\"name\":\"t\"}",
        ),
        ("GET", format!("/v21.0/{NUMBER}/Photos;x=1"), ""),
        ("GET", format!("/v21.0/{NUMBER}/messages"), ""),
        (
            "DELETE",
            format!("/v21.0/{NUMBER}/contact_book?bsuid=US.1"),
            "",
        ),
    ];
    for (method, path, body) in &cases {
        let answer = request(&proxy, method, path, body).await;
        assert_eq!(answer.status, 200, "{method} {path}");
        assert_eq!(answer.decision(), "<none>", "{method} {path}");
    }
    let seen = upstream.seen();
    for ((method, path, body), seen) in cases.iter().zip(&seen) {
        assert_eq!(seen.method.as_str(), *method);
        assert_eq!(&seen.uri, path);
        assert_eq!(seen.body, body.as_bytes());
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
