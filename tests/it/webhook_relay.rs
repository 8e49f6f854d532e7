//! The webhook relay end to end: Meta (the test) signs and posts, sendgate
//! verifies, learns and forwards to the business's endpoint (a fake).

use crate::support::{
    APP_SECRET, FakeUpstream, Proxy, SandboxUpstream, VERIFY_TOKEN, in_memory_store, json,
};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use sendgate::Config;
use sendgate::identity::IdentityEvent;
use sendgate::webhook::{learn, sign};

const FIXTURES: &[&str] = &[
    "text_no_username",
    "username_with_phone",
    "username_no_phone",
    "status_sent",
    "status_failed",
    "user_changed_number",
    "user_changed_user_id",
    "shared_contact_request",
    "multi_entry",
    "not_messages",
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/webhooks/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).unwrap()
}

/// sendgate with the relay on `/webhook`, forwarding to `downstream`, and the
/// sandbox as the Cloud API.
async fn relay_to(downstream: &FakeUpstream) -> (SandboxUpstream, Proxy) {
    let upstream = SandboxUpstream::start().await;
    let text = format!(
        "[webhook]\npath = \"/webhook\"\nforward_to = \"{}/hooks/whatsapp?app=crm\"\n",
        downstream.url()
    );
    let mut config = Config::from_sources(&text, in_memory_store()).unwrap();
    config.upstream = upstream.url();
    (upstream, Proxy::start_with(config).await)
}

async fn post_webhook(
    proxy: &Proxy,
    body: &[u8],
    signature: Option<&str>,
) -> crate::support::Answer {
    let mut request =
        Request::post(proxy.url("/webhook")).header("content-type", "application/json");
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    proxy
        .request(
            request
                .body(Full::new(Bytes::copy_from_slice(body)))
                .unwrap(),
        )
        .await
}

async fn campaign_send(proxy: &Proxy, number: &str, bsuid: &str) -> crate::support::Answer {
    let body = format!(
        r#"{{"messaging_product":"whatsapp","recipient":"{bsuid}","type":"text","text":{{"body":"sale"}}}}"#
    );
    proxy
        .post(&format!("/v21.0/{number}/marketing_messages"), &body, &[])
        .await
}

#[tokio::test]
async fn signed_webhook_is_forwarded_byte_identical_and_learned() {
    let downstream = FakeUpstream::start().await;
    let (_upstream, proxy) = relay_to(&downstream).await;
    let body = fixture("username_with_phone");
    let signature = sign(APP_SECRET, &body);

    // Before: a campaign to this BSUID alone is refused.
    let before = campaign_send(&proxy, "427781093356201", "MX.90817263544536271809").await;
    assert_eq!(before.decision(), "blocked: campaign_needs_phone");

    let answer = post_webhook(&proxy, &body, Some(&signature)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = downstream.only();
    assert_eq!(seen.body, body, "forwarded byte for byte");
    assert_eq!(
        seen.headers["x-hub-signature-256"],
        signature.as_str(),
        "with its signature"
    );
    assert_eq!(seen.uri, "/hooks/whatsapp?app=crm");

    let after = campaign_send(&proxy, "427781093356201", "MX.90817263544536271809").await;
    assert_eq!(after.decision(), "resolved: bsuid->phone");
    let record = &proxy
        .app
        .identities
        .find("MX.90817263544536271809", None)
        .unwrap()[0];
    assert_eq!(record.phone.as_deref(), Some("5215512345678"));
    assert_eq!(record.username.as_deref(), Some("pablo.m"));
}

#[tokio::test]
async fn bad_or_missing_signature_is_refused_unforwarded_and_unlearned() {
    let downstream = FakeUpstream::start().await;
    let (_upstream, proxy) = relay_to(&downstream).await;
    let body = fixture("username_with_phone");
    for signature in [
        None,
        Some(sign("wrong-secret", &body)),
        Some("sha256=zz".to_owned()),
        Some(sign(APP_SECRET, b"other body")),
    ] {
        let answer = post_webhook(&proxy, &body, signature.as_deref()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{signature:?}");
    }
    assert!(downstream.seen().is_empty());
    assert!(proxy.app.identities.is_empty().unwrap());
}

#[tokio::test]
async fn failing_downstream_makes_meta_retry() {
    let downstream = FakeUpstream::with(|_| json(StatusCode::INTERNAL_SERVER_ERROR, "{}")).await;
    let (_upstream, proxy) = relay_to(&downstream).await;
    let body = fixture("text_no_username");
    let answer = post_webhook(&proxy, &body, Some(&sign(APP_SECRET, &body))).await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(downstream.seen().len(), 1);
    assert!(
        !proxy.app.identities.is_empty().unwrap(),
        "learned even so: Meta's retry is harmless"
    );
}

#[tokio::test]
async fn unreachable_downstream_is_a_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = listener.local_addr().unwrap();
    drop(listener);
    let upstream = SandboxUpstream::start().await;
    let text = format!("[webhook]\npath = \"/webhook\"\nforward_to = \"http://{gone}/hook\"\n");
    let mut config = Config::from_sources(&text, in_memory_store()).unwrap();
    config.upstream = upstream.url();
    let proxy = Proxy::start_with(config).await;
    let body = fixture("status_sent");
    let answer = post_webhook(&proxy, &body, Some(&sign(APP_SECRET, &body))).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn malformed_payload_is_forwarded_but_teaches_nothing() {
    let downstream = FakeUpstream::start().await;
    let (_upstream, proxy) = relay_to(&downstream).await;
    let body = b"{\"object\": \"whatsapp_business_account\", \"entry\": [".to_vec();
    let answer = post_webhook(&proxy, &body, Some(&sign(APP_SECRET, &body))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(downstream.only().body, body);
    assert!(proxy.app.identities.is_empty().unwrap());
}

#[tokio::test]
async fn verification_handshake_both_ways() {
    let downstream = FakeUpstream::start().await;
    let (_upstream, proxy) = relay_to(&downstream).await;
    let get = |query: String| {
        Request::get(proxy.url(&format!("/webhook?{query}")))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let good =
        format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444");
    let answer = proxy.request(get(good)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "1158201444");
    let wrong = "hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1158201444".to_owned();
    assert_eq!(
        proxy.request(get(wrong)).await.status,
        StatusCode::FORBIDDEN
    );
    let no_mode = format!("hub.verify_token={VERIFY_TOKEN}&hub.challenge=1");
    assert_eq!(
        proxy.request(get(no_mode)).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(
        downstream.seen().is_empty(),
        "the handshake is answered, not forwarded"
    );
    // Counted as what they were, not as relayed deliveries.
    let metrics = proxy.app.render_metrics();
    let count = |outcome: &str| {
        let series = format!("sendgate_webhook_relays_total{{outcome=\"{outcome}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    assert_eq!(
        (count("verified"), count("unauthorized"), count("relayed")),
        (1, 2, 0),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_fixture_is_relayed_and_the_store_ends_up_holding_what_it_taught() {
    let downstream = FakeUpstream::start().await;
    let (_upstream, proxy) = relay_to(&downstream).await;
    let mut retired = Vec::new();
    for name in FIXTURES {
        let body = fixture(name);
        let answer = post_webhook(&proxy, &body, Some(&sign(APP_SECRET, &body))).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}");
        assert_eq!(downstream.seen().last().unwrap().body, body, "{name}");
        // Each lesson is visible in the store right after the answer.
        let config = proxy.app.config();
        for item in learn::learn(&body).unwrap() {
            let scope = config.scope_of(&item.phone_number_id).key();
            match item.event {
                IdentityEvent::Retired { bsuid } => retired.push((scope.into_owned(), bsuid)),
                // A retired BSUID stays dead even when a later webhook names it.
                IdentityEvent::Seen(seen)
                    if retired.contains(&(scope.to_string(), seen.bsuid.clone())) => {}
                IdentityEvent::Seen(seen) => {
                    let records = proxy
                        .app
                        .identities
                        .find(&seen.bsuid, Some(&scope))
                        .unwrap();
                    assert_eq!(records.len(), 1, "{name}: {}", seen.bsuid);
                    if let Some(phone) = seen.phone {
                        assert_eq!(records[0].phone.as_deref(), Some(phone.as_str()), "{name}");
                    }
                }
            }
        }
        for (portfolio, bsuid) in &retired {
            assert!(
                proxy
                    .app
                    .identities
                    .find(bsuid, Some(portfolio))
                    .unwrap()
                    .is_empty(),
                "{name}: {bsuid} retired"
            );
        }
    }
    // The number change left the new BSUID with the new phone, the old one gone.
    let new = &proxy
        .app
        .identities
        .find("US.79102837465019283746", None)
        .unwrap()[0];
    assert_eq!(new.phone.as_deref(), Some("16505550177"));
    assert!(
        proxy
            .app
            .identities
            .find("US.28471093756102938471", None)
            .unwrap()
            .is_empty()
    );
    assert_eq!(downstream.seen().len(), FIXTURES.len());
}
