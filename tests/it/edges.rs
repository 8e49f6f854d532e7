//! Edges of the HTTP layer that a broken upstream or a broken client can
//! reach: each answered as the side at fault would expect, never with an
//! empty reply, a body whose length lies, or a connection left in doubt.

use std::time::Duration;

use crate::support::{FakeUpstream, Proxy, raw_exchange, raw_upstream};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::AsyncWriteExt;

/// An upstream whose every answer is `raw`, as written, and then closes.
async fn answering(raw: &'static str) -> String {
    raw_upstream(move |mut stream| async move {
        let _ = stream.write_all(raw.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// RFC 9112 §6.3: with Transfer-Encoding, a Content-Length beside it is
/// not the body's length and must not be relayed.
const LENGTH_AND_CHUNKED: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";

#[tokio::test]
async fn a_length_beside_chunked_framing_is_dropped_for_http11_clients() {
    let proxy = Proxy::start(&answering(LENGTH_AND_CHUNKED).await, "").await;
    let answer = raw_exchange(
        proxy.addr,
        b"GET /v21.0/1/media HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("content-length: 5"),
        "{head}"
    );
    let decoded = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.replace("6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n", "hello world")
    } else {
        body.to_owned()
    };
    assert_eq!(decoded, "hello world", "{answer}");
}

#[tokio::test]
async fn a_length_beside_chunked_framing_is_dropped_for_http10_clients() {
    // An HTTP/1.0 client is served by hyper, which would frame the answer
    // by the relayed length and cut the body silently.
    let proxy = Proxy::start(&answering(LENGTH_AND_CHUNKED).await, "").await;
    let answer = raw_exchange(
        proxy.addr,
        b"GET /v21.0/1/media HTTP/1.0\r\nhost: x\r\n\r\n",
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("content-length: 5"),
        "{head}"
    );
    assert_eq!(body, "hello world", "{answer}");
}

#[tokio::test]
async fn an_upstream_body_that_fails_at_once_is_a_graph_502() {
    for broken in [
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n",
    ] {
        let proxy = Proxy::start(&answering(broken).await, "").await;
        let get = Request::get(proxy.url("/v21.0/1/media"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = proxy.request(get).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{broken:?}");
        assert_eq!(answer.graph_error_code(), 2);
        // A send Meta's answer never came whole for: a 502, not a network error.
        let answer = proxy
            .post(
                "/v21.0/1/messages",
                r#"{"messaging_product":"whatsapp","to":"16315551234","type":"text"}"#,
                &[],
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{broken:?}");
    }
}

#[tokio::test]
async fn a_client_body_that_breaks_off_is_the_clients_400() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "").await;
    // A chunked upload (served by hyper) with a malformed chunk.
    let answer = raw_exchange(
        proxy.addr,
        b"POST /v21.0/1/media HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("unreadable_body"), "{answer}");
}

#[tokio::test]
async fn connect_is_refused_here_and_never_forwarded() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "").await;
    let answer = raw_exchange(
        proxy.addr,
        b"CONNECT graph.facebook.com:443 HTTP/1.1\r\nhost: graph.facebook.com:443\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("\"code\":100"), "{answer}");
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[tokio::test]
async fn a_413_says_the_connection_closes_so_keep_alive_clients_carry_on() {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "max_send_body_bytes = 1024\n").await;
    let big = format!(
        r#"{{"to":"16315551234","type":"text","text":{{"body":"{}"}}}}"#,
        "x".repeat(100_000)
    );
    let answer = proxy.post("/v21.0/1/messages", &big, &[]).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.headers["connection"], "close");
    // The same pooled client goes on, on a new connection.
    for _ in 0..3 {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            proxy.post(
                "/v21.0/1/messages",
                r#"{"to":"16315551234","type":"text"}"#,
                &[],
            ),
        )
        .await
        .expect("answered");
        assert_eq!(answer.status, StatusCode::OK);
    }
}
