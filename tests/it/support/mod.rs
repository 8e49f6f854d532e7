//! A tiny DSL for integration tests: start a fake Graph API or the sandbox,
//! start sendgate pointed at it, send with a real HTTP client, and read what
//! the upstream received.

pub(crate) mod redis;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use sendgate::body::{ProxyBody, full_body};
use sendgate::config::Secrets;
use sendgate::sandbox::Sandbox;
use sendgate::server::{self, Handler};
use sendgate::{App, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A request as the fake upstream saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

type Responder = dyn Fn(&Seen) -> Response<ProxyBody> + Send + Sync;

/// A fake Graph API that records every request and answers with a closure.
pub(crate) struct FakeUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

struct FakeHandler {
    seen: Arc<Mutex<Vec<Seen>>>,
    respond: Box<Responder>,
}

impl Handler for FakeHandler {
    async fn call(&self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let seen = Seen {
            method: parts.method,
            uri: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            version: parts.version,
            headers: parts.headers,
            body,
        };
        let response = (self.respond)(&seen);
        self.seen.lock().unwrap().push(seen);
        response
    }
}

impl FakeUpstream {
    /// Answers every request as Meta answers a send.
    pub(crate) async fn start() -> Self {
        Self::with(|_| json(StatusCode::OK, META_OK)).await
    }

    pub(crate) async fn with(
        respond: impl Fn(&Seen) -> Response<ProxyBody> + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(FakeHandler {
            seen: seen.clone(),
            respond: Box::new(respond),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        // Count connections by wrapping the listener's accept in a relay.
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inner_addr = inner.local_addr().unwrap();
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(inner_addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        tokio::spawn(server::serve(inner, handler, async {
            let _ = stopped.await;
        }));
        FakeUpstream {
            addr,
            seen,
            connections,
            _stop: stop,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            1,
            "expected exactly one upstream request, got {seen:#?}"
        );
        seen.into_iter().next().unwrap()
    }

    /// TCP connections sendgate opened to this upstream.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// What Meta answers a phone send with.
pub(crate) const META_OK: &str = r#"{"messaging_product":"whatsapp","contacts":[{"input":"16315551234","wa_id":"16315551234"}],"messages":[{"id":"wamid.TEST"}]}"#;

pub(crate) fn json(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full_body(body))
        .unwrap()
}

/// The in-process sandbox as an upstream.
pub(crate) struct SandboxUpstream {
    pub sandbox: Arc<Sandbox>,
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl SandboxUpstream {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sandbox = Sandbox::new();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server::serve(listener, sandbox.clone(), async {
            let _ = stopped.await;
        }));
        SandboxUpstream {
            sandbox,
            addr,
            _stop: stop,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The env override that keeps identities in memory: each test starts from
/// nothing and leaves no file behind.
pub(crate) fn in_memory_store() -> [(String, String); 1] {
    [("SENDGATE_STORE__PATH".to_owned(), String::new())]
}

/// The secrets every test proxy gets.
pub(crate) const APP_SECRET: &str = "test-app-secret";
pub(crate) const VERIFY_TOKEN: &str = "test-verify-token";
pub(crate) const ADMIN_TOKEN: &str = "test-admin-token";

pub(crate) fn test_secrets() -> Secrets {
    Secrets {
        app_secret: Some(APP_SECRET.to_owned()),
        verify_token: Some(VERIFY_TOKEN.to_owned()),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
        fingerprint_key: None,
    }
}

/// A running sendgate.
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    done: Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

/// The sandbox walkthrough's business number and WABA, configured as in the README.
pub(crate) fn sandbox_number_config() -> String {
    format!(
        "[numbers.\"{}\"]\nwaba_id = \"{}\"\n",
        sendgate::sandbox::PHONE_NUMBER_ID,
        sendgate::sandbox::WABA_ID
    )
}

impl Proxy {
    /// Starts sendgate with `config` (TOML) over the defaults, pointed at `upstream`.
    pub(crate) async fn start(upstream: &str, config: &str) -> Self {
        let mut config =
            Config::from_sources(config, in_memory_store()).expect("test config is valid");
        config.upstream = upstream.to_owned();
        Self::start_with(config).await
    }

    pub(crate) async fn start_with(config: Config) -> Self {
        Self::start_with_secrets(config, test_secrets()).await
    }

    pub(crate) async fn start_with_secrets(config: Config, secrets: Secrets) -> Self {
        let app = Arc::new(App::new(config, secrets).expect("app starts"));
        Self::start_app(app).await
    }

    pub(crate) async fn start_app(app: Arc<App>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(sendgate::run(listener, app.clone(), async {
            let _ = stopped.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Proxy {
            addr,
            app,
            client,
            stop: Mutex::new(Some(stop)),
            done: Mutex::new(Some(done)),
        }
    }

    /// Records a pair as a signed webhook to `number` would have (blocking
    /// store write; fine in a test).
    pub(crate) fn attest(&self, number: &str, bsuid: &str, phone: &str) {
        use sendgate::identity::{IdentityEvent, Observation, Source};
        let scope = self.app.config().scope_of(number).key().into_owned();
        let seen = Observation {
            bsuid: bsuid.to_owned(),
            phone: Some(phone.to_owned()),
            ..Observation::default()
        };
        self.app
            .identities
            .apply(&[(scope, IdentityEvent::Seen(seen))], Source::Webhook)
            .expect("the store takes the pair");
    }

    /// Starts the admin API over this proxy's state; returns its address.
    pub(crate) async fn start_admin(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin = sendgate::admin::Admin::new(self.app.clone());
        tokio::spawn(server::serve(listener, admin, std::future::pending()));
        addr
    }

    /// Stops accepting and waits for in-flight requests to finish.
    pub(crate) async fn shutdown(&self) {
        let _ = self.stop.lock().unwrap().take().map(|stop| stop.send(()));
        let done = self.done.lock().unwrap().take();
        if let Some(done) = done {
            done.await.unwrap().expect("workers started");
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request and reads the whole answer.
    pub(crate) async fn request(&self, request: Request<Full<Bytes>>) -> Answer {
        let response = self
            .client
            .request(request)
            .await
            .expect("sendgate answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body reads").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// POSTs a JSON send to the sandbox number's `/messages`.
    pub(crate) async fn send(&self, body: &str) -> Answer {
        self.send_with(body, &[]).await
    }

    pub(crate) async fn send_with(&self, body: &str, headers: &[(&str, &str)]) -> Answer {
        let path = format!("/v21.0/{}/messages", sendgate::sandbox::PHONE_NUMBER_ID);
        self.post(&path, body, headers).await
    }

    /// POSTs `body` with `headers`, and the test token unless they name another.
    pub(crate) async fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::post(self.url(path)).header("content-type", "application/json");
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        {
            request = request.header("authorization", "Bearer test-token");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.request(
            request
                .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
                .unwrap(),
        )
        .await
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub(crate) fn decision(&self) -> &str {
        self.headers
            .get("x-sendgate-decision")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("<none>")
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a Graph-shaped error that SDKs recognise, and returns its code.
    pub(crate) fn graph_error_code(&self) -> i64 {
        assert!(
            self.status.is_client_error() || self.status.is_server_error(),
            "{self:?}"
        );
        assert_eq!(
            self.headers.get("content-type").unwrap(),
            "application/json"
        );
        let body = self.json();
        assert!(body["error"]["message"].is_string(), "{body}");
        body["error"]["code"].as_i64().expect("integer error.code")
    }
}

/// One request to a sendgate (or anything else) at `addr`, answer read
/// whole within 10 s (a sendgate that stalls fails the test, not hangs it).
pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    let answer = async {
        let response = client.request(request).await.expect("an answer");
        let (parts, body) = response.into_parts();
        (parts, body.collect().await.expect("body reads").to_bytes())
    };
    let (parts, body) = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
        .await
        .expect("answered within 10 s");
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A hand-written upstream on loopback: for each connection, in turn, reads
/// the request and hands the stream to `answer`. Returns its base URL.
pub(crate) async fn raw_upstream<F, A>(mut answer: F) -> String
where
    F: FnMut(tokio::net::TcpStream) -> A + Send + 'static,
    A: std::future::Future<Output = ()> + Send,
{
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            answer(stream).await;
        }
    });
    format!("http://{addr}")
}

/// Writes raw bytes to `addr` and reads until the peer closes; for requests
/// whose framing a test must control exactly (send with `Connection: close`).
pub(crate) async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await
    .expect("the peer closes the connection")
    .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// A `sendgate` process started by a test, killed (SIGKILL) on drop.
pub(crate) struct Served {
    pub child: std::process::Child,
    /// The proxy listener.
    pub addr: SocketAddr,
    /// Where its standard output (its logs) goes, when captured.
    pub log: Option<std::path::PathBuf>,
}

impl Served {
    /// What it has logged so far.
    pub(crate) fn logs(&self) -> String {
        let path = self.log.as_ref().expect("started with its logs captured");
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}

/// Sends `signal` to the process `pid`, by a system call rather than by
/// running `kill`: the signal is sent when this returns, with no process
/// to start in between (a timing test counts from just before).
pub(crate) fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).expect("a pid");
    rustix::process::kill_process(pid, signal).expect("the process takes signals");
}

/// A path in the temporary directory that no other test of this run uses:
/// `sendgate-{kind}-{name}-{pid}-{n}`. Nothing is created.
pub(crate) fn unique_temp_path(kind: &str, name: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("sendgate-{kind}-{name}-{}-{n}", std::process::id()))
}

/// A loopback address nothing listens on right now, for a server the test
/// starts on a port it must name (sendgate's listeners, redis-server).
///
/// Taken below the kernel's ephemeral range, never from it: a port the
/// kernel handed out there and the test released may be handed out again,
/// to another test's `bind(0)` or outgoing connection, before the server
/// binds it ("Address already in use", seen in CI). Below that range only
/// this function hands ports out, each once per run.
pub(crate) fn free_port() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let ports = ports_below_the_ephemeral_range();
    let start = std::process::id() as usize;
    for _ in 0..ports.len() {
        let at = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % ports.len();
        let port = ports.start + u16::try_from(at).unwrap();
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free loopback port in {ports:?}");
}

/// From 10000 up to the start of the range the kernel picks ports from for
/// `bind(0)` and outgoing connections (Linux' default: 32768).
fn ports_below_the_ephemeral_range() -> std::ops::Range<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
    let first_ephemeral = range
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    assert!(
        first_ephemeral > 11000,
        "the ephemeral port range starts at {first_ephemeral}: too low for free_port"
    );
    10000..first_ephemeral
}

/// `sendgate serve --sandbox --listen ADDR ARGS…` with `env`, from the
/// temporary directory (so no config file is picked up by accident), logs
/// quiet; returns once `ready` accepts connections (bounded to 20 s).
pub(crate) async fn serve_sandbox(
    args: &[&str],
    env: &[(&str, &str)],
    ready: Option<SocketAddr>,
) -> Served {
    let mut all = vec!["--sandbox"];
    all.extend_from_slice(args);
    let quiet = [[("RUST_LOG", "warn")].as_slice(), env].concat();
    serve(&all, &quiet, ready, false).await
}

/// `sendgate serve --listen ADDR ARGS…` with `env`, from the temporary
/// directory; its logs (standard output) go to a file when `capture_logs`.
/// Returns once `ready` (else the listener) accepts connections, bounded to
/// 20 s.
pub(crate) async fn serve(
    args: &[&str],
    env: &[(&str, &str)],
    ready: Option<SocketAddr>,
    capture_logs: bool,
) -> Served {
    launch(None, args, env, ready, capture_logs).await
}

/// [`serve`], its logs captured, with both open-file limits (soft and hard)
/// at `nofile`, as `ulimit -n` sets them.
pub(crate) async fn serve_with_fd_limit(
    nofile: u32,
    args: &[&str],
    env: &[(&str, &str)],
) -> Served {
    launch(Some(nofile), args, env, None, true).await
}

async fn launch(
    nofile: Option<u32>,
    args: &[&str],
    env: &[(&str, &str)],
    ready: Option<SocketAddr>,
    capture_logs: bool,
) -> Served {
    let addr = free_port();
    let binary = env!("CARGO_BIN_EXE_sendgate");
    let mut command = match nofile {
        Some(nofile) => {
            let mut shell = std::process::Command::new("sh");
            shell.args([
                "-c",
                &format!("ulimit -n {nofile} && exec \"$0\" \"$@\""),
                binary,
            ]);
            shell
        }
        None => std::process::Command::new(binary),
    };
    command
        .args(["serve", "--listen", &addr.to_string()])
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("SENDGATE_CONFIG")
        // Tests run side by side in one process: none may take the default
        // admin port or store file unless it says so in `env`.
        .env("SENDGATE_ADMIN__LISTEN", "")
        .env("SENDGATE_STORE__PATH", "")
        .stderr(std::process::Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    let log = capture_logs.then(|| {
        std::env::temp_dir().join(format!(
            "sendgate-test-log-{}-{}",
            std::process::id(),
            addr.port()
        ))
    });
    match &log {
        Some(path) => command.stdout(std::fs::File::create(path).unwrap()),
        None => command.stdout(std::process::Stdio::null()),
    };
    let mut served = Served {
        child: command.spawn().unwrap(),
        addr,
        log,
    };
    let ready = ready.unwrap_or(addr);
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(ready).await.is_err() {
        assert!(
            served.child.try_wait().unwrap().is_none(),
            "sendgate exited"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "sendgate did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    served
}

/// A message webhook from a username user whose phone is still shared, as
/// Meta sends it for the sandbox number: `contacts[]` with both ids.
pub(crate) fn message_webhook(bsuid: &str, phone: &str, message_id: &str) -> Vec<u8> {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550001111","phone_number_id":"{number}"}},"contacts":[{{"profile":{{"name":"P"}},"wa_id":"{phone}","user_id":"{bsuid}"}}],"messages":[{{"from":"{phone}","from_user_id":"{bsuid}","id":"{message_id}","timestamp":"1763800000","type":"text","text":{{"body":"hi"}}}}]}}}}]}}]}}"#,
        number = sendgate::sandbox::PHONE_NUMBER_ID,
    )
    .into_bytes()
}

/// POSTs a JSON body (with a sender's token, and a webhook signature when
/// given), answer read whole within 10 s.
pub(crate) async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: Vec<u8>,
    signature: Option<&str>,
) -> Answer {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("authorization", "Bearer t"),
    ];
    headers.extend(signature.map(|signature| ("x-hub-signature-256", signature)));
    call(addr, "POST", path, &headers, &body).await
}

/// A certificate authority made for one test, and the certificates it
/// issues (each with a subject of its own, which OpenSSL clients need).
pub(crate) struct Ca {
    pub(crate) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A subject of its own: OpenSSL (curl) takes a certificate whose
        // subject is its issuer's for a self-signed one.
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "sendgate test CA");
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` and its key, as PEM.
    pub(crate) fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// One admin API call, with `Bearer token` when given: the status and the
/// JSON answer (null when the body is not JSON).
pub(crate) async fn admin_call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    let answer = call(addr, method.as_str(), path, &headers, body.as_bytes()).await;
    let json = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
    (answer.status, json)
}
