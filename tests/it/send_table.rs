//! Every row of the decision table (docs/design.md §2), end to end: a real client
//! sends through sendgate to the sandbox, and the tests assert what the
//! sandbox received and what the client got back.

use crate::support::{Proxy, SandboxUpstream, raw_exchange, sandbox_number_config};
use sendgate::sandbox::{Outcome, PHONE_NUMBER_ID};

const BSUID: &str = "US.13491208655302741918";

fn text_to(field: &str, value: &str) -> String {
    format!(
        r#"{{"messaging_product":"whatsapp","recipient_type":"individual","{field}":"{value}","type":"text","text":{{"preview_url":false,"body":"hello"}}}}"#
    )
}

fn template(to_field: &str, value: &str, name: &str) -> String {
    format!(
        r#"{{"messaging_product":"whatsapp","{to_field}":"{value}","type":"template","template":{{"name":"{name}","language":{{"code":"en_US"}}}}}}"#
    )
}

async fn setup(extra: &str) -> (SandboxUpstream, Proxy) {
    let upstream = SandboxUpstream::start().await;
    let proxy = Proxy::start(
        &upstream.url(),
        &format!("{extra}\n{}", sandbox_number_config()),
    )
    .await;
    (upstream, proxy)
}

/// Asserts that nothing reached the upstream.
fn nothing_sent(upstream: &SandboxUpstream) {
    assert!(
        upstream.sandbox.received().is_empty(),
        "{:#?}",
        upstream.sandbox.received()
    );
}

#[tokio::test]
async fn row_1_group_send_is_forwarded_untouched() {
    let (upstream, proxy) = setup("").await;
    let body = r#"{"messaging_product":"whatsapp","recipient_type":"group","to":"120363044444444444","type":"text","text":{"body":"hi"}}"#;
    let answer = proxy.send(body).await;
    assert_eq!(answer.decision(), "forwarded");
    assert_eq!(upstream.sandbox.received()[0].raw_body, body.as_bytes());
}

#[tokio::test]
async fn row_2_username_is_blocked_before_the_upstream() {
    let (upstream, proxy) = setup("").await;
    let answer = proxy.send(&text_to("to", "@pablo.m")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.graph_error_code(), 100);
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Usernames cannot be message targets")
    );
    assert_eq!(answer.decision(), "blocked: username_target");
    nothing_sent(&upstream);

    // Each refusal carries its own request id, `sg<start>-<n>` in hex.
    let again = proxy.send(&text_to("to", "@pablo.m")).await;
    let ids =
        [&answer, &again].map(|a| a.json()["error"]["fbtrace_id"].as_str().unwrap().to_owned());
    for id in &ids {
        let (prefix, n) = id.split_once('-').expect("prefix-n");
        let hex = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(prefix.strip_prefix("sg").is_some_and(hex) && hex(n), "{id}");
    }
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn row_3_junk_recipient_is_blocked() {
    let (upstream, proxy) = setup("").await;
    for junk in ["", "+", "12345678901234567", "not a number!"] {
        let answer = proxy.send(&text_to("to", junk)).await;
        assert_eq!(answer.graph_error_code(), 100, "{junk:?}");
        assert_eq!(answer.decision(), "blocked: invalid_recipient", "{junk:?}");
    }
    let answer = proxy
        .send(r#"{"messaging_product":"whatsapp","to":{"phone":"1"},"type":"text"}"#)
        .await;
    assert_eq!(answer.decision(), "blocked: invalid_recipient");
    nothing_sent(&upstream);
}

#[tokio::test]
async fn row_4_missing_recipient_is_blocked() {
    let (upstream, proxy) = setup("").await;
    let answer = proxy
        .send(r#"{"messaging_product":"whatsapp","type":"text","text":{"body":"x"}}"#)
        .await;
    assert_eq!(answer.graph_error_code(), 100);
    assert_eq!(answer.decision(), "blocked: missing_recipient");
    let answer = proxy.send(r#"{"to":null,"recipient":null}"#).await;
    assert_eq!(answer.decision(), "blocked: missing_recipient");
    nothing_sent(&upstream);
}

#[tokio::test]
async fn row_5_bsuid_in_to_reaches_meta_in_recipient() {
    let (upstream, proxy) = setup("").await;
    let answer = proxy.send(&text_to("to", BSUID)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.decision(), "rewritten: to->recipient");
    assert_eq!(answer.json()["contacts"][0]["user_id"], BSUID);
    let received = &upstream.sandbox.received()[0];
    assert_eq!(
        received.raw_body,
        text_to("recipient", BSUID).as_bytes(),
        "only the key changed"
    );
    assert_eq!(received.outcome, Outcome::Delivered, "not silently dropped");
}

#[tokio::test]
async fn row_6_phone_in_recipient_moves_to_to() {
    let (upstream, proxy) = setup("").await;
    let answer = proxy.send(&text_to("recipient", "+1 (631) 555-1234")).await;
    assert_eq!(answer.decision(), "rewritten: recipient->to");
    assert_eq!(answer.json()["contacts"][0]["wa_id"], "16315551234");
    let received = &upstream.sandbox.received()[0];
    assert_eq!(
        received.raw_body,
        text_to("to", "+1 (631) 555-1234").as_bytes()
    );
}

#[tokio::test]
async fn row_7_two_people_are_blocked() {
    let (upstream, proxy) = setup("").await;
    let answer = proxy
        .send(r#"{"to":"16315551234","recipient":"16505551234","type":"text"}"#)
        .await;
    assert_eq!(answer.graph_error_code(), 100);
    assert_eq!(answer.decision(), "blocked: conflicting_recipients");
    let answer = proxy
        .send(r#"{"to":"US.1","recipient":"US.2","type":"text"}"#)
        .await;
    assert_eq!(answer.decision(), "blocked: conflicting_recipients");
    nothing_sent(&upstream);
}

#[tokio::test]
async fn row_8_attested_phone_is_added_to_a_bsuid_send() {
    let (upstream, proxy) = setup("").await;
    proxy.attest(PHONE_NUMBER_ID, BSUID, "16315551234");
    let answer = proxy.send(&text_to("recipient", BSUID)).await;
    assert_eq!(answer.decision(), "resolved: bsuid->phone");
    let received = &upstream.sandbox.received()[0];
    let expected = format!(
        r#"{{"messaging_product":"whatsapp","recipient_type":"individual","to":"16315551234","recipient":"{BSUID}","type":"text","text":{{"preview_url":false,"body":"hello"}}}}"#
    );
    assert_eq!(received.raw_body, expected.as_bytes());
    assert_eq!(answer.json()["contacts"][0]["wa_id"], "16315551234");
}

#[tokio::test]
async fn a_send_naming_both_teaches_nothing_by_default() {
    let (upstream, proxy) = setup("").await;
    let both = format!(r#"{{"to":"16315551234","recipient":"{BSUID}","type":"text"}}"#);
    assert_eq!(proxy.send(&both).await.decision(), "forwarded");
    assert_eq!(
        proxy.send(&text_to("recipient", BSUID)).await.decision(),
        "forwarded",
        "a send's 2xx proves nothing about the BSUID beside `to`"
    );
    assert_eq!(upstream.sandbox.received().len(), 2);
}

#[tokio::test]
async fn a_pair_learned_from_a_send_answers_only_for_the_number_that_sent_it() {
    // Both numbers in one portfolio: the claim still stays with its sender.
    let config = format!(
        "[identity]\nlearn_from_sends = true\n{}portfolio = \"acme\"\n\
         [numbers.\"222\"]\nportfolio = \"acme\"\n",
        sandbox_number_config()
    );
    let upstream = SandboxUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), &config).await;
    let both = format!(r#"{{"to":"16315551234","recipient":"{BSUID}","type":"text"}}"#);
    proxy.send(&both).await;
    // The claim is written off the request path: wait (bounded) for it.
    let mut decision = String::new();
    for _ in 0..100 {
        decision = proxy
            .send(&text_to("recipient", BSUID))
            .await
            .decision()
            .to_owned();
        if decision != "forwarded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(decision, "resolved: bsuid->phone", "the sending number");
    let other = proxy
        .post("/v21.0/222/messages", &text_to("recipient", BSUID), &[])
        .await;
    assert_eq!(
        other.decision(),
        "forwarded",
        "another number, even of the same portfolio"
    );
    // A signed webhook that gives the BSUID another phone wins.
    proxy.attest(PHONE_NUMBER_ID, BSUID, "16505550000");
    let answer = proxy.send(&text_to("recipient", BSUID)).await;
    assert_eq!(answer.decision(), "resolved: bsuid->phone");
    let last = upstream.sandbox.received().last().unwrap().raw_body.clone();
    assert!(
        String::from_utf8_lossy(&last).contains("\"to\":\"16505550000\""),
        "Meta's word, not the send's"
    );
    let other = proxy
        .post("/v21.0/222/messages", &text_to("recipient", BSUID), &[])
        .await;
    assert_eq!(
        other.decision(),
        "resolved: bsuid->phone",
        "attested: the whole portfolio"
    );
}

#[tokio::test]
async fn attested_pairs_answer_only_in_their_scope() {
    let config = format!(
        "{}portfolio = \"acme\"\n[numbers.\"222\"]\nportfolio = \"acme\"\n\
         [numbers.\"333\"]\nportfolio = \"other\"\n",
        sandbox_number_config()
    );
    let upstream = SandboxUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), &config).await;
    proxy.attest(PHONE_NUMBER_ID, BSUID, "16315551234");
    for (number, decision) in [
        ("222", "resolved: bsuid->phone"),
        ("333", "forwarded"),
        ("444", "forwarded"),
    ] {
        let answer = proxy
            .post(
                &format!("/v21.0/{number}/messages"),
                &text_to("recipient", BSUID),
                &[],
            )
            .await;
        assert_eq!(answer.decision(), decision, "{number}");
    }
}

#[tokio::test]
async fn failed_sends_teach_nothing() {
    let upstream = crate::support::FakeUpstream::with(|_| {
        crate::support::json(
            http::StatusCode::BAD_REQUEST,
            r#"{"error":{"message":"(#100) x","type":"OAuthException","code":100}}"#,
        )
    })
    .await;
    let config = format!(
        "[identity]\nlearn_from_sends = true\n{}",
        sandbox_number_config()
    );
    let proxy = Proxy::start(&upstream.url(), &config).await;
    let both = format!(r#"{{"to":"16315551234","recipient":"{BSUID}","type":"text"}}"#);
    assert_eq!(proxy.send(&both).await.status, 400);
    assert_eq!(
        proxy.send(&text_to("recipient", BSUID)).await.decision(),
        "forwarded"
    );
}

#[tokio::test]
async fn row_9_authentication_template_needs_a_phone() {
    let (upstream, proxy) = setup("").await;
    let answer = proxy.send(&template("recipient", BSUID, "otp_login")).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.graph_error_code(), 131062);
    assert_eq!(answer.decision(), "blocked: auth_template_needs_phone");
    // The category came from Meta's template listing, asked with the sender's token.
    let received = upstream.sandbox.received();
    assert_eq!(received.len(), 1, "only the category lookup: {received:#?}");
    assert!(
        received[0]
            .path
            .contains("/message_templates?name=otp_login"),
        "{}",
        received[0].path
    );

    // Once a phone is known, the same send goes to the phone.
    proxy.attest(PHONE_NUMBER_ID, BSUID, "16315551234");
    let answer = proxy.send(&template("recipient", BSUID, "otp_login")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.decision(), "resolved: bsuid->phone");
    assert_eq!(
        upstream.sandbox.received().last().unwrap().outcome,
        Outcome::Delivered
    );
}

#[tokio::test]
async fn row_9_config_override_needs_no_lookup() {
    let (upstream, proxy) = setup("[templates]\nmy_code = \"AUTHENTICATION\"\n").await;
    let answer = proxy.send(&template("to", BSUID, "my_code")).await;
    assert_eq!(answer.graph_error_code(), 131062);
    nothing_sent(&upstream);
}

#[tokio::test]
async fn row_10_campaigns_need_a_phone() {
    let (upstream, proxy) = setup("[clients.blaster]\ncampaign = true\n").await;
    // A MARKETING template.
    let answer = proxy
        .send(&template("recipient", BSUID, "spring_sale"))
        .await;
    assert_eq!(answer.graph_error_code(), 131062);
    assert_eq!(answer.decision(), "blocked: campaign_needs_phone");
    // A campaign client, even for a utility template or text.
    let answer = proxy
        .send_with(
            &text_to("recipient", BSUID),
            &[("x-sendgate-client", "blaster")],
        )
        .await;
    assert_eq!(answer.decision(), "blocked: campaign_needs_phone");
    // Any /marketing_messages send.
    let path = format!(
        "/v21.0/{}/marketing_messages",
        sendgate::sandbox::PHONE_NUMBER_ID
    );
    let answer = proxy.post(&path, &text_to("recipient", BSUID), &[]).await;
    assert_eq!(answer.decision(), "blocked: campaign_needs_phone");
    // A utility template from an ordinary client goes to the BSUID.
    let answer = proxy
        .send(&template("recipient", BSUID, "order_update"))
        .await;
    assert_eq!(answer.decision(), "forwarded");
    assert!(
        upstream
            .sandbox
            .received()
            .iter()
            .all(|r| !r.path.ends_with("messages") || r.body.contains("order_update"))
    );

    proxy.attest(PHONE_NUMBER_ID, BSUID, "16315551234");
    let answer = proxy
        .send(&template("recipient", BSUID, "spring_sale"))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.decision(), "resolved: bsuid->phone");
}

#[tokio::test]
async fn unknown_category_follows_config() {
    let (_upstream, proxy) = setup("[policy]\nunknown_category = \"marketing\"\n").await;
    let answer = proxy
        .send(&template("recipient", BSUID, "never_heard_of_it"))
        .await;
    assert_eq!(answer.decision(), "blocked: campaign_needs_phone");
    let (_upstream, proxy) = setup("").await;
    let answer = proxy
        .send(&template("recipient", BSUID, "never_heard_of_it"))
        .await;
    assert_eq!(
        answer.decision(),
        "forwarded",
        "unknown is allowed by default"
    );
}

#[tokio::test]
async fn template_lookups_are_cached() {
    let (upstream, proxy) = setup("").await;
    for _ in 0..3 {
        proxy
            .send(&template("recipient", BSUID, "spring_sale"))
            .await;
    }
    let lookups = upstream
        .sandbox
        .received()
        .iter()
        .filter(|r| r.path.contains("message_templates"))
        .count();
    assert_eq!(lookups, 1);
}

#[tokio::test]
async fn row_11_correct_sends_reach_meta_byte_identical() {
    let (upstream, proxy) = setup("").await;
    let bodies = [
        text_to("to", "+1 (631) 555-1234"),
        text_to("recipient", BSUID),
        format!(
            "{{\n  \"to\" : \"16315551234\",\n  \"recipient\": \"{BSUID}\",\n  \"type\": \"text\"\n}}"
        ),
        r#"{"to":"16315551234","type":"text","text":{"body":"caf\u00e9 \ud83d\ude00"}}"#.to_owned(),
    ];
    for body in &bodies {
        let answer = proxy.send(body).await;
        assert_eq!(answer.decision(), "forwarded");
    }
    let received: Vec<_> = upstream
        .sandbox
        .received()
        .into_iter()
        .map(|r| r.raw_body)
        .collect();
    assert_eq!(
        received,
        bodies
            .iter()
            .map(|b| bytes::Bytes::from(b.clone()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn report_mode_forwards_unchanged_and_says_what_it_would_do() {
    let (upstream, proxy) = setup("[policy]\nmode = \"report\"\n").await;
    let username = text_to("to", "@pablo.m");
    let answer = proxy.send(&username).await;
    assert_eq!(answer.decision(), "would-block: username_target");
    let bsuid_in_to = text_to("to", BSUID);
    let answer = proxy.send(&bsuid_in_to).await;
    assert_eq!(answer.decision(), "would-rewrite: to->recipient");
    let auth = template("recipient", BSUID, "otp_login");
    let answer = proxy.send(&auth).await;
    assert_eq!(answer.decision(), "would-block: auth_template_needs_phone");
    let malformed = "{\"to\": ";
    let answer = proxy.send(malformed).await;
    assert_eq!(answer.decision(), "would-block: malformed_json");

    let sends: Vec<_> = upstream
        .sandbox
        .received()
        .into_iter()
        .filter(|r| r.path.ends_with("/messages"))
        .map(|r| r.raw_body)
        .collect();
    let expected: Vec<&[u8]> = vec![
        username.as_bytes(),
        bsuid_in_to.as_bytes(),
        auth.as_bytes(),
        malformed.as_bytes(),
    ];
    assert_eq!(sends, expected);
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_graph_errors() {
    let (upstream, proxy) = setup("max_send_body_bytes = 1024\n").await;
    for (body, reason) in [
        ("{\"to\":", "malformed_json"),
        ("[\"to\"]", "not_an_object"),
        ("\u{0}\u{1}", "malformed_json"),
        (r#"{"to":"1","to":"2"}"#, "duplicate_field"),
    ] {
        let answer = proxy.send(body).await;
        assert_eq!(answer.status, 400, "{body:?}");
        assert_eq!(answer.graph_error_code(), 100);
        assert_eq!(answer.decision(), format!("blocked: {reason}"));
    }
    let huge = format!(
        r#"{{"to":"16315551234","text":{{"body":"{}"}}}}"#,
        "x".repeat(2000)
    );
    let answer = proxy.send(&huge).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.graph_error_code(), 100);
    // A declared length over the cap is refused before the body arrives
    // (raw_exchange gives up after 10 s, the request timeout is 30 s).
    // Over 64 KiB, so the front streams it instead of reading it whole.
    let head = "POST /v21.0/106540352242922/messages HTTP/1.1\r\nHost: p\r\n\
                Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"to\":";
    let answer = raw_exchange(proxy.addr, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    nothing_sent(&upstream);
}
