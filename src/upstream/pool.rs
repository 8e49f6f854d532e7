//! Connections to one upstream, pooled per thread.
//!
//! Each thread keeps its own idle HTTP/1.1 connections and at most one
//! HTTP/2 connection (which carries any number of requests at once). An
//! HTTP/1.1 connection has no task of its own: the request's task writes
//! the request and reads the answer itself (`http1`). An HTTP/2
//! connection's task runs on the runtime of the thread that opened it. On a
//! proxy worker (one single-threaded runtime per thread) a request therefore
//! checks out a connection, uses it and gives it back without touching
//! another thread: no shared pool lock, no wake-up of another thread.
//!
//! An HTTP/1.1 connection goes back to the pool when the response body has
//! been read to its end ([`UpstreamBody`]); a body dropped early takes its
//! connection with it, since the unread rest would corrupt the next answer.
//! A connection of either kind that no request has taken for
//! `pool_idle_timeout_ms` is closed by the reaper. A response body whose
//! upstream sends nothing for `request_timeout_ms` fails, so that a stalled
//! upstream cuts the client's response short instead of holding it open
//! for ever.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use socket2::{SockRef, TcpKeepalive};
use thread_local::ThreadLocal;
use tokio::net::TcpStream;
use tower_service::Service;

use super::http1;
use super::http1::timed_out;
use crate::body::{BoxError, ProxyBody};
use crate::headers::NOT_FORWARDED;
use crate::stall::Stall;

/// How often idle connections past their timeout are closed.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// A connection ready to carry one request.
enum Sender {
    Http1(http1::Connection),
    Http2(http2::SendRequest<ProxyBody>),
}

/// Why a request on one connection got no response head.
enum TryError {
    /// The connection never took the request: it can go on another one.
    Unsent(Box<Request<ProxyBody>>, BoxError),
    /// The upstream may have seen the request.
    Failed(BoxError),
}

impl TryError {
    fn into_error(self) -> BoxError {
        match self {
            TryError::Unsent(_, err) | TryError::Failed(err) => err,
        }
    }
}

/// When an idle upstream connection starts TCP keep-alive probes.
pub(super) const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The connections of one upstream.
pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    scheme: Scheme,
    authority: Authority,
    /// How long opening a plain connection may take (the connector has
    /// its own copy for TLS ones).
    connect_timeout: Duration,
    /// The `Host` an HTTP/1.1 request carries.
    host: HeaderValue,
    max_idle: usize,
    idle_timeout: Duration,
    /// How long a response body may wait for the upstream's next bytes.
    body_stall_limit: Duration,
    idle: ThreadLocal<Mutex<Idle>>,
    reaper_started: AtomicBool,
}

/// One thread's idle connections.
#[derive(Default)]
struct Idle {
    /// Oldest first; checked out from the back, so the warmest goes first.
    http1: VecDeque<IdleHttp1>,
    http2: Option<IdleHttp2>,
}

struct IdleHttp1 {
    connection: http1::Connection,
    since: Instant,
}

/// The thread's HTTP/2 connection; `since` is when a request last took it.
struct IdleHttp2 {
    sender: http2::SendRequest<ProxyBody>,
    since: Instant,
}

impl Pool {
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        scheme: Scheme,
        authority: Authority,
        connect_timeout: Duration,
        max_idle: usize,
        idle_timeout: Duration,
        body_stall_limit: Duration,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        // Like any client: the port only when it is not the scheme's default.
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        Ok(Pool {
            connector,
            scheme,
            authority,
            connect_timeout,
            host: HeaderValue::from_str(&host)?,
            max_idle,
            idle_timeout,
            body_stall_limit,
            idle: ThreadLocal::new(),
            reaper_started: AtomicBool::new(false),
        })
    }

    /// Sends `request` (its path and query are kept) and returns the
    /// response head, or a `TimedOut` error if that has not come by
    /// `deadline`. A request that a pooled connection failed before taking
    /// any of it is sent once more on a new connection; one it may have
    /// passed on is not, so that the upstream never sees it twice.
    pub(super) async fn send(
        self: &Arc<Self>,
        request: Box<Request<ProxyBody>>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<UpstreamBody>, BoxError> {
        let (sender, reused) = match self.checkout() {
            Some(sender) => (sender, true),
            None => (self.connect_by(deadline).await?, false),
        };
        match self.try_send(sender, request, deadline).await {
            Ok(response) => Ok(response),
            Err(TryError::Unsent(request, _)) if reused => {
                let sender = self.connect_by(deadline).await?;
                self.try_send(sender, request, deadline)
                    .await
                    .map_err(TryError::into_error)
            }
            Err(failed) => Err(failed.into_error()),
        }
    }

    /// A new connection, if it is open by `deadline`.
    async fn connect_by(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
    ) -> Result<Sender, BoxError> {
        // Opening a connection (TLS, HTTP/2 handshake) is a large future
        // that most requests never need: boxed, it does not swell theirs.
        tokio::time::timeout_at(deadline, Box::pin(self.connect()))
            .await
            .map_err(|_| BoxError::from(timed_out()))?
    }

    async fn try_send(
        self: &Arc<Self>,
        sender: Sender,
        request: Box<Request<ProxyBody>>,
        deadline: tokio::time::Instant,
    ) -> Result<Response<UpstreamBody>, TryError> {
        match sender {
            Sender::Http1(connection) => {
                // Written in origin form, the upstream in Host; the
                // connection keeps the deadline itself.
                match connection.send(request, &self.host, deadline).await {
                    Ok(response) => Ok(response.map(|body| {
                        self.body(Kind::Http1 {
                            body,
                            pool: self.clone(),
                        })
                    })),
                    Err(http1::Failure::Unsent(request, err)) => {
                        Err(TryError::Unsent(request, err.into()))
                    }
                    Err(http1::Failure::Failed(err)) => Err(TryError::Failed(err.into())),
                }
            }
            Sender::Http2(mut sender) => {
                let mut request = *request;
                // hyper announces the length of the body it sends itself.
                for name in &NOT_FORWARDED {
                    request.headers_mut().remove(name);
                }
                // HTTP/2 carries scheme and authority as pseudo-headers.
                let path_and_query = request
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *request.uri_mut() = self.absolute(path_and_query);
                *request.version_mut() = http::Version::HTTP_2;
                // Boxed: hyper's exchange and its timer would otherwise be
                // part of every request's future, HTTP/1.1 ones included.
                let sent = Box::pin(tokio::time::timeout_at(
                    deadline,
                    sender.try_send_request(request),
                ));
                match sent
                    .await
                    .map_err(|_| TryError::Failed(timed_out().into()))?
                {
                    Ok(response) => Ok(response.map(|body| self.body(Kind::Http2(body)))),
                    Err(mut failed) => Err(match failed.take_message() {
                        Some(request) => {
                            TryError::Unsent(Box::new(request), failed.into_error().into())
                        }
                        None => TryError::Failed(failed.into_error().into()),
                    }),
                }
            }
        }
    }

    fn body(&self, kind: Kind) -> UpstreamBody {
        UpstreamBody {
            kind,
            stall: Stall::new(self.body_stall_limit),
        }
    }

    /// The upstream's URL for a path and query.
    fn absolute(&self, path_and_query: PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).expect("scheme, authority and path make a URI")
    }

    /// This thread's idle connections.
    fn local(&self) -> MutexGuard<'_, Idle> {
        self.idle
            .get_or(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A pooled connection that can take a request now, if this thread has one.
    fn checkout(&self) -> Option<Sender> {
        let mut idle = self.local();
        if let Some(http2) = &mut idle.http2 {
            if !http2.sender.is_closed() {
                http2.since = Instant::now();
                return Some(Sender::Http2(http2.sender.clone()));
            }
            idle.http2 = None;
        }
        // Idle ones past the timeout are the reaper's to close, within a
        // period of it. One the upstream closed (or wrote to unasked) while
        // it was idle is dropped here, before a request is risked on it.
        while let Some(mut candidate) = idle.http1.pop_back() {
            if candidate.connection.is_open() {
                return Some(Sender::Http1(candidate.connection));
            }
        }
        None
    }

    /// Gives an HTTP/1.1 connection back to this thread's pool.
    fn checkin(self: &Arc<Self>, connection: http1::Connection) {
        if self.max_idle == 0 {
            return;
        }
        let mut idle = self.local();
        idle.http1.push_back(IdleHttp1 {
            connection,
            since: Instant::now(),
        });
        if idle.http1.len() > self.max_idle {
            idle.http1.pop_front();
        }
        drop(idle);
        self.start_reaper();
    }

    /// Opens a new connection, HTTP/2 if the server picks it by ALPN.
    async fn connect(self: &Arc<Self>) -> Result<Sender, BoxError> {
        if self.scheme == Scheme::HTTP {
            let stream = self.connect_plain().await?;
            return Ok(Sender::Http1(http1::Connection::plain(stream)));
        }
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
        let io = connector
            .call(self.absolute(PathAndQuery::from_static("/")))
            .await?;
        if io.connected().is_negotiated_h2() {
            // Boxed: the handshake is kilobytes, and would otherwise be
            // held by every new connection's future while it connects.
            let (sender, connection) = Box::pin(
                http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io),
            )
            .await?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "upstream HTTP/2 connection ended with an error");
                }
            });
            if self.max_idle > 0 {
                self.local().http2 = Some(IdleHttp2 {
                    sender: sender.clone(),
                    since: Instant::now(),
                });
                self.start_reaper();
            }
            Ok(Sender::Http2(sender))
        } else {
            Ok(Sender::Http1(http1::Connection::new(io)))
        }
    }

    /// Opens a plain TCP connection without the connector, whose future
    /// (name resolution with happy eyeballs, the TLS wrapper) is over 4 KB:
    /// with thousands of sends opening connections at once, that much per
    /// send stayed resident after they had connected. Same socket options
    /// as the connector's.
    async fn connect_plain(&self) -> io::Result<TcpStream> {
        let host = self.authority.host();
        // An IPv6 literal comes bracketed in the authority.
        let host = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        SockRef::from(&stream).set_tcp_keepalive(&TcpKeepalive::new().with_time(TCP_KEEPALIVE))?;
        Ok(stream)
    }

    /// Starts, once, the task that closes connections idle for longer than
    /// the idle timeout, on every thread's pool.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.reaper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Pool> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(REAP_EVERY).await;
                let Some(pool) = pool.upgrade() else { return };
                pool.close_expired();
            }
        });
    }

    fn close_expired(&self) {
        let expired = Instant::now().checked_sub(self.idle_timeout);
        for idle in self.idle.iter() {
            let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
            // Ones the upstream has closed meanwhile go too, rather than
            // hold a socket until a request finds them.
            idle.http1.retain_mut(|idle| {
                expired.is_none_or(|expired| idle.since >= expired) && idle.connection.is_open()
            });
            // Dropping the pool's handle lets hyper close the connection
            // once requests still on it are done.
            if idle.http2.as_ref().is_some_and(|http2| {
                http2.sender.is_closed() || expired.is_some_and(|expired| http2.since < expired)
            }) {
                idle.http2 = None;
            }
        }
    }
}

/// A response body from the upstream, streamed. Its HTTP/1.1 connection goes
/// back to the pool once the body has been read to the end.
pub(crate) struct UpstreamBody {
    kind: Kind,
    /// The limit on the upstream going silent in the middle of the body.
    stall: Stall,
}

enum Kind {
    /// Reads its connection itself, and hands it back to `pool`.
    Http1 {
        body: http1::Body,
        pool: Arc<Pool>,
    },
    Http2(Incoming),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.kind {
            Kind::Http1 { body, .. } => {
                let polled = Pin::new(body).poll_frame(cx);
                // Back to the pool as soon as the body has been read to its
                // end, even if the reader never polls again.
                self.give_back();
                polled.map_err(Into::into)
            }
            Kind::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        };
        // On a stall the connection is not given back (the body did not
        // end): it is closed with this body, and the client's response is
        // cut short.
        self.stall.check(
            cx,
            polled,
            "the upstream sent nothing in the middle of a body",
            |stalled| Some(Err(stalled.into())),
        )
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Http1 { body, .. } => body.is_end_stream(),
            Kind::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Http1 { body, .. } => body.size_hint(),
            Kind::Http2(body) => body.size_hint(),
        }
    }
}

impl UpstreamBody {
    /// Checks an HTTP/1.1 connection back in once its body has been read to
    /// its end (and the connection may carry another request).
    fn give_back(&mut self) {
        if let Kind::Http1 { body, pool } = &mut self.kind
            && let Some(mut connection) = body.take_reusable()
        {
            connection.rest();
            pool.checkin(connection);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body with nothing to read (HEAD, 204, an empty one), or read to
        // its end by a reader that stopped at `is_end_stream`.
        self.give_back();
    }
}

#[cfg(test)]
mod tests {

    use http_body_util::BodyExt;
    use hyper_rustls::HttpsConnectorBuilder;

    use super::super::http1::tests::far;
    use super::super::test_upstream::{Upstream, answer, answer_in_parts};
    use super::*;
    use crate::body::full_body;

    /// A pool of plain-HTTP connections to a test upstream.
    fn pool_to(upstream: &Upstream) -> Arc<Pool> {
        pool_with_stall_limit(upstream, Duration::from_secs(30))
    }

    fn pool_with_stall_limit(upstream: &Upstream, body_stall_limit: Duration) -> Arc<Pool> {
        let tls = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(HttpConnector::new());
        let authority = Authority::try_from(upstream.addr.to_string()).unwrap();
        let pool = Pool::new(
            connector,
            Scheme::HTTP,
            authority,
            Duration::from_secs(5),
            4,
            Duration::from_secs(60),
            body_stall_limit,
        );
        Arc::new(pool.unwrap())
    }

    fn get() -> Request<ProxyBody> {
        Request::get("/").body(full_body(Bytes::new())).unwrap()
    }

    async fn send(pool: &Arc<Pool>) -> Response<UpstreamBody> {
        match tokio::time::timeout(Duration::from_secs(5), pool.send(Box::new(get()), far())).await
        {
            Ok(Ok(response)) => response,
            Ok(Err(_)) => panic!("the request failed"),
            Err(_) => panic!("no answer in time"),
        }
    }

    /// An upstream that answers `first`, then the `ok` that
    /// [`second_request`] expects.
    async fn upstream_then_ok(first: &str) -> Upstream {
        Upstream::start(vec![
            answer(first),
            answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        ])
        .await
    }

    /// Sends a second request (its answer `ok`) and says on which
    /// connections the upstream saw the first and the second.
    async fn second_request(pool: &Arc<Pool>, upstream: &mut Upstream) -> [usize; 2] {
        let body = send(pool).await.into_body().collect().await.unwrap();
        assert_eq!(body.to_bytes(), "ok");
        [
            upstream.next().await.connection,
            upstream.next().await.connection,
        ]
    }

    /// The body's next frame, which must be data.
    async fn next_data(body: &mut UpstreamBody) -> Bytes {
        body.frame().await.unwrap().unwrap().into_data().unwrap()
    }

    fn idle(pool: &Pool) -> usize {
        pool.local().http1.len()
    }

    #[tokio::test]
    async fn a_request_the_upstream_took_and_closed_on_is_not_sent_again() {
        // One answer: the upstream reads the second request, then closes
        // without answering it.
        let mut upstream = Upstream::start(vec![answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )])
        .await;
        let pool = pool_to(&upstream);
        let body = send(&pool).await.into_body().collect().await.unwrap();
        assert_eq!(body.to_bytes(), "ok");
        let failed =
            tokio::time::timeout(Duration::from_secs(5), pool.send(Box::new(get()), far()))
                .await
                .expect("no hang");
        assert!(failed.is_err(), "no answer, so an error (the caller's 502)");
        assert_eq!(upstream.next().await.connection, 0);
        assert_eq!(upstream.next().await.connection, 0, "on the pooled one");
        assert!(
            upstream.got_nothing_more().await,
            "a send the upstream may have acted on is never repeated"
        );
    }

    #[tokio::test]
    async fn a_connection_is_pooled_on_the_poll_that_reads_its_end() {
        let mut upstream =
            upstream_then_ok("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await;
        let pool = pool_to(&upstream);
        let mut body = send(&pool).await.into_body();
        assert_eq!(idle(&pool), 0, "not while the body is unread");
        assert_eq!(next_data(&mut body).await, "hello");
        assert_eq!(idle(&pool), 1, "back at once, though the body lives on");
        drop(body);
        assert_eq!(idle(&pool), 1, "and only once");

        assert_eq!(second_request(&pool, &mut upstream).await, [0, 0], "reused");
    }

    #[tokio::test]
    async fn a_bodyless_response_gives_its_connection_back_when_dropped() {
        let upstream = Upstream::start(vec![answer("HTTP/1.1 204 No Content\r\n\r\n")]).await;
        let pool = pool_to(&upstream);
        let response = send(&pool).await;
        assert!(response.body().is_end_stream());
        drop(response);
        assert_eq!(idle(&pool), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_early_takes_its_connection_along() {
        let mut upstream =
            upstream_then_ok("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello").await;
        let pool = pool_to(&upstream);
        let mut body = send(&pool).await.into_body();
        assert_eq!(next_data(&mut body).await, "hello");
        drop(body);
        assert_eq!(idle(&pool), 0);

        let connections = second_request(&pool, &mut upstream).await;
        assert_eq!(connections, [0, 1], "a new connection");
    }

    #[tokio::test]
    async fn a_body_the_upstream_stops_sending_fails_after_the_stall_limit() {
        // Five of ten bytes, then silence on an open connection.
        let mut upstream =
            upstream_then_ok("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello").await;
        let pool = pool_with_stall_limit(&upstream, Duration::from_millis(100));
        let mut body = send(&pool).await.into_body();
        assert_eq!(next_data(&mut body).await, "hello");
        let rest = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the stall limit ends the wait");
        let error = rest.expect("an error, not the end").unwrap_err();
        let error = error.downcast_ref::<io::Error>().expect("an I/O error");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(body);
        assert_eq!(idle(&pool), 0, "the connection is not reused");

        let connections = second_request(&pool, &mut upstream).await;
        assert_eq!(connections, [0, 1], "a new connection");
    }

    #[tokio::test]
    async fn a_silence_is_timed_from_the_last_bytes_not_from_the_first_wait() {
        // 40 one-byte parts about 5 ms apart: the body takes well over the
        // limit in all, but no silence in it comes near the limit.
        let mut parts = vec!["HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n"];
        parts.extend(["x"; 40]);
        let upstream = Upstream::start(vec![answer_in_parts(&parts)]).await;
        let pool = pool_with_stall_limit(&upstream, Duration::from_millis(100));
        let started = tokio::time::Instant::now();
        let body = send(&pool).await.into_body().collect().await.unwrap();
        assert_eq!(body.to_bytes(), "x".repeat(40));
        assert!(
            started.elapsed() > Duration::from_millis(100),
            "the body outlasted the limit, so the limit was not on the whole"
        );
        assert_eq!(idle(&pool), 1);
    }
}
