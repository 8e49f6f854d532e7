//! The admin API: token, health, identity lookup, import, erasure, dry run.

use std::net::SocketAddr;

use crate::support::{
    ADMIN_TOKEN, Proxy, SandboxUpstream, admin_call as call, in_memory_store, sandbox_number_config,
};
use http::{Method, StatusCode};
use sendgate::config::Secrets;
use sendgate::sandbox::PHONE_NUMBER_ID;
use serde_json::Value;

const BSUID: &str = "US.13491208655302741918";

async fn setup() -> (SandboxUpstream, Proxy, SocketAddr) {
    let upstream = SandboxUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), &sandbox_number_config()).await;
    let admin = proxy.start_admin().await;
    (upstream, proxy, admin)
}

#[tokio::test]
async fn every_route_but_the_probes_needs_the_token() {
    let (_upstream, _proxy, admin) = setup().await;
    for token in [None, Some("wrong"), Some("test-admin-toke")] {
        // An orchestrator has no token: the probes answer it, with a
        // status word and nothing else.
        let (status, body) = call(admin, Method::GET, "/healthz", token, "").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, serde_json::json!({"status": "ok"}))
        );
        let (status, body) = call(admin, Method::GET, "/readyz", token, "").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, serde_json::json!({"status": "ready"}))
        );
        for (method, path) in [
            (Method::GET, "/metrics"),
            (Method::POST, "/admin/reload"),
            (Method::GET, "/admin/limits"),
            (Method::GET, "/admin/identities/US.1"),
            (Method::DELETE, "/admin/identities/US.1"),
            (Method::POST, "/admin/identities"),
            (Method::POST, "/admin/dry-run?number=1"),
        ] {
            let (status, _) = call(admin, method.clone(), path, token, "").await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
        }
    }
    // With the token, readiness says what it checked.
    let (status, body) = call(admin, Method::GET, "/readyz", Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["identities"], 0);
}

/// `[admin] public_metrics` opens `/metrics` (only it) to scrapers
/// without the token.
#[tokio::test]
async fn public_metrics_opens_the_metrics_route_alone() {
    let upstream = SandboxUpstream::start().await;
    let mut config = sendgate::Config::from_sources("", in_memory_store()).unwrap();
    config.upstream = upstream.url();
    config.admin.public_metrics = true;
    let proxy = Proxy::start_with(config).await;
    let admin = proxy.start_admin().await;
    let answer = crate::support::call(admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&answer.body).contains("# EOF"));
    let (status, _) = call(admin, Method::GET, "/admin/limits", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_configured_token_the_admin_api_is_closed() {
    let upstream = SandboxUpstream::start().await;
    let mut config = sendgate::Config::from_sources("", in_memory_store()).unwrap();
    config.upstream = upstream.url();
    let secrets = Secrets {
        admin_token: None,
        ..crate::support::test_secrets()
    };
    let proxy = Proxy::start_with_secrets(config, secrets).await;
    let admin = proxy.start_admin().await;
    let (status, body) = call(admin, Method::GET, "/admin/limits", Some(""), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("SENDGATE_ADMIN_TOKEN")
    );
}

#[tokio::test]
async fn import_lookup_and_erase() {
    let (_upstream, proxy, admin) = setup().await;
    let lines = format!(
        "{{\"bsuid\":\"{BSUID}\",\"phone\":\"+1 631 555 1234\",\"username\":\"@pablo.m\",\"number\":\"{PHONE_NUMBER_ID}\"}}\n\
         {{\"bsuid\":\"US.2\",\"phone\":\"16505550000\",\"portfolio\":\"other\"}}\n\
         {{\"bsuid\":\"nope\",\"phone\":\"16505550001\"}}\n"
    );
    let (status, summary) = call(
        admin,
        Method::POST,
        "/admin/identities",
        Some(ADMIN_TOKEN),
        &lines,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["imported"], 2);
    assert_eq!(summary["rejected"][0]["line"], 3);

    // Lookup by BSUID or by any spelling of the phone, identifiers in full.
    let (status, found) = call(
        admin,
        Method::GET,
        &format!("/admin/identities/{BSUID}"),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["records"][0]["phone"], "16315551234");
    assert_eq!(found["records"][0]["username"], "pablo.m");
    assert_eq!(found["records"][0]["source"], "admin");
    assert_eq!(
        found["records"][0]["attested_at"],
        Value::Null,
        "an operator's word, not Meta's"
    );
    assert_eq!(
        found["records"][0]["scope"],
        format!("number:{PHONE_NUMBER_ID}"),
        "a number without a portfolio is a scope of its own"
    );
    let by_phone = format!("/admin/identities/%2B1%20(631)%20555-1234?number={PHONE_NUMBER_ID}");
    let (status, found) = call(admin, Method::GET, &by_phone, Some(ADMIN_TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["records"][0]["bsuid"], BSUID);
    let other_portfolio = "/admin/identities/US.2?number=999";
    assert_eq!(
        call(admin, Method::GET, other_portfolio, Some(ADMIN_TOKEN), "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // The imported phone resolves sends...
    let send = format!(r#"{{"recipient":"{BSUID}","type":"text"}}"#);
    assert_eq!(proxy.send(&send).await.decision(), "resolved: bsuid->phone");
    // ...until the person is erased, from store and cache.
    let (status, erased) = call(
        admin,
        Method::DELETE,
        "/admin/identities/16315551234",
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(erased["erased"], 1);
    assert_eq!(proxy.send(&send).await.decision(), "forwarded");
    let (status, _) = call(
        admin,
        Method::GET,
        &format!("/admin/identities/{BSUID}"),
        Some(ADMIN_TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, ready) = call(admin, Method::GET, "/readyz", Some(ADMIN_TOKEN), "").await;
    assert_eq!(ready["identities"], 1, "only US.2 is left");
}

#[tokio::test]
async fn dry_run_decides_without_sending() {
    let (upstream, _proxy, admin) = setup().await;
    let path = format!("/admin/dry-run?number={PHONE_NUMBER_ID}");
    let bsuid_in_to = format!(r#"{{"messaging_product":"whatsapp","to":"{BSUID}","type":"text"}}"#);
    let (status, verdict) = call(admin, Method::POST, &path, Some(ADMIN_TOKEN), &bsuid_in_to).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verdict["decision"], "rewritten: to->recipient");
    assert_eq!(verdict["status"], 200);
    assert_eq!(
        verdict["forwarded_body"],
        format!(r#"{{"messaging_product":"whatsapp","recipient":"{BSUID}","type":"text"}}"#)
    );

    let (_, verdict) = call(
        admin,
        Method::POST,
        &path,
        Some(ADMIN_TOKEN),
        r#"{"to":"@pablo.m"}"#,
    )
    .await;
    assert_eq!(verdict["decision"], "blocked: username_target");
    assert_eq!(verdict["status"], 400);
    assert_eq!(verdict["error"]["error"]["code"], 100);
    assert_eq!(verdict["forwarded_body"], Value::Null);

    let campaign = format!("{path}&endpoint=marketing_messages");
    let (_, verdict) = call(
        admin,
        Method::POST,
        &campaign,
        Some(ADMIN_TOKEN),
        &format!(r#"{{"recipient":"{BSUID}"}}"#),
    )
    .await;
    assert_eq!(verdict["decision"], "blocked: campaign_needs_phone");

    let (status, _) = call(
        admin,
        Method::POST,
        "/admin/dry-run",
        Some(ADMIN_TOKEN),
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a number is required");
    assert!(
        upstream.sandbox.received().is_empty(),
        "nothing was forwarded"
    );
}

/// The metrics say what they are (OpenMetrics text, `# EOF` and all), and
/// HEAD answers like GET without the body.
#[tokio::test]
async fn metrics_are_served_as_openmetrics_to_get_and_head() {
    let (_upstream, _proxy, admin) = setup().await;
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("authorization", authorization.as_str())];
    let get = crate::support::call(admin, "GET", "/metrics", &headers, b"").await;
    assert_eq!(get.status, StatusCode::OK);
    let openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    assert_eq!(get.headers["content-type"], openmetrics);
    assert!(get.body.ends_with(b"# EOF\n"), "{:?}", get.body);
    let head = crate::support::call(admin, "HEAD", "/metrics", &headers, b"").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-type"], openmetrics);
    // On the wire, since an HTTP client drops whatever follows a HEAD's head.
    let raw = crate::support::raw_exchange(
        admin,
        format!(
            "HEAD /metrics HTTP/1.1\r\nhost: sendgate.test\r\n\
             authorization: {authorization}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let (head_text, after) = raw.split_once("\r\n\r\n").expect("a whole head");
    assert!(head_text.starts_with("HTTP/1.1 200"), "{raw}");
    assert_eq!(after, "", "HEAD sent a body");
}

/// The names `src/metrics.rs` registers for every server (the first string
/// after each `.register(`; the fleet's own, registered in `add_fleet`, are
/// left out: a single machine has no Redis to report on).
fn registered_families() -> Vec<String> {
    let source = include_str!("../../src/metrics.rs");
    let names_in = |text: &str| -> Vec<String> {
        text.split(".register(")
            .skip(1)
            .filter_map(|call| Some(call.split('"').nth(1)?.to_owned()))
            .collect()
    };
    let start = source
        .find("fn add_fleet")
        .expect("src/metrics.rs adds the fleet's metrics in add_fleet");
    let end = start + source[start..].find("\n    }\n").unwrap();
    let fleet = names_in(&source[start..end]);
    assert!(!fleet.is_empty(), "no fleet metric found in add_fleet");
    let names: Vec<String> = names_in(source)
        .into_iter()
        .filter(|name| !fleet.contains(name))
        .collect();
    assert!(names.len() >= 12, "found only {names:?}");
    names
}

/// Every family is on the first scrape, before anything has happened: a
/// dashboard or an alert on `sendgate_limit_rejections` finds it (at 0 or
/// described) rather than nothing.
#[tokio::test]
async fn a_fresh_server_lists_every_metric_family() {
    let (_upstream, _proxy, admin) = setup().await;
    let authorization = format!("Bearer {ADMIN_TOKEN}");
    let headers = [("authorization", authorization.as_str())];
    let get = crate::support::call(admin, "GET", "/metrics", &headers, b"").await;
    assert_eq!(get.status, StatusCode::OK);
    let text = String::from_utf8(get.body.to_vec()).unwrap();
    for name in registered_families() {
        let described = format!("# TYPE sendgate_{name} ");
        assert!(text.contains(&described), "no {described:?} in\n{text}");
    }
    // Outcomes known ahead are there at 0.
    for line in [
        "sendgate_webhook_relays_total{outcome=\"unauthorized\"} 0",
        "sendgate_config_reloads_total{outcome=\"failure\"} 0",
        "sendgate_limit_rejections_total{limit=\"pair\"} 0",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}
