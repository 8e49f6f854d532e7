//! Probes and shutdown as an orchestrator sees them, through the binary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use rustix::process::Signal;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::support::{admin_call, call, free_port, raw_upstream, serve, signal};

/// How long readiness fails while sendgate still serves, after SIGTERM.
const SHUTDOWN_DELAY: Duration = Duration::from_millis(1000);
/// Upstream answers take longer than the delay, so that requests are still
/// in flight when the listener closes: the drain is what finishes them.
const UPSTREAM_DELAY: Duration = Duration::from_millis(2500);

/// An upstream that answers every request with 200 after [`UPSTREAM_DELAY`],
/// and says on `arrived` when a request reaches it.
async fn slow_upstream(arrived: mpsc::UnboundedSender<()>) -> String {
    raw_upstream(move |mut stream| {
        let _ = arrived.send(());
        async move {
            tokio::spawn(async move {
                tokio::time::sleep(UPSTREAM_DELAY).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    })
    .await
}

async fn accepts(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

/// A request through the proxy, answered in the background: its answer
/// and when it came.
fn in_flight(proxy: SocketAddr) -> tokio::task::JoinHandle<(crate::support::Answer, Instant)> {
    tokio::spawn(async move {
        let answer = call(proxy, "GET", "/v21.0/me", &[], b"").await;
        (answer, Instant::now())
    })
}

#[tokio::test]
async fn sigterm_fails_readiness_first_then_closes_and_finishes_what_is_in_flight() {
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let upstream = slow_upstream(arrived).await;
    let arrival = async |arrivals: &mut mpsc::UnboundedReceiver<()>| {
        tokio::time::timeout(Duration::from_secs(5), arrivals.recv())
            .await
            .expect("the request reached the upstream");
    };
    let admin = free_port();
    let admin_text = admin.to_string();
    let delay_ms = SHUTDOWN_DELAY.as_millis().to_string();
    let mut served = serve(
        &["--upstream", &upstream],
        &[
            ("SENDGATE_ADMIN__LISTEN", &admin_text),
            ("SENDGATE_SHUTDOWN__DELAY_MS", &delay_ms),
            ("RUST_LOG", "warn"),
        ],
        Some(admin),
        false,
    )
    .await;
    let proxy = served.addr;
    let (status, body) = admin_call(admin, Method::GET, "/readyz", None, "").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    let before = in_flight(proxy);
    arrival(&mut arrivals).await;
    // Counted from before the signal, so that the bounds below never
    // undercount what sendgate waited.
    let signalled = Instant::now();
    signal(served.child.id(), Signal::TERM);

    // Readiness fails while the listeners still serve.
    let draining = serde_json::json!({"status": "draining"});
    loop {
        let (status, body) = admin_call(admin, Method::GET, "/readyz", None, "").await;
        if (status, &body) == (StatusCode::SERVICE_UNAVAILABLE, &draining) {
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            signalled.elapsed() < SHUTDOWN_DELAY - Duration::from_millis(200),
            "readiness still ready after {:?}",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = admin_call(admin, Method::GET, "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK, "alive while draining");
    assert!(
        accepts(proxy).await,
        "the proxy still accepts during the delay"
    );
    let during = in_flight(proxy);
    arrival(&mut arrivals).await;

    // Then the listener closes, no sooner than the delay.
    while accepts(proxy).await {
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "the listener closes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = Instant::now();
    assert!(
        signalled.elapsed() >= SHUTDOWN_DELAY,
        "closed after {:?}, before the delay",
        signalled.elapsed()
    );

    // Requests in flight, before the signal and during the delay, finish
    // after the listener closed: the drain waited for them.
    for request in [before, during] {
        let (answer, answered) = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"ok");
        assert!(answered > closed, "answered before the listener closed");
    }
    let exited = Instant::now();
    loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            assert!(status.success(), "exits cleanly: {status}");
            break;
        }
        assert!(exited.elapsed() < Duration::from_secs(10), "sendgate exits");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
