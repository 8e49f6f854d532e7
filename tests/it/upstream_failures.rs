//! A broken upstream gives the client a Graph-shaped 502 or 504 (or, once a
//! response body has begun, a response cut short), never a hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Proxy, raw_upstream};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SEND: &str =
    r#"{"messaging_product":"whatsapp","to":"US.1","type":"text","text":{"body":"x"}}"#;

/// A 200 answer to a send, like the Cloud API's, as raw HTTP/1.1.
fn ok_answer() -> String {
    let body = r#"{"messages":[{"id":"wamid.X"}]}"#;
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// An address where nothing listens: bound, then released.
async fn refused_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn refused_upstream_gives_502() {
    let proxy = Proxy::start(&refused_address().await, "").await;
    let answer = proxy.post("/v21.0/123/messages", SEND, &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.graph_error_code(), 2);
    assert_eq!(
        answer.decision(),
        "rewritten: to->recipient",
        "the decision is still reported"
    );

    let get = Request::get(proxy.url("/v21.0/123"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = proxy.request(get).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.graph_error_code(), 2);
}

#[tokio::test]
async fn silent_upstream_gives_504_after_the_request_timeout() {
    // Reads the request, holds the connection open, never answers.
    let upstream = raw_upstream(|stream| async move {
        let _held = stream;
        std::future::pending::<()>().await;
    })
    .await;
    let proxy = Proxy::start(&upstream, "request_timeout_ms = 200").await;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        proxy.post("/v21.0/123/messages", SEND, &[]),
    )
    .await
    .expect("sendgate answers instead of hanging");
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.graph_error_code(), 2);
}

#[tokio::test]
async fn each_request_on_a_pooled_connection_gets_its_own_timeout() {
    // One connection: the first request is answered at once, the second
    // after 150 ms, the third never.
    let connections = Arc::new(AtomicUsize::new(0));
    let opened = connections.clone();
    let upstream = raw_upstream(move |mut stream| {
        opened.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut buf = [0u8; 4096];
            stream.write_all(ok_answer().as_bytes()).await.unwrap();
            let _ = stream.read(&mut buf).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
            stream.write_all(ok_answer().as_bytes()).await.unwrap();
            let _ = stream.read(&mut buf).await;
            std::future::pending::<()>().await;
        }
    })
    .await;
    let proxy = Proxy::start(&upstream, "request_timeout_ms = 300").await;
    let send = || {
        tokio::time::timeout(
            Duration::from_secs(10),
            proxy.post("/v21.0/123/messages", SEND, &[]),
        )
    };
    assert_eq!(send().await.unwrap().status, StatusCode::OK);
    // Idle past the first request's deadline: the second still has its
    // whole 300 ms, of which it needs 150.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(send().await.unwrap().status, StatusCode::OK);
    let started = std::time::Instant::now();
    let silent = send().await.expect("sendgate answers instead of hanging");
    assert_eq!(silent.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before its deadline"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "all on one connection"
    );
}

#[tokio::test]
async fn upstream_silent_mid_body_cuts_the_response_after_the_request_timeout() {
    // The head and 5 of 100 bytes, then the connection held open in silence.
    let upstream = raw_upstream(|mut stream| async move {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhello";
        let _ = stream.write_all(head).await;
        std::future::pending::<()>().await;
    })
    .await;
    let proxy = Proxy::start(&upstream, "request_timeout_ms = 200").await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET /v21.0/123/media HTTP/1.1\r\nhost: sendgate\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut received))
        .await
        .expect("sendgate closes the connection instead of hanging")
        .unwrap();
    let received = String::from_utf8_lossy(&received);
    let (head, body) = received.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("content-length: 100"), "{head}");
    assert_eq!(
        body, "hello",
        "cut short of its length, so never taken for whole"
    );
}

#[tokio::test]
async fn upstream_that_resets_mid_response_gives_502() {
    let upstream = raw_upstream(|mut stream| async move {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
    })
    .await;
    let proxy = Proxy::start(&upstream, "").await;
    let answer = proxy.post("/v21.0/123/messages", SEND, &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.graph_error_code(), 2);
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    // An upstream that answers only after sendgate has been told to stop.
    let (arrived, arrived_rx) = tokio::sync::oneshot::channel::<()>();
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    let mut first = Some((arrived, release_rx));
    let upstream = raw_upstream(move |mut stream| {
        let first = first.take();
        async move {
            if let Some((arrived, release)) = first {
                arrived.send(()).unwrap();
                release.await.unwrap();
            }
            stream.write_all(ok_answer().as_bytes()).await.unwrap();
        }
    })
    .await;
    let proxy = std::sync::Arc::new(Proxy::start(&upstream, "").await);
    let in_flight = tokio::spawn({
        let proxy = proxy.clone();
        async move {
            proxy
                .post("/v21.0/123/messages", r#"{"to":"16315551234"}"#, &[])
                .await
        }
    });
    arrived_rx.await.unwrap();
    let shutdown = tokio::spawn(async move { proxy.shutdown().await });
    release.send(()).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200, "the in-flight send completes");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .unwrap()
        .unwrap();
}

/// An upstream that answers one request per connection, as if keeping it
/// alive, then closes it: what a server ending idle keep-alive connections
/// looks like to the pool.
async fn one_answer_per_connection() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let (accepted, accepted_rx) = tokio::sync::mpsc::unbounded_channel();
    let upstream = raw_upstream(move |mut stream| {
        let _ = accepted.send(());
        async move {
            let _ = stream.write_all(ok_answer().as_bytes()).await;
        }
    })
    .await;
    (upstream, accepted_rx)
}

#[tokio::test]
async fn connections_the_upstream_closed_are_not_reused() {
    let (upstream, mut accepted) = one_answer_per_connection().await;
    let proxy = Proxy::start(&upstream, "").await;
    for round in 0..5 {
        let answer = proxy
            .post("/v21.0/123/messages", r#"{"to":"16315551234"}"#, &[])
            .await;
        assert_eq!(answer.status, 200, "request {round}");
        // Let the close reach the pooled connection before the next send.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut connections = 0;
    while accepted.try_recv().is_ok() {
        connections += 1;
    }
    assert_eq!(connections, 5, "each request needed a new connection");
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    // Answers one request, then waits for the proxy to close the connection.
    let (closed, closed_rx) = tokio::sync::oneshot::channel::<usize>();
    let mut closed = Some(closed);
    let upstream = raw_upstream(move |mut stream| {
        let closed = closed.take();
        async move {
            stream.write_all(ok_answer().as_bytes()).await.unwrap();
            let after = stream.read(&mut [0u8; 4096]).await.unwrap_or(0);
            if let Some(closed) = closed {
                let _ = closed.send(after);
            }
        }
    })
    .await;
    let proxy = Proxy::start(&upstream, "pool_idle_timeout_ms = 200").await;
    let answer = proxy
        .post("/v21.0/123/messages", r#"{"to":"16315551234"}"#, &[])
        .await;
    assert_eq!(answer.status, 200);
    let read = tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the idle connection is closed within the idle timeout plus a reap period")
        .unwrap();
    assert_eq!(read, 0, "closed without another request on it");
}
