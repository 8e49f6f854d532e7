//! An HTTPS upstream through rustls: certificate checked against the
//! configured trust anchors, HTTP/2 negotiated by ALPN, sends still decided.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::Proxy;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sendgate::Config;
use sendgate::body::full_body;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A CA and a `localhost` certificate it signed; the CA as PEM.
fn certificates() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca = crate::support::Ca::new();
    let (leaf, leaf_key) = ca.issue(&["localhost"]);
    let cert = CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf_key.as_bytes()).unwrap();
    (ca.pem, cert, key)
}

/// What most HTTPS servers offer by ALPN.
const H2_OR_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// An HTTPS server offering the `alpn` protocols, as its port, each request's
/// version, body and header fields, and how many of its connections the
/// client closed.
async fn tls_upstream(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> (
    u16,
    Arc<Mutex<Vec<(Version, bytes::Bytes, http::HeaderMap)>>>,
    Arc<AtomicUsize>,
) {
    let mut server = rustls::ServerConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    server.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let closed = Arc::new(AtomicUsize::new(0));
    let closed_count = closed.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let log = log.clone();
            let closed_count = closed_count.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |request: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let version = request.version();
                        let fields = request.headers().clone();
                        let body = request.into_body().collect().await?.to_bytes();
                        log.lock().unwrap().push((version, body, fields));
                        Ok::<_, hyper::Error>(Response::new(full_body(crate::support::META_OK)))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                closed_count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, seen, closed)
}

/// sendgate in front of the test upstream on `port`, trusting the test CA
/// (written to a file named after `tag`), with `config` on top of the
/// defaults.
async fn proxy_trusting(ca_pem: &str, port: u16, config: &str, tag: &str) -> Proxy {
    let ca_file =
        std::env::temp_dir().join(format!("sendgate-test-ca-{tag}-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca_pem).unwrap();
    let mut config = Config::from_sources(config, crate::support::in_memory_store()).unwrap();
    config.upstream = format!("https://localhost:{port}");
    config.upstream_ca_file = ca_file.display().to_string();
    Proxy::start_with(config).await
}

/// A text send with a BSUID in `to` (so rewritten), from client `crm`.
async fn send_to_rewrite(proxy: &Proxy) -> crate::support::Answer {
    proxy
        .post(
            "/v21.0/123/messages",
            r#"{"to":"US.1","type":"text"}"#,
            &[("x-sendgate-client", "crm")],
        )
        .await
}

#[tokio::test]
async fn https_upstream_with_h2_and_a_trusted_ca() {
    let (ca_pem, cert, key) = certificates();
    let (port, seen, _) = tls_upstream(cert, key, H2_OR_HTTP1).await;
    let proxy = proxy_trusting(&ca_pem, port, "", "h2").await;
    let answer = send_to_rewrite(&proxy).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.decision(), "rewritten: to->recipient");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, Version::HTTP_2, "ALPN picked h2");
    assert_eq!(seen[0].1, r#"{"recipient":"US.1","type":"text"}"#);
    // The rewrite made the body longer than the length the sender announced.
    let fields = &seen[0].2;
    assert_eq!(fields["content-length"], "34");
    // The sender's Host names sendgate; the upstream has `:authority`.
    for name in ["host", "x-sendgate-client"] {
        assert!(!fields.contains_key(name), "{name} reached the upstream");
    }
    assert_eq!(fields["authorization"], "Bearer test-token");
}

#[tokio::test]
async fn https_upstream_speaking_only_http1() {
    let (ca_pem, cert, key) = certificates();
    let (port, seen, closed) = tls_upstream(cert, key, &[b"http/1.1"]).await;
    let proxy = proxy_trusting(&ca_pem, port, "", "h1").await;
    for _ in 0..2 {
        let answer = send_to_rewrite(&proxy).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            answer.json(),
            serde_json::from_str::<serde_json::Value>(crate::support::META_OK).unwrap()
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (version, body, fields) in &seen {
        assert_eq!(*version, Version::HTTP_11, "ALPN picked http/1.1");
        assert_eq!(body, r#"{"recipient":"US.1","type":"text"}"#);
        assert_eq!(fields["content-length"], "34");
        assert_eq!(fields["host"], format!("localhost:{port}"));
        assert!(!fields.contains_key("x-sendgate-client"));
    }
    assert_eq!(closed.load(Ordering::SeqCst), 0, "no connection closed");
}

#[tokio::test]
async fn an_idle_http2_upstream_connection_is_closed_after_the_idle_timeout() {
    let (ca_pem, cert, key) = certificates();
    let (port, seen, closed) = tls_upstream(cert, key, H2_OR_HTTP1).await;
    let proxy = proxy_trusting(&ca_pem, port, "pool_idle_timeout_ms = 200", "idle").await;
    let answer = proxy
        .post("/v21.0/123/messages", r#"{"to":"16315551234"}"#, &[])
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(seen.lock().unwrap()[0].0, Version::HTTP_2);
    assert_eq!(closed.load(Ordering::SeqCst), 0, "kept while fresh");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while closed.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle HTTP/2 connection is closed within the idle timeout plus a reap period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_a_502() {
    let (_ca_pem, cert, key) = certificates();
    let (port, seen, _) = tls_upstream(cert, key, H2_OR_HTTP1).await;
    // Only the public roots: the test CA is unknown.
    let proxy = Proxy::start(&format!("https://localhost:{port}"), "").await;
    let answer = proxy
        .post("/v21.0/123/messages", r#"{"to":"16315551234"}"#, &[])
        .await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.graph_error_code(), 2);
    assert!(seen.lock().unwrap().is_empty());
}
