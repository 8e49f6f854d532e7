//! Rate limits end to end: refusals a sender's SDK understands, back-offs
//! from Meta's answers, report mode, live reload and the metrics they leave.
//! Quotas are chosen so that nothing depends on how fast the test runs
//! (time-dependent behaviour is covered with paused time in `limits.rs`).

use std::sync::Arc;

use crate::support::{ADMIN_TOKEN, FakeUpstream, Proxy, json, test_secrets};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sendgate::app::ConfigSource;
use sendgate::identity::{IdentityEvent, Observation, Source};
use sendgate::sandbox::PHONE_NUMBER_ID;
use sendgate::{App, Config};

const BSUID: &str = "US.13491208655302741918";
const PHONE: &str = "16315551234";

fn text_to(field: &str, value: &str) -> String {
    format!(
        r#"{{"messaging_product":"whatsapp","{field}":"{value}","type":"text","text":{{"body":"hi"}}}}"#
    )
}

async fn admin_call(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
) -> (StatusCode, String) {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn over_the_number_rate_is_a_429_with_retry_after_and_code_130429() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "[limits.number]\nthroughput = 1\n").await;
    assert_eq!(proxy.send(&text_to("to", PHONE)).await.status, 200);
    let answer = proxy.send(&text_to("to", "16505550000")).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.graph_error_code(), 130429);
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(answer.decision(), "limited: number");
    assert_eq!(
        upstream.seen().len(),
        1,
        "the refused send never reached Meta"
    );
    // A blocked send does not spend quota it never uses.
    let blocked = proxy.send(&text_to("to", "@pablo.m")).await;
    assert_eq!(blocked.decision(), "blocked: username_target");
}

#[tokio::test]
async fn phone_and_bsuid_of_one_person_share_a_pair_bucket() {
    let upstream = FakeUpstream::start().await;
    let config = "[limits.pair]\nperiod_ms = 3600000\nburst = 2\n";
    let proxy = Proxy::start(&upstream.url(), config).await;
    let seen = Observation {
        bsuid: BSUID.into(),
        phone: Some(PHONE.into()),
        ..Observation::default()
    };
    let scope = proxy
        .app
        .config()
        .scope_of(PHONE_NUMBER_ID)
        .key()
        .into_owned();
    let events = [(scope, IdentityEvent::Seen(seen))];
    proxy.app.identities.apply(&events, Source::Import).unwrap();

    assert_eq!(proxy.send(&text_to("to", PHONE)).await.status, 200);
    assert_eq!(proxy.send(&text_to("recipient", BSUID)).await.status, 200);
    let third = proxy.send(&text_to("to", "+1 631 555 1234")).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.graph_error_code(), 131056);
    assert_eq!(third.decision(), "limited: pair");
    // Someone else is not affected.
    assert_eq!(proxy.send(&text_to("to", "16505550000")).await.status, 200);
}

#[tokio::test]
async fn a_token_gets_its_share_whatever_client_it_claims_to_be() {
    let upstream = FakeUpstream::start().await;
    let fingerprinter = sendgate::fingerprint::Fingerprinter::new(None);
    let big = fingerprinter.of("big-token");
    let config = format!(
        "[limits.client]\nmode = \"reject\"\nper_second = 1\nburst = 5\n\
         [clients.big]\nper_second = 1\nburst = 50\ntokens = [\"{big}\"]\n"
    );
    let proxy = Proxy::start(&upstream.url(), &config).await;
    let send = |token: &'static str, client: String, to: String| {
        let proxy = &proxy;
        async move {
            let authorization = format!("Bearer {token}");
            let headers = [
                ("authorization", authorization.as_str()),
                ("x-sendgate-client", client.as_str()),
            ];
            proxy.send_with(&text_to("to", &to), &headers).await
        }
    };
    // One token rotating over 20 client names, among them the name of a
    // client with a bigger share, gets its own share (5) and no more.
    let mut admitted = 0;
    for i in 0..20 {
        let client = if i % 2 == 0 {
            format!("crm-{i}")
        } else {
            "big".to_owned()
        };
        let answer = send("rotating-token", client, format!("165055500{i:02}")).await;
        match answer.status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(answer.graph_error_code(), 4);
                assert_eq!(answer.decision(), "limited: client");
            }
            other => panic!("{other}: {answer:?}"),
        }
    }
    assert_eq!(admitted, 5, "the default share, whatever the header said");
    // Another token has its own bucket, and the token tied to `big` its share.
    assert_eq!(
        send("other-token", "crm".into(), "16505559000".into())
            .await
            .status,
        200
    );
    for i in 0..10 {
        let answer = send("big-token", String::new(), format!("165055591{i:02}")).await;
        assert_eq!(answer.status, 200, "{i}");
    }
}

#[tokio::test]
async fn a_number_tied_to_tokens_refuses_every_other_sender() {
    let upstream = FakeUpstream::start().await;
    let owner = sendgate::fingerprint::Fingerprinter::new(None).of("owner-token");
    let config = format!("[numbers.\"{PHONE_NUMBER_ID}\"]\ntokens = [\"{owner}\"]\n");
    let proxy = Proxy::start(&upstream.url(), &config).await;
    let stranger = proxy
        .send_with(
            &text_to("to", PHONE),
            &[("authorization", "Bearer stranger")],
        )
        .await;
    assert_eq!(stranger.status, StatusCode::FORBIDDEN);
    assert_eq!(stranger.graph_error_code(), 10);
    assert_eq!(stranger.decision(), "blocked: number_not_allowed");
    assert!(upstream.seen().is_empty(), "nothing reached Meta");
    let own = proxy
        .send_with(
            &text_to("to", PHONE),
            &[("authorization", "Bearer owner-token")],
        )
        .await;
    assert_eq!(own.status, 200);
}

#[tokio::test]
async fn metas_130429_pauses_the_number_and_131056_the_pair() {
    // Meta answers throttling with HTTP 400: the code in the body is what counts.
    let upstream = FakeUpstream::with(|seen| {
        let body = String::from_utf8_lossy(&seen.body);
        if body.contains("16505550000") {
            json(StatusCode::BAD_REQUEST, r#"{"error":{"message":"(#131056) Pair rate limit hit","type":"OAuthException","code":131056}}"#)
        } else {
            json(StatusCode::BAD_REQUEST, r#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429}}"#)
        }
    })
    .await;
    let proxy = Proxy::start(&upstream.url(), "").await;
    let pair = proxy.send(&text_to("to", "16505550000")).await;
    assert_eq!(pair.status, 400, "Meta's answer passes through");
    assert_eq!(pair.graph_error_code(), 131056);
    let again = proxy.send(&text_to("to", "16505550000")).await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(again.headers["retry-after"], "4", "4^1 seconds");
    assert_eq!(upstream.seen().len(), 1);

    let number = proxy.send(&text_to("to", PHONE)).await;
    assert_eq!(number.graph_error_code(), 130429);
    let paused = proxy.send(&text_to("to", "16505550009")).await;
    assert_eq!(paused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(paused.decision(), "limited: number");
    assert_eq!(paused.headers["retry-after"], "60");
    assert_eq!(upstream.seen().len(), 2);
}

#[tokio::test]
async fn report_mode_counts_limits_without_refusing() {
    let upstream = FakeUpstream::start().await;
    let config = "[policy]\nmode = \"report\"\n[limits.number]\nthroughput = 1\n";
    let proxy = Proxy::start(&upstream.url(), config).await;
    assert_eq!(
        proxy.send(&text_to("to", PHONE)).await.decision(),
        "forwarded"
    );
    let second = proxy.send(&text_to("to", "16505550000")).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.decision(), "forwarded, would-limit: number");
    let username = proxy.send(&text_to("to", "@pablo.m")).await;
    assert_eq!(
        username.decision(),
        "would-block: username_target, would-limit: number"
    );
    assert_eq!(upstream.seen().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_new_limits_mid_traffic_and_refuses_a_broken_file() {
    let upstream = FakeUpstream::start().await;
    let dir = std::env::temp_dir().join(format!("sendgate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sendgate.toml");
    std::fs::write(&path, "[limits.number]\nthroughput = \"high\"\n").unwrap();

    let url = upstream.url();
    // Reloads re-apply what the command line set: here, the upstream and an
    // in-memory store.
    let overrides = move |config: &mut Config| {
        config.upstream = url.clone();
        config.store.path = String::new();
    };
    let mut config = Config::load(Some(&path)).unwrap();
    overrides(&mut config);
    let source = ConfigSource {
        path: Some(path.clone()),
        overrides: Box::new(overrides),
    };
    let app = Arc::new(
        App::new(config, test_secrets())
            .unwrap()
            .with_source(source),
    );
    let proxy = Arc::new(Proxy::start_app(app).await);
    let admin = proxy.start_admin().await;

    // Traffic flows, and keeps flowing while the limit is tightened under it.
    let reloaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (proxy, reloaded) = (proxy.clone(), reloaded.clone());
        async move {
            let mut statuses = Vec::new();
            let mut after_reload = 0;
            for i in 0..5000u64 {
                let to = format!("165055{i:05}");
                statuses.push(proxy.send(&text_to("to", &to)).await.status);
                if reloaded.load(std::sync::atomic::Ordering::SeqCst) {
                    after_reload += 1;
                    if after_reload == 10 {
                        break;
                    }
                }
            }
            statuses
        }
    });
    while upstream.seen().len() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    std::fs::write(&path, "[limits.number]\nthroughput = 1\n").unwrap();
    let (status, body) = admin_call(admin, Method::POST, "/admin/reload").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    reloaded.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = tokio::time::timeout(std::time::Duration::from_secs(30), traffic)
        .await
        .unwrap()
        .unwrap();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS),
        "no request failed during the reload: {statuses:?}"
    );
    assert!(
        statuses[..10].iter().all(|s| *s == StatusCode::OK),
        "before: the old limit"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "after: the new limit"
    );
    let after = proxy.send(&text_to("to", "16505559999")).await;
    assert_eq!(
        after.decision(),
        "limited: number",
        "the new limit is in force"
    );

    // A broken file is refused with its reason; the old config keeps working.
    std::fs::write(&path, "[limits.number]\nthroughput = \"warp\"\n").unwrap();
    let (status, body) = admin_call(admin, Method::POST, "/admin/reload").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("limits.number.throughput"), "{body}");
    // A change only a restart can apply is refused too.
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1\"\n[limits.number]\nthroughput = 1\n",
    )
    .unwrap();
    let (status, body) = admin_call(admin, Method::POST, "/admin/reload").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("listen changed; restart"), "{body}");
    let (_, limits) = admin_call(admin, Method::GET, "/admin/limits").await;
    let limits: serde_json::Value = serde_json::from_str(&limits).unwrap();
    assert_eq!(limits["limits"]["number"]["throughput"], 1);
    assert!(
        limits["live"]["numbers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["budget"].is_number())
    );

    let (_, metrics) = admin_call(admin, Method::GET, "/metrics").await;
    assert!(
        metrics.contains("sendgate_config_reloads_total{outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sendgate_config_reloads_total{outcome=\"failure\"} 2"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn metrics_show_what_just_happened() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "[limits.number]\nthroughput = 1\n").await;
    let admin = proxy.start_admin().await;
    proxy.send(&text_to("to", "@pablo.m")).await;
    proxy.send(&text_to("to", "US.1")).await;
    proxy.send(&text_to("to", PHONE)).await;
    let get = Request::get(proxy.url("/v21.0/123"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    proxy.request(get).await;

    let (status, metrics) = admin_call(admin, Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "sendgate_requests_total{route=\"send\",decision=\"blocked\",reason=\"username_target\"} 1",
        "sendgate_requests_total{route=\"send\",decision=\"rewritten\",reason=\"to->recipient\"} 1",
        "sendgate_requests_total{route=\"send\",decision=\"limited\",reason=\"number\"} 1",
        "sendgate_requests_total{route=\"passthrough\",decision=\"none\",reason=\"none\"} 1",
        "sendgate_upstream_responses_total{status=\"200\"} 2",
        "sendgate_limit_rejections_total{limit=\"number\"} 1",
        "sendgate_upstream_latency_seconds_count 2",
        "sendgate_limiter_keys{limit=\"number\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    // Without the token, no metrics.
    let client = Client::builder(TokioExecutor::new()).build_http();
    let bare = Request::get(format!("http://{admin}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        client.request(bare).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}
