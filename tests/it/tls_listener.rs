//! HTTPS on the listeners, through the binary: curl and HTTP/2 by ALPN,
//! certificates renewed by SIGHUP while an open connection keeps working,
//! client certificates that name a client, the admin listener over TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustix::process::Signal;
use rustls::HandshakeKind;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sendgate::sandbox::PHONE_NUMBER_ID;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::support::{Ca, Served, free_port, serve_sandbox, signal, unique_temp_path};

/// A directory of PEM files that lives as long as the test.
struct Files(PathBuf);

impl Files {
    fn new(name: &str) -> Self {
        let dir = unique_temp_path("tls", name);
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        // Written beside and renamed, as a certificate manager renews.
        let partial = self.0.join(format!("{name}.new"));
        std::fs::write(&partial, text).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        path.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `server.pem` and `server.key` for `localhost`, signed by `ca`.
fn server_files(files: &Files, ca: &Ca) {
    let (cert, key) = ca.issue(&["localhost"]);
    files.write("server.pem", &cert);
    files.write("server.key", &key);
}

/// `sendgate serve --sandbox --config <files>/sendgate.toml` with `config`,
/// the admin listener on `admin` when given.
async fn start(files: &Files, config: &str, admin: Option<SocketAddr>) -> Served {
    let config = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{config}",
        files.path("server.pem"),
        files.path("server.key")
    );
    let path = files.write("sendgate.toml", &config);
    let admin_text = admin.map(|addr| addr.to_string()).unwrap_or_default();
    let token = [("SENDGATE_ADMIN_TOKEN", "tls-admin-token")];
    let env = [("SENDGATE_ADMIN__LISTEN", admin_text.as_str()), token[0]];
    serve_sandbox(&["--config", &path], &env, admin).await
}

/// A TLS connection to `addr` as `localhost`, trusting `ca_pem`, offering
/// `alpn`, presenting `identity` (certificate and key PEM) when given.
async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
    identity: Option<&(String, String)>,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let config = client_config(ca_pem, alpn, identity);
    connect_with(addr, config).await
}

async fn connect_with(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A client's TLS settings (with its session cache, so that connections
/// made with one config resume their sessions).
fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    identity: Option<&(String, String)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|proto| proto.to_vec()).collect();
    Arc::new(config)
}

/// An HTTP/1.1 client on a TLS connection, kept open between requests.
struct Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Http1 {
    /// A TLS connection to `addr` (see [`connect`]) with an HTTP/1.1 client
    /// on it; panics if either fails.
    async fn open(
        addr: SocketAddr,
        ca_pem: &str,
        alpn: &[&[u8]],
        identity: Option<&(String, String)>,
    ) -> Self {
        let stream = connect(addr, ca_pem, alpn, identity).await.unwrap();
        Http1::over(stream).await.unwrap()
    }

    async fn over(stream: TlsStream<tokio::net::TcpStream>) -> hyper::Result<Self> {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Http1(sender))
    }

    async fn send(&mut self, to: &str, token: &str) -> hyper::Result<(StatusCode, String)> {
        self.0.ready().await?;
        let response = self.0.send_request(send_request(to, token)).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn send_request(to: &str, token: &str) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"messaging_product":"whatsapp","to":"{to}","type":"text","text":{{"body":"hi"}}}}"#
    );
    Request::post(format!("/v21.0/{PHONE_NUMBER_ID}/messages"))
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// curl's status line for a send over HTTPS, trusting `ca`, or its error.
fn curl(url: &str, ca: &str, extra: &[&str]) -> String {
    let output = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", ca])
        .args(["-o", "/dev/null", "-w", "%{http_code} HTTP/%{http_version}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    let mut said = String::from_utf8_lossy(&output.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&output.stderr));
    said
}

#[tokio::test]
async fn curl_and_an_http2_client_by_alpn_reach_sendgate_over_https() {
    let files = Files::new("alpn");
    let ca = Ca::new();
    server_files(&files, &ca);
    let ca_path = files.write("ca.pem", &ca.pem);
    let served = start(&files, "", None).await;
    let url = format!(
        "https://localhost:{}/v21.0/{PHONE_NUMBER_ID}/messages",
        served.addr.port()
    );
    let body =
        r#"{"messaging_product":"whatsapp","to":"16315551234","type":"text","text":{"body":"hi"}}"#;
    let post = [
        "-H",
        "content-type: application/json",
        "-H",
        "authorization: Bearer t",
        "-d",
        body,
    ];
    let http1 = [&post[..], &["--http1.1"]].concat();
    assert_eq!(curl(&url, &ca_path, &http1), "200 HTTP/1.1");
    let http2 = [&post[..], &["--http2"]].concat();
    assert_eq!(curl(&url, &ca_path, &http2), "200 HTTP/2");
    // Not trusted without the CA; not served in clear.
    let untrusted = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", &url])
        .status()
        .unwrap();
    // 60: the peer's certificate could not be authenticated.
    assert_eq!(untrusted.code(), Some(60), "curl without the CA");
    // Plain HTTP is taken for a bad handshake: no HTTP answer at all (the
    // TLS alert that closes it is no status line: curl's code 000).
    let plain = url.replace("https://", "http://");
    let said = curl(&plain, &ca_path, &post);
    assert!(
        said.starts_with("000 "),
        "plain HTTP on the TLS port: {said}"
    );

    // A client that reconnects resumes its session (no certificate, no
    // signature), as nginx's default session tickets allow.
    let config = client_config(&ca.pem, &[], None);
    for expected in [
        HandshakeKind::Full,
        HandshakeKind::Resumed,
        HandshakeKind::Resumed,
    ] {
        let stream = connect_with(served.addr, config.clone()).await.unwrap();
        assert_eq!(stream.get_ref().1.handshake_kind(), Some(expected));
        // The tickets come after the handshake: a request reads them.
        let mut client = Http1::over(stream).await.unwrap();
        assert_eq!(
            client.send("16315551234", "t").await.unwrap().0,
            StatusCode::OK
        );
    }

    // A client that offers h2 alone by ALPN gets HTTP/2.
    let stream = connect(served.addr, &ca.pem, &[b"h2"], None).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(send_request("16315551234", "t"))
        .await
        .unwrap();
    assert_eq!(
        (response.status(), response.version()),
        (StatusCode::OK, Version::HTTP_2)
    );
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_connections_after_sighup_and_open_ones_go_on() {
    let files = Files::new("renew");
    let old_ca = Ca::new();
    server_files(&files, &old_ca);
    let admin = free_port();
    let served = start(&files, "", Some(admin)).await;
    let mut open = Http1::open(served.addr, &old_ca.pem, &[b"http/1.1"], None).await;
    assert_eq!(
        open.send("16315551234", "t").await.unwrap().0,
        StatusCode::OK
    );

    // Renewed in place (by another CA, so that the test can tell them
    // apart), then SIGHUP.
    let new_ca = Ca::new();
    server_files(&files, &new_ca);
    signal(served.child.id(), Signal::HUP);
    let reloaded = Instant::now();
    while connect(served.addr, &new_ca.pem, &[], None).await.is_err() {
        assert!(
            reloaded.elapsed() < Duration::from_secs(10),
            "new certificate served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        connect(served.addr, &old_ca.pem, &[], None).await.is_err(),
        "new connections no longer get the old certificate"
    );
    // The connection opened before goes on, on its own session.
    assert_eq!(
        open.send("16315551235", "t").await.unwrap().0,
        StatusCode::OK
    );

    // A broken renewal is refused and the certificate in force stays.
    files.write("server.key", "not a key");
    let (status, body) = crate::support::admin_call(
        admin,
        http::Method::POST,
        "/admin/reload",
        Some("tls-admin-token"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("tls.key"),
        "{body}"
    );
    let mut after = Http1::open(served.addr, &new_ca.pem, &[], None).await;
    assert_eq!(
        after.send("16315551236", "t").await.unwrap().0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_client_certificate_is_required_and_names_its_client() {
    let files = Files::new("mtls");
    let server_ca = Ca::new();
    server_files(&files, &server_ca);
    let client_ca = Ca::new();
    let client_ca_path = files.write("clients.pem", &client_ca.pem);
    // A share of one send for the client the certificate names, and a
    // default share of 100 for everyone else.
    let config = format!(
        "client_ca = \"{client_ca_path}\"\n\
         [limits.client]\nmode = \"reject\"\nper_second = 100\nburst = 100\n\
         [clients.\"bulk.example\"]\nper_second = 1\nburst = 1\n"
    );
    // [tls] is the table the start helper opens: client_ca goes in it.
    let served = start(&files, &config, None).await;

    let bulk = client_ca.issue(&["bulk.example"]);
    let mut first = Http1::open(served.addr, &server_ca.pem, &[], Some(&bulk)).await;
    assert_eq!(
        first.send("16315551234", "token-a").await.unwrap().0,
        StatusCode::OK
    );
    // Another connection and another token: still that client, whose share is spent.
    let mut second = Http1::open(served.addr, &server_ca.pem, &[], Some(&bulk)).await;
    let (status, body) = second.send("16315551235", "token-b").await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");

    // A certificate naming no client is let in with the token's own share.
    let other = client_ca.issue(&["other.example"]);
    let mut third = Http1::open(served.addr, &server_ca.pem, &[], Some(&other)).await;
    assert_eq!(
        third.send("16315551236", "token-b").await.unwrap().0,
        StatusCode::OK
    );

    // Without a certificate, or with one another CA signed: no request is served.
    let stranger = Ca::new().issue(&["bulk.example"]);
    for identity in [None, Some(&stranger)] {
        let refused = async {
            let stream = connect(served.addr, &server_ca.pem, &[], identity).await?;
            let mut client = Http1::over(stream).await.map_err(std::io::Error::other)?;
            client
                .send("16315551237", "token-c")
                .await
                .map_err(std::io::Error::other)
        };
        let outcome = tokio::time::timeout(Duration::from_secs(10), refused)
            .await
            .expect("refused within 10 s");
        assert!(
            outcome.is_err(),
            "{:?}: {outcome:?}",
            identity.map(|_| "stranger")
        );
    }
}

#[tokio::test]
async fn the_admin_listener_speaks_tls_without_asking_for_a_client_certificate() {
    let files = Files::new("admin");
    let ca = Ca::new();
    server_files(&files, &ca);
    let ca_path = files.write("ca.pem", &ca.pem);
    let client_ca_path = files.write("clients.pem", &Ca::new().pem);
    let admin = free_port();
    let config = format!("client_ca = \"{client_ca_path}\"\n[admin]\ntls = true\n");
    let _served = start(&files, &config, Some(admin)).await;
    let url = format!("https://localhost:{}/readyz", admin.port());
    assert_eq!(curl(&url, &ca_path, &["--http1.1"]), "200 HTTP/1.1");
}

/// A client that opens a connection and never starts its handshake is
/// closed at the head timeout, as a plain one that sends nothing is.
#[tokio::test]
async fn a_silent_client_is_closed_before_its_handshake() {
    use tokio::io::AsyncReadExt;
    let files = Files::new("silent");
    server_files(&files, &Ca::new());
    let served = start(&files, "[connections]\nheader_timeout_ms = 300\n", None).await;
    // Counted from before the connect, so that it never undercounts.
    let since = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    let mut byte = [0; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not left open: {read:?}"
    );
    assert!(
        since.elapsed() >= Duration::from_millis(300),
        "closed after {:?}, before the head timeout",
        since.elapsed()
    );
}

/// OpenSSL clients (wrk, curl, most SDKs' runtimes) resume with the same
/// ticket again and again, as a session kept across reconnections: each
/// such resumption must succeed, not only the first.
#[tokio::test]
async fn an_openssl_client_resumes_its_session_with_the_same_ticket_again() {
    let files = Files::new("tickets");
    let ca = Ca::new();
    server_files(&files, &ca);
    let ca_path = files.write("ca.pem", &ca.pem);
    let session = files.path("session.pem");
    let served = start(&files, "", None).await;
    let connect = format!("localhost:{}", served.addr.port());
    // The server is another process: blocking this test's thread is fine.
    let s_client = |session_flag: &str| {
        // Bounded: a server that never closes fails the test, not hangs it.
        let mut child = std::process::Command::new("timeout")
            .args([
                "20", "openssl", "s_client", "-ign_eof", "-connect", &connect, "-CAfile", &ca_path,
            ])
            .args([session_flag, &session])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl is installed (.ci/run installs it)");
        // A request, answered and closed by the server (-ign_eof: not by the
        // end of stdin), so that the tickets sent after the handshake are read.
        let mut stdin = child.stdin.take().unwrap();
        let request = b"GET /v21.0/me HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
        let _ = std::io::Write::write_all(&mut stdin, request);
        drop(stdin);
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(s_client("-sess_out").contains("New, TLSv1.3"));
    for attempt in 0..3 {
        let said = s_client("-sess_in");
        assert!(
            said.contains("Reused, TLSv1.3"),
            "attempt {attempt}: {said}"
        );
    }
}

/// The quickest setup: one self-signed certificate, given to curl as its CA.
#[tokio::test]
async fn curl_trusts_a_self_signed_certificate_given_as_its_ca() {
    let files = Files::new("selfsigned");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.self_signed(&key).unwrap().pem();
    files.write("server.pem", &cert);
    files.write("server.key", &key.serialize_pem());
    let served = start(&files, "", None).await;
    let url = format!(
        "https://localhost:{}/v21.0/{PHONE_NUMBER_ID}/messages",
        served.addr.port()
    );
    let ca = files.path("server.pem");
    let body =
        r#"{"messaging_product":"whatsapp","to":"16315551234","type":"text","text":{"body":"hi"}}"#;
    for (version, said) in [("--http1.1", "200 HTTP/1.1"), ("--http2", "200 HTTP/2")] {
        let post = ["-H", "content-type: application/json", "-d", body, version];
        assert_eq!(curl(&url, &ca, &post), said);
    }
}
