//! Everything that is not a send passes through untouched: framing, headers,
//! bodies and connection reuse (after linkerd's transparency suite).

use crate::support::{FakeUpstream, Proxy, raw_exchange};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sendgate::body::full_body;

async fn proxy_to(upstream: &FakeUpstream) -> Proxy {
    Proxy::start(&upstream.url(), "").await
}

#[tokio::test]
async fn content_length_body_keeps_its_length_and_bytes() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let body = b"{\"messaging_product\":\"whatsapp\",\"file\":\"...\"}";
    let request = format!(
        "POST /v21.0/123/media HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer secret-token\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let response = raw_exchange(proxy.addr, &[request.as_bytes(), body].concat()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = upstream.only();
    assert_eq!(seen.body, &body[..]);
    assert_eq!(seen.headers["content-length"], body.len().to_string());
    assert!(
        !seen.headers.contains_key("transfer-encoding"),
        "no Transfer-Encoding invented"
    );
    assert_eq!(
        seen.headers["authorization"], "Bearer secret-token",
        "Authorization forwarded"
    );
    assert_eq!(
        seen.headers["host"],
        upstream.addr.to_string(),
        "Host is the upstream's"
    );
}

#[tokio::test]
async fn chunked_body_stays_chunked() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let request = "POST /v21.0/123/media HTTP/1.1\r\nHost: proxy\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = upstream.only();
    assert_eq!(seen.body, "hello world");
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(!seen.headers.contains_key("content-length"));
}

#[tokio::test]
async fn zero_content_length_is_kept() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let request = "POST /v21.0/123/register HTTP/1.1\r\nHost: proxy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = upstream.only();
    assert_eq!(seen.headers["content-length"], "0");
    assert!(seen.body.is_empty());
}

#[tokio::test]
async fn head_and_204_are_bodyless() {
    let upstream = FakeUpstream::with(|seen| {
        if seen.method == http::Method::HEAD {
            http::Response::builder()
                .header("content-length", "1234")
                .body(full_body(Bytes::new()))
                .unwrap()
        } else {
            http::Response::builder()
                .status(204)
                .body(full_body(Bytes::new()))
                .unwrap()
        }
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let head = "HEAD /v21.0/media/9 HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(proxy.addr, head.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-length: 1234"),
        "{response}"
    );
    assert!(
        response.ends_with("\r\n\r\n"),
        "no body after a HEAD response: {response:?}"
    );

    let delete = "DELETE /v21.0/media/9 HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(proxy.addr, delete.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 204"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(
        !lower.contains("content-length") && !lower.contains("transfer-encoding"),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\n"));
}

#[tokio::test]
async fn multi_megabyte_body_streams_through_intact() {
    let upstream = FakeUpstream::with(|seen| {
        // Answer with a digest of what arrived, so the client can check it too.
        let sum: u64 = seen.body.iter().map(|&b| u64::from(b)).sum();
        let text = format!("{{\"len\":{},\"sum\":{sum}}}", seen.body.len());
        http::Response::new(full_body(text))
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let size = 8 << 20;
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = body
        .chunks(64 << 10)
        .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(proxy.url("/v21.0/123/media"))
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    let expected_sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
    assert_eq!(answer, format!("{{\"len\":{size},\"sum\":{expected_sum}}}"));
    assert_eq!(upstream.only().body, body);
}

#[tokio::test]
async fn query_strings_reach_the_upstream_verbatim() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let path =
        "/v21.0/123/message_templates?fields=name,category&limit=10&after=QVFI%3D%3D&name=a%20b";
    let request = format!("GET {path} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n");
    raw_exchange(proxy.addr, request.as_bytes()).await;
    assert_eq!(upstream.only().uri, path);
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_proxy() {
    let upstream = FakeUpstream::with(|_| {
        http::Response::builder()
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("x-end-to-end", "kept")
            .body(full_body("{}"))
            .unwrap()
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let request = "GET /v21.0/123 HTTP/1.1\r\nHost: proxy\r\nConnection: x-client-hop, close\r\nX-Client-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Sendgate-Client: crm\r\nAccept: application/json\r\n\r\n";
    let response = raw_exchange(proxy.addr, request.as_bytes())
        .await
        .to_ascii_lowercase();
    let seen = upstream.only();
    for name in [
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "x-sendgate-client",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen.headers["accept"], "application/json");
    assert!(!response.contains("x-upstream-hop"), "{response}");
    assert!(!response.contains("keep-alive: timeout"), "{response}");
    assert!(response.contains("x-end-to-end: kept"), "{response}");
}

#[tokio::test]
async fn one_upstream_connection_serves_sequential_requests() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    for i in 0..5 {
        let request = Request::get(proxy.url(&format!("/v21.0/123?i={i}")))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(proxy.request(request).await.status, 200);
        // A send reuses the same pool.
        proxy
            .post(
                "/v21.0/123/messages",
                r#"{"to":"16315551234","type":"text"}"#,
                &[],
            )
            .await;
    }
    assert_eq!(upstream.seen().len(), 10);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn upstream_chunked_response_stays_chunked() {
    let upstream = FakeUpstream::with(|_| {
        let frames: Vec<Result<Frame<Bytes>, sendgate::body::BoxError>> = vec![
            Ok(Frame::data(Bytes::from("ab"))),
            Ok(Frame::data(Bytes::from("cd"))),
        ];
        http::Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let request = "GET /v21.0/123 HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{response}");
    assert!(!lower.contains("content-length"), "{response}");
    assert!(
        response.ends_with("2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n"),
        "{response:?}"
    );
}

#[tokio::test]
async fn http2_clients_are_served() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(proxy.url("/v21.0/123/messages"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(r#"{"to":"US.1","type":"text"}"#)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(
        response.headers()["x-sendgate-decision"],
        "rewritten: to->recipient"
    );
    assert_eq!(
        upstream.only().body,
        r#"{"recipient":"US.1","type":"text"}"#
    );
    assert_eq!(
        upstream.only().version,
        http::Version::HTTP_11,
        "plain-HTTP upstreams get HTTP/1.1"
    );
}

#[tokio::test]
async fn absolute_form_requests_still_go_to_the_configured_upstream() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let request = "GET http://attacker.invalid/v21.0/123?x=1 HTTP/1.1\r\nHost: attacker.invalid\r\nConnection: close\r\n\r\n";
    let response = raw_exchange(proxy.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = upstream.only();
    assert_eq!(seen.uri, "/v21.0/123?x=1");
    assert_eq!(seen.headers["host"], upstream.addr.to_string());
}
