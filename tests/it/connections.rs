//! Client connections held to nginx's rules: a time limit on the request
//! head and on idling between requests, a cap that makes room by closing
//! the longest-idle connection, and a process at its file-descriptor limit
//! that still answers a new client.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{FakeUpstream, Proxy, raw_upstream, serve_with_fd_limit};

/// Limits short enough for a test; the sweeper then looks every 75 ms.
const SHORT: &str = "[connections]\nheader_timeout_ms = 300\nkeepalive_timeout_ms = 500\n";
const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(500);

const GET: &[u8] = b"GET /v21.0/me HTTP/1.1\r\nhost: sendgate.test\r\n\r\n";

/// Waits for the peer to close, reading and dropping what comes; how long
/// after `since` it closed, or `None` if still open after `limit`. Taking
/// `since` before whatever starts sendgate's clock (the connect, the
/// request) keeps the figure from undercounting sendgate's wait, so a
/// "closed early" check cannot fail by the test's own latency.
async fn closed_within(
    stream: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut sink = [0; 4096];
    tokio::time::timeout(limit, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await
    .ok()
    .map(|()| since.elapsed())
}

/// Writes `request` and reads one response with a `content-length`; its
/// status, or `None` if the connection ended first.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Option<u16> {
    stream.write_all(request).await.ok()?;
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map_or(0, |length| length.trim().parse().unwrap());
                if received.len() >= end + 4 + length {
                    return Some(head[9..12].parse().unwrap());
                }
            }
            match stream.read(&mut buf).await {
                Ok(n @ 1..) => received.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
    });
    read.await.expect("an answer or a close within 5 s")
}

async fn proxy_with(config: &str) -> (FakeUpstream, Proxy) {
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), config).await;
    (upstream, proxy)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let (_upstream, proxy) = proxy_with(SHORT).await;
    let since = Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let took = closed_within(&mut silent, since, Duration::from_secs(5))
        .await
        .expect("the silent connection is closed");
    assert!(took >= HEADER_TIMEOUT, "closed early, after {took:?}");
    assert!(took < HEADER_TIMEOUT * 3, "closed late, after {took:?}");
}

#[tokio::test]
async fn a_head_sent_too_slowly_is_closed_after_the_header_timeout() {
    let (upstream, proxy) = proxy_with(SHORT).await;
    // On a new connection the limit runs from the accept; on one kept
    // alive, from the first byte of the request.
    let mut fresh = TcpStream::connect(proxy.addr).await.unwrap();
    let mut kept = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(exchange(&mut kept, GET).await, Some(200));
    for stream in [&mut fresh, &mut kept] {
        stream
            .write_all(b"GET /v21.0/me HTTP/1.1\r\nhost: ")
            .await
            .unwrap();
    }
    let since = Instant::now();
    let (fresh_took, kept_took) = tokio::join!(
        closed_within(&mut fresh, since, Duration::from_secs(5)),
        closed_within(&mut kept, since, Duration::from_secs(5)),
    );
    for took in [fresh_took, kept_took] {
        let took = took.expect("the slow head is cut off");
        assert!(took < HEADER_TIMEOUT * 3, "closed late, after {took:?}");
    }
    assert_eq!(upstream.seen().len(), 1, "only the whole request went up");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_keepalive_timeout() {
    let (_upstream, proxy) = proxy_with(SHORT).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let since = Instant::now();
    assert_eq!(exchange(&mut client, GET).await, Some(200));
    let took = closed_within(&mut client, since, Duration::from_secs(5))
        .await
        .expect("the idle connection is closed");
    assert!(took >= KEEPALIVE_TIMEOUT, "closed early, after {took:?}");
    assert!(took < KEEPALIVE_TIMEOUT * 3, "closed late, after {took:?}");
}

#[tokio::test]
async fn a_connection_in_use_outlives_both_timeouts() {
    let (upstream, proxy) = proxy_with(SHORT).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let mut answered = 0;
    // A request every 200 ms for four keep-alive timeouts.
    while started.elapsed() < KEEPALIVE_TIMEOUT * 4 {
        assert_eq!(
            exchange(&mut client, GET).await,
            Some(200),
            "request {answered}"
        );
        answered += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(upstream.seen().len(), answered);
}

#[tokio::test]
async fn a_connection_idle_long_enough_to_park_serves_its_next_request() {
    // Default timeouts: an idle connection puts away its request state
    // within half a second and stays open.
    let (upstream, proxy) = proxy_with("").await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..3 {
        assert_eq!(exchange(&mut client, GET).await, Some(200));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(upstream.seen().len(), 3);
}

#[tokio::test]
async fn connections_served_by_hyper_have_the_keepalive_timeout_too() {
    let (_upstream, proxy) = proxy_with(SHORT).await;
    // HTTP/1.0 with keep-alive, and HTTP/2 with prior knowledge that never
    // opens a stream: both go to hyper.
    let mut http10 = TcpStream::connect(proxy.addr).await.unwrap();
    let http10_since = Instant::now();
    assert_eq!(
        exchange(
            &mut http10,
            b"GET /v21.0/me HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"
        )
        .await,
        Some(200)
    );
    let http2_since = Instant::now();
    let mut http2 = TcpStream::connect(proxy.addr).await.unwrap();
    // The preface and an empty SETTINGS frame.
    http2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (http10_took, http2_took) = tokio::join!(
        closed_within(&mut http10, http10_since, Duration::from_secs(5)),
        closed_within(&mut http2, http2_since, Duration::from_secs(5)),
    );
    for took in [http10_took, http2_took] {
        let took = took.expect("the idle connection is closed");
        assert!(took >= KEEPALIVE_TIMEOUT, "closed early, after {took:?}");
    }
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    let (upstream, proxy) = proxy_with("[connections]\nmax = 3\n").await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(exchange(&mut client, GET).await, Some(200));
        idle.push(client);
        // Idle for different times, in whole ticks of the registry's clock.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut newcomer = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(exchange(&mut newcomer, GET).await, Some(200));
    assert!(
        closed_within(&mut idle[0], Instant::now(), Duration::from_secs(2))
            .await
            .is_some(),
        "the oldest idle connection is closed"
    );
    for client in &mut idle[1..] {
        assert_eq!(exchange(client, GET).await, Some(200), "the others stay");
    }
    assert_eq!(upstream.seen().len(), 6);
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_new_one_is_refused_in_graph_shape() {
    // An upstream that takes its time: the two connections stay busy.
    let url = raw_upstream(|mut stream| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await;
    })
    .await;
    let proxy = Proxy::start(&url, "[connections]\nmax = 2\n").await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client.write_all(GET).await.unwrap();
        busy.push(client);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = TcpStream::connect(proxy.addr).await.unwrap();
    refused.write_all(GET).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut answer))
        .await
        .expect("the refusal comes at once, and the connection closes")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], 2, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

/// The acceptance case of the security review: 300 idle keep-alive
/// connections under a limit of 256 descriptors used to leave accept
/// failing and a new client waiting for ever.
#[tokio::test]
async fn at_the_descriptor_limit_a_new_client_is_answered() {
    let served = serve_with_fd_limit(
        256,
        &["--sandbox"],
        &[
            ("RUST_LOG", "info"),
            ("NO_COLOR", "1"),
            // Limits are not the subject: 300 sends to one person would
            // meet the pair limit.
            ("SENDGATE_LIMITS__NUMBER__MODE", "off"),
            ("SENDGATE_LIMITS__PAIR__MODE", "off"),
            ("SENDGATE_LIMITS__CLIENT__MODE", "off"),
        ],
    )
    .await;
    let body =
        r#"{"messaging_product":"whatsapp","to":"16315551234","type":"text","text":{"body":"hi"}}"#;
    let send = format!(
        "POST /v21.0/{}/messages HTTP/1.1\r\nhost: sendgate.test\r\n\
         authorization: Bearer test-token\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        sendgate::sandbox::PHONE_NUMBER_ID,
        body.len()
    );
    let mut idle = Vec::new();
    for index in 0..300 {
        let mut client = TcpStream::connect(served.addr).await.unwrap();
        let status = exchange(&mut client, send.as_bytes()).await;
        assert_eq!(status, Some(200), "connection {index}: {}", served.logs());
        idle.push(client);
    }
    let started = Instant::now();
    let mut newcomer = TcpStream::connect(served.addr).await.unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(2),
        exchange(&mut newcomer, send.as_bytes()),
    )
    .await
    .expect("answered within 2 s");
    assert_eq!(status, Some(200));
    assert!(started.elapsed() < Duration::from_secs(2));
    // The cap derived from 256 descriptors is 96: the oldest idle
    // connections made room, the newest are still open.
    let logs = served.logs();
    assert!(logs.contains("max_connections=96"), "{logs}");
    assert!(!logs.contains("accept failed"), "{logs}");
    let last = idle.last_mut().unwrap();
    assert_eq!(exchange(last, send.as_bytes()).await, Some(200));
}
