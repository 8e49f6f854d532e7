//! Probes and shutdown as an orchestrator sees them, through the binary.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::support::{admin_call, call, free_port, raw_upstream, serve};

/// Upstream answers take this long, so that requests are in flight when
/// the signal comes.
const UPSTREAM_DELAY: Duration = Duration::from_millis(1500);

/// An upstream that answers every request with 200 after [`UPSTREAM_DELAY`].
async fn slow_upstream() -> String {
    raw_upstream(|mut stream| async move {
        tokio::spawn(async move {
            tokio::time::sleep(UPSTREAM_DELAY).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
        });
    })
    .await
}

fn terminate(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn accepts(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

#[tokio::test]
async fn sigterm_fails_readiness_first_then_closes_and_finishes_what_is_in_flight() {
    let upstream = slow_upstream().await;
    let admin = free_port();
    let admin_text = admin.to_string();
    let mut served = serve(
        &["--upstream", &upstream],
        &[
            ("SENDGATE_ADMIN__LISTEN", &admin_text),
            ("SENDGATE_SHUTDOWN__DELAY_MS", "2000"),
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

    let before = tokio::spawn(call(proxy, "GET", "/v21.0/me", &[], b""));
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&served.child);
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Readiness fails while the listeners still serve.
    let (status, body) = admin_call(admin, Method::GET, "/readyz", None, "").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "draining"})
        )
    );
    let (status, _) = admin_call(admin, Method::GET, "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK, "alive while draining");
    assert!(
        accepts(proxy).await,
        "the proxy still accepts during the delay"
    );
    let during = tokio::spawn(call(proxy, "GET", "/v21.0/me", &[], b""));

    // Then the listener closes, no sooner than the delay.
    while accepts(proxy).await {
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "the listener closes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        signalled.elapsed() >= Duration::from_millis(1900),
        "closed after {:?}, before the 2 s delay",
        signalled.elapsed()
    );

    // Requests in flight, before the signal and during the delay, finish.
    for request in [before, during] {
        let answer = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .expect("answered")
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"ok");
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
