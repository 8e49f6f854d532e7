//! sendgate's own HTTP/1.1 loop and its hand-over to hyper: plain requests
//! are taken by the loop, everything else (on the same connection, from
//! that request on) by hyper, and a client cannot tell where one ends.

use std::time::Duration;

use crate::support::{FakeUpstream, Proxy, json, raw_exchange};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy_to(upstream: &FakeUpstream) -> Proxy {
    Proxy::start(&upstream.url(), "").await
}

/// The status lines of every response in `raw`, in order (a body does not
/// end with a line break, so the next status line may follow it directly).
fn status_lines(raw: &str) -> Vec<&str> {
    raw.match_indices("HTTP/1.")
        .map(|(at, _)| raw[at..].split("\r\n").next().unwrap_or_default())
        .collect()
}

/// Sends three pipelined `requests` in one write, checks that all three are
/// answered 200, and returns what the upstream saw.
async fn three_answered(
    proxy: &Proxy,
    upstream: &FakeUpstream,
    requests: &str,
) -> Vec<crate::support::Seen> {
    let response = raw_exchange(proxy.addr, requests.as_bytes()).await;
    assert_eq!(
        status_lines(&response),
        ["HTTP/1.1 200 OK"; 3],
        "{response}"
    );
    upstream.seen()
}

/// Sends a GET, a POST with a body and a GET in one write, and checks that
/// the upstream got them in order, the body whole.
async fn pipelined_requests_arrive_in_order(proxy: &Proxy, upstream: &FakeUpstream) {
    let requests = "GET /v21.0/1?i=1 HTTP/1.1\r\nHost: p\r\n\r\n\
                    POST /v21.0/1/media?i=2 HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabc\
                    GET /v21.0/1?i=3 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n";
    let seen = three_answered(proxy, upstream, requests).await;
    let uris: Vec<&str> = seen.iter().map(|seen| seen.uri.as_str()).collect();
    assert_eq!(uris, ["/v21.0/1?i=1", "/v21.0/1/media?i=2", "/v21.0/1?i=3"]);
    assert_eq!(seen[1].body, "abc");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    pipelined_requests_arrive_in_order(&proxy, &upstream).await;
}

#[tokio::test]
async fn pinned_workers_serve_alike() {
    // The embedded default leaves workers to the scheduler, so every other
    // test runs that way; this one pins each worker to a CPU.
    let upstream = FakeUpstream::start().await;
    let proxy = Proxy::start(&upstream.url(), "worker_pin_cpus = true\n").await;
    assert!(proxy.app.config().worker_pin_cpus);
    pipelined_requests_arrive_in_order(&proxy, &upstream).await;
}

#[tokio::test]
async fn a_chunked_request_moves_the_connection_to_hyper_mid_stream() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    // A plain request, then a chunked one and a plain one after it, all in
    // one write: the hand-over must give hyper the bytes already read.
    let requests = "POST /v21.0/1/media?i=1 HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\nab\
                    POST /v21.0/1/media?i=2 HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\ncde\r\n2\r\nfg\r\n0\r\n\r\n\
                    GET /v21.0/1?i=3 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n";
    let seen = three_answered(&proxy, &upstream, requests).await;
    let bodies: Vec<&[u8]> = seen.iter().map(|seen| &seen.body[..]).collect();
    assert_eq!(bodies, [&b"ab"[..], b"cdefg", b""]);
    assert_eq!(seen[2].uri, "/v21.0/1?i=3");
}

#[tokio::test]
async fn bodies_over_the_loops_limit_stream_through_hyper_whole() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    // 64 KiB is the most the loop buffers; one byte more goes to hyper.
    for length in [64 * 1024, 64 * 1024 + 1, 1024 * 1024] {
        let body: Vec<u8> = (0..length).map(|i| b'a' + (i % 26) as u8).collect();
        let head = format!(
            "POST /v21.0/1/media HTTP/1.1\r\nHost: p\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        );
        let response = raw_exchange(proxy.addr, &[head.as_bytes(), &body].concat()).await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        let seen = upstream.seen();
        assert_eq!(
            seen.last().unwrap().body,
            body,
            "{length} bytes arrive whole"
        );
    }
}

#[tokio::test]
async fn http10_and_head_requests_are_served_by_hyper_rules() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let response = raw_exchange(proxy.addr, b"GET /v21.0/1 HTTP/1.0\r\nHost: p\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.0 200 OK"), "{response}");
    assert!(response.ends_with(crate::support::META_OK), "{response}");

    let response = raw_exchange(
        proxy.addr,
        b"HEAD /v21.0/1 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.ends_with("\r\n\r\n"),
        "no body after a HEAD: {response}"
    );
    assert_eq!(upstream.seen().last().unwrap().method, http::Method::HEAD);
}

#[tokio::test]
async fn expect_continue_gets_its_interim_answer() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /v21.0/1/media HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut interim))
        .await
        .expect("an interim answer")
        .unwrap();
    let interim = String::from_utf8_lossy(&interim[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    stream.write_all(b"hello").await.unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).await.unwrap();
    assert!(rest.contains("HTTP/1.1 200 OK"), "{rest}");
    assert_eq!(upstream.only().body, "hello");
}

#[tokio::test]
async fn malformed_or_ambiguous_requests_get_400_and_reach_nothing() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let bad: [&[u8]; 6] = [
        // Two different lengths: which one frames the body is ambiguous.
        b"POST /v21.0/1/media HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST /v21.0/1/media HTTP/1.1\r\nHost: p\r\nContent-Length: +2\r\n\r\nab",
        b"POST /v21.0/1/media HTTP/1.1\r\nHost: p\r\nContent-Length: 2 2\r\n\r\nab",
        b"GET /v21.0/1 HTTP/1.1\r\nHo st: p\r\n\r\n",
        b"GET /v21.0/1 HTTP/1.1 extra\r\nHost: p\r\n\r\n",
        // Accepted by the head parser, refused as a URI.
        b"GET /v21.0/<x> HTTP/1.1\r\nHost: p\r\n\r\n",
    ];
    for request in bad {
        let response = raw_exchange(proxy.addr, request).await;
        assert!(
            response.starts_with("HTTP/1.1 400 Bad Request"),
            "{:?} got {response}",
            String::from_utf8_lossy(request)
        );
    }
    assert!(upstream.seen().is_empty(), "nothing was forwarded");
}

#[tokio::test]
async fn response_framing_follows_the_status_and_the_body() {
    let upstream = FakeUpstream::with(|seen| match seen.uri.as_str() {
        "/v21.0/no-content" => json(StatusCode::NO_CONTENT, ""),
        _ => json(StatusCode::OK, "{}"),
    })
    .await;
    let proxy = proxy_to(&upstream).await;
    let response = raw_exchange(
        proxy.addr,
        b"GET /v21.0/no-content HTTP/1.1\r\nHost: p\r\n\r\nGET /v21.0/ok HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (no_content, ok) = response
        .split_once("HTTP/1.1 200 OK")
        .expect("two responses");
    assert!(
        no_content.starts_with("HTTP/1.1 204 No Content\r\n"),
        "{response}"
    );
    assert!(
        no_content.ends_with("\r\n\r\n"),
        "a 204 has no body: {response}"
    );
    let ok = ok.to_ascii_lowercase();
    assert!(ok.contains("content-length: 2\r\n"), "{response}");
    assert!(ok.contains("connection: close\r\n"), "{response}");
    assert!(ok.contains("\r\ndate: "), "{response}");
    assert!(ok.ends_with("\r\n\r\n{}"), "{response}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once() {
    let upstream = FakeUpstream::start().await;
    let proxy = proxy_to(&upstream).await;
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET /v21.0/1 HTTP/1.1\r\nHost: p\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200 OK"));
    // The connection is now idle between requests: shutdown must not wait
    // the drain timeout (30 s) for it.
    tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
        .await
        .expect("shutdown does not wait for idle connections");
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut answer))
        .await
        .expect("the idle connection is closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
}

/// What a handler saw of one request, comparable across servers.
type Recorded = (
    String,
    String,
    http::Version,
    Vec<(String, Vec<u8>)>,
    Vec<u8>,
);

/// Records each request it is given and answers `200 ok`.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Recorded>>);

impl Recorder {
    async fn record<B>(
        &self,
        request: http::Request<B>,
    ) -> http::Response<sendgate::body::ProxyBody>
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        use http_body_util::BodyExt;
        let (parts, body) = request.into_parts();
        let body = body.collect().await.expect("body").to_bytes().to_vec();
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect();
        self.0.lock().unwrap().push((
            parts.method.to_string(),
            parts.uri.to_string(),
            parts.version,
            headers,
            body,
        ));
        http::Response::new(sendgate::body::full_body("ok"))
    }
}

impl sendgate::server::Handler for Recorder {
    async fn call(
        &self,
        request: http::Request<sendgate::body::ProxyBody>,
    ) -> http::Response<sendgate::body::ProxyBody> {
        self.record(request).await
    }
}

/// Writes `raw` to a server, closes the write side, and returns the status
/// lines it answered and the requests its handler saw.
async fn exchange_with(
    addr: std::net::SocketAddr,
    recorder: &Recorder,
    raw: &[u8],
) -> (Vec<String>, Vec<Recorded>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let statuses = status_lines(&answer)
        .into_iter()
        .map(str::to_owned)
        .collect();
    (statuses, std::mem::take(&mut *recorder.0.lock().unwrap()))
}

/// The same bytes given to sendgate's server and to a plain hyper HTTP/1.1
/// server: the handlers must see the same requests, and the clients the
/// same answers. This is what makes the loop safe to put in front of
/// hyper: a client cannot find a request it frames differently.
#[tokio::test]
async fn sendgate_and_hyper_see_the_same_requests() {
    let sendgate_recorder = std::sync::Arc::new(Recorder::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sendgate_addr = listener.local_addr().unwrap();
    tokio::spawn(sendgate::server::serve(
        listener,
        sendgate_recorder.clone(),
        std::future::pending(),
    ));

    let hyper_recorder = std::sync::Arc::new(Recorder::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hyper_addr = listener.local_addr().unwrap();
    let recorder = hyper_recorder.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorder = recorder.clone();
            let service = hyper::service::service_fn(move |request| {
                let recorder = recorder.clone();
                async move { Ok::<_, std::convert::Infallible>(recorder.record(request).await) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });

    let long_value = "v".repeat(20 * 1024);
    let cases: Vec<Vec<u8>> = vec![
        // Field names in any case, repeated fields, empty, padded, tabbed
        // and non-ASCII values.
        b"GET /v21.0/1?fields=a,b&x=%20 HTTP/1.1\r\nHOST: p\r\nAccept: a\r\naccept: b\r\nX-Empty:\r\nX-Pad:   v  \r\nX-Tab:\tv\r\nX-Latin: caf\xe9\r\n\r\n".to_vec(),
        // Pipelined methods and bodies, lengths with leading zeros.
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\nPATCH /c HTTP/1.1\r\nContent-Length: 000\r\n\r\nDELETE /d HTTP/1.1\r\nContent-Length: 0002\r\n\r\nokPURGE /e HTTP/1.1\r\n\r\n".to_vec(),
        // Simple, chunked (hyper), simple.
        b"POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\naPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\nGET /c HTTP/1.1\r\n\r\n".to_vec(),
        // A head over the loop's 16 KiB, then a plain request.
        format!("GET /long HTTP/1.1\r\nX-Long: {long_value}\r\n\r\nGET /after HTTP/1.1\r\n\r\n").into_bytes(),
        // Close in the middle: nothing after it is served.
        b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n".to_vec(),
        // Absolute form, HTTP/1.0, HEAD.
        b"GET http://p/abs?q=1 HTTP/1.1\r\nHost: p\r\n\r\nHEAD /h HTTP/1.1\r\n\r\nGET /ten HTTP/1.0\r\n\r\n".to_vec(),
        // Ambiguous or broken framing.
        b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
        b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxyz".to_vec(),
        b"GET /a HTTP/1.1\r\nX: a\r\n b\r\n\r\n".to_vec(),
        b"GET /a\x01b HTTP/1.1\r\n\r\n".to_vec(),
        // A target the head parser takes and `http::Uri` refuses.
        b"GET /a<b HTTP/1.1\r\n\r\nGET /after HTTP/1.1\r\n\r\n".to_vec(),
        // A body shorter than its length: the connection ends mid-request.
        b"POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
    ];
    for raw in cases {
        let ours = exchange_with(sendgate_addr, &sendgate_recorder, &raw).await;
        let hypers = exchange_with(hyper_addr, &hyper_recorder, &raw).await;
        assert_eq!(
            ours,
            hypers,
            "sendgate and hyper differ on {:?}",
            String::from_utf8_lossy(&raw)
        );
    }
}
