//! Trust between senders, through the real binary: no sender can teach
//! sendgate a pair that redirects another sender's sends, pairs Meta attests
//! answer only within their scope, and nothing a client sends can forge a
//! log line.

use std::net::SocketAddr;

use crate::support::{Answer, FakeUpstream, Served, call, serve};
use http::StatusCode;
use sendgate::webhook::sign;

/// Sender B's business number and its own phone (the attacker's, or simply
/// a wrong pairing).
const NUMBER_B: &str = "999";
const PHONE_B: &str = "15550009999";
/// Sender A's business number, and a person whose BSUID A sends to.
const NUMBER_A: &str = "123";
const VICTIM: &str = "US.13491208655302741918";
const APP_SECRET: &str = "trust-app-secret";

/// Starts the binary with `config` (TOML written to a file) in front of
/// `upstream`, its store in memory and its admin API off.
async fn start(config: &str, upstream: &FakeUpstream, env: &[(&str, &str)]) -> Served {
    let dir = std::env::temp_dir().join(format!("sendgate-trust-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{:x}.toml", fnv(config)));
    std::fs::write(&path, config).unwrap();
    let url = upstream.url();
    let mut env = env.to_vec();
    env.extend([("SENDGATE_STORE__PATH", ""), ("SENDGATE_ADMIN__LISTEN", "")]);
    serve(
        &["--config", path.to_str().unwrap(), "--upstream", &url],
        &env,
        None,
        false,
    )
    .await
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    })
}

async fn send(addr: SocketAddr, number: &str, token: &str, body: &str) -> Answer {
    let authorization = format!("Bearer {token}");
    call(
        addr,
        "POST",
        &format!("/v21.0/{number}/messages"),
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await
}

fn otp_to(bsuid: &str) -> String {
    format!(
        r#"{{"messaging_product":"whatsapp","recipient":"{bsuid}","type":"template","template":{{"name":"otp_login","language":{{"code":"en_US"}}}}}}"#
    )
}

/// The identity poisoning of the trust-boundary issue: B sends `to` = its
/// own phone with `recipient` = the victim's BSUID and gets Meta's 2xx
/// (Meta delivers to `to`); then A sends an authentication template to the
/// victim's BSUID alone. It must never carry B's phone.
async fn poisoning_scenario(config: &str) {
    let upstream = FakeUpstream::start().await;
    let served = start(config, &upstream, &[]).await;
    let poison = format!(
        r#"{{"messaging_product":"whatsapp","to":"{PHONE_B}","recipient":"{VICTIM}","type":"text","text":{{"body":"hi"}}}}"#
    );
    let answer = send(served.addr, NUMBER_B, "token-b", &poison).await;
    assert_eq!(answer.status, StatusCode::OK, "{config}");
    // Claims are written off the request path: give one the time to land.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let answer = send(served.addr, NUMBER_A, "token-a", &otp_to(VICTIM)).await;
    let decision = answer.decision().to_owned();
    assert!(
        decision == "blocked: auth_template_needs_phone" || decision == "forwarded",
        "{config}: {decision}"
    );
    for seen in upstream.seen().iter().filter(|s| s.uri.contains(NUMBER_A)) {
        assert!(
            !String::from_utf8_lossy(&seen.body).contains(PHONE_B),
            "{config}: A's send carried B's phone: {seen:?}"
        );
    }
}

const OTP_IS_AUTH: &str = "[templates]\notp_login = \"AUTHENTICATION\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cannot_poison_another_senders_resolution_by_default() {
    poisoning_scenario(OTP_IS_AUTH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_from_sends_stays_with_the_sending_number_across_portfolios() {
    let config = format!(
        "{OTP_IS_AUTH}[identity]\nlearn_from_sends = true\n\
         [numbers.\"{NUMBER_A}\"]\nportfolio = \"alpha\"\n\
         [numbers.\"{NUMBER_B}\"]\nportfolio = \"beta\"\n"
    );
    poisoning_scenario(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_from_sends_stays_with_the_sending_number_without_portfolios() {
    let config = format!("{OTP_IS_AUTH}[identity]\nlearn_from_sends = true\n");
    poisoning_scenario(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_from_sends_still_serves_the_number_that_opted_in() {
    // The opt-in works for the sender that taught the pair: its own
    // authentication template then goes to the phone it named.
    let upstream = FakeUpstream::start().await;
    let config = format!("{OTP_IS_AUTH}[identity]\nlearn_from_sends = true\n");
    let served = start(&config, &upstream, &[]).await;
    let both = format!(
        r#"{{"messaging_product":"whatsapp","to":"{PHONE_B}","recipient":"{VICTIM}","type":"text"}}"#
    );
    assert_eq!(
        send(served.addr, NUMBER_B, "token-b", &both).await.status,
        200
    );
    let mut decision = String::new();
    for _ in 0..100 {
        let answer = send(served.addr, NUMBER_B, "token-b", &otp_to(VICTIM)).await;
        decision = answer.decision().to_owned();
        if decision == "resolved: bsuid->phone" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(decision, "resolved: bsuid->phone");
}

/// A signed delivery, as Meta sends it, of a status naming a phone and
/// its BSUID to `number`.
fn status_webhook(number: &str, phone: &str, bsuid: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550001234","phone_number_id":"{number}"}},"statuses":[{{"id":"wamid.X","status":"delivered","timestamp":"1786446020","recipient_id":"{phone}","recipient_user_id":"{bsuid}"}}]}}}}]}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_meta_attests_answers_for_its_portfolio_and_no_other_number() {
    let upstream = FakeUpstream::start().await;
    let downstream = FakeUpstream::start().await;
    let config = format!(
        "{OTP_IS_AUTH}[webhook]\npath = \"/webhook\"\nforward_to = \"{}/hook\"\n\
         [numbers.\"123\"]\nportfolio = \"acme\"\n\
         [numbers.\"124\"]\nportfolio = \"acme\"\n\
         [numbers.\"125\"]\nportfolio = \"other\"\n",
        downstream.url()
    );
    let env = [
        ("SENDGATE_APP_SECRET", APP_SECRET),
        ("SENDGATE_VERIFY_TOKEN", "verify"),
    ];
    let served = start(&config, &upstream, &env).await;
    let delivery = status_webhook("123", "16315551234", VICTIM);
    let signature = sign(APP_SECRET, delivery.as_bytes());
    let answer = call(
        served.addr,
        "POST",
        "/webhook",
        &[
            ("x-hub-signature-256", &signature),
            ("content-type", "application/json"),
        ],
        delivery.as_bytes(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    for (number, expected) in [
        ("123", "resolved: bsuid->phone"),
        ("124", "resolved: bsuid->phone"),
        ("125", "blocked: auth_template_needs_phone"),
        ("126", "blocked: auth_template_needs_phone"),
    ] {
        let answer = send(served.addr, number, "token", &otp_to(VICTIM)).await;
        assert_eq!(answer.decision(), expected, "number {number}");
    }
    let resolved: Vec<_> = upstream
        .seen()
        .into_iter()
        .filter(|seen| String::from_utf8_lossy(&seen.body).contains("16315551234"))
        .map(|seen| seen.uri)
        .collect();
    assert_eq!(
        resolved,
        ["/v21.0/123/messages", "/v21.0/124/messages"],
        "the phone went out only from the attesting portfolio"
    );
}

/// Values a hostile sender puts where logs show them.
const HOSTILE: [&str; 4] = [
    "abcdefgh\r\nX:1",
    "US.1234\u{1b}[2J\u{1b}[31mred",
    "16315551234\u{0}\r\n2026-01-01T00:00:00Z  INFO forged",
    "\u{202e}evil\u{2028}line\"q\"\\",
];

async fn hostile_traffic(addr: SocketAddr) {
    for value in HOSTILE {
        let escaped = serde_json::to_string(value).unwrap();
        for field in ["to", "recipient"] {
            let body =
                format!(r#"{{"messaging_product":"whatsapp","{field}":{escaped},"type":"text"}}"#);
            let answer = send(addr, NUMBER_A, "token", &body).await;
            assert!(answer.status.is_client_error(), "{value:?}: {answer:?}");
        }
        let visible: String = value.chars().filter(|c| (' '..='~').contains(c)).collect();
        let body = r#"{"messaging_product":"whatsapp","to":"@pablo","type":"text"}"#;
        call(
            addr,
            "POST",
            &format!("/v21.0/{NUMBER_A}/messages"),
            &[
                ("x-sendgate-client", &visible),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await;
    }
}

/// True when a line is one that sendgate wrote: text lines start with a
/// timestamp, JSON lines are JSON objects.
fn forged_lines(logs: &str, json: bool) -> Vec<String> {
    logs.lines()
        .filter(|line| {
            let genuine = if json {
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object())
            } else {
                line.as_bytes().first().is_some_and(u8::is_ascii_digit) && line.contains("Z ")
            };
            !genuine
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identifier_or_header_forges_a_log_line_in_text_or_json() {
    for (format, show) in [("text", "false"), ("text", "true"), ("json", "true")] {
        let upstream = FakeUpstream::start().await;
        let env = [
            ("SENDGATE_STORE__PATH", ""),
            ("SENDGATE_ADMIN__LISTEN", ""),
            ("SENDGATE_LOG__FORMAT", format),
            ("SENDGATE_LOG__SHOW_IDENTIFIERS", show),
            ("SENDGATE_LOG__LEVEL", "info"),
            ("RUST_LOG", "info"),
            ("NO_COLOR", "1"),
        ];
        let url = upstream.url();
        let served = serve(&["--upstream", &url], &env, None, true).await;
        hostile_traffic(served.addr).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let logs = served.logs();
        assert!(
            logs.matches("send decision").count() >= HOSTILE.len() * 2,
            "{format}: the decisions were logged:\n{logs}"
        );
        let forged = forged_lines(&logs, format == "json");
        assert!(
            forged.is_empty(),
            "{format} show={show}: forged {forged:#?}"
        );
        assert!(
            !logs.contains('\u{1b}'),
            "{format}: an escape reached the log"
        );
        assert!(!logs.contains('\u{202e}'), "{format}: a direction override");
    }
}

/// Logs written to a file (not a terminal) carry no colour codes, with no
/// NO_COLOR set: an operator's log collector gets plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_file_carry_no_colour_codes() {
    let upstream = FakeUpstream::start().await;
    let env = [
        ("SENDGATE_LOG__LEVEL", "info"),
        ("RUST_LOG", "info"),
        // Empty is unset (no-color.org), whatever the test runner's is.
        ("NO_COLOR", ""),
    ];
    let url = upstream.url();
    let served = serve(&["--upstream", &url], &env, None, true).await;
    let answer = send(
        served.addr,
        "123",
        "t",
        r#"{"messaging_product":"whatsapp","to":"16315551234","type":"text","text":{"body":"hi"}}"#,
    )
    .await;
    assert_eq!(answer.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let logs = served.logs();
    assert!(logs.contains("send decision"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "colour codes in a file:\n{logs:?}"
    );
}
