//! Connections to one upstream, pooled per thread.
//!
//! Each thread keeps its own idle HTTP/1.1 connections and at most one
//! HTTP/2 connection (which carries any number of requests at once), and a
//! connection's task runs on the runtime of the thread that opened it. On a
//! proxy worker (one single-threaded runtime per thread) a request therefore
//! checks out a connection, uses it and gives it back without touching
//! another thread: no shared pool lock, no wake-up of another thread.
//!
//! An HTTP/1.1 connection goes back to the pool when the response body has
//! been read to its end ([`UpstreamBody`]); a body dropped early takes its
//! connection with it, since the unread rest would corrupt the next answer.

use std::collections::VecDeque;
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
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thread_local::ThreadLocal;
use tower_service::Service;

use super::{BoxError, ProxyBody};

/// How often idle connections past their timeout are closed.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// A connection ready to carry one request.
enum Sender {
    Http1(http1::SendRequest<ProxyBody>),
    Http2(http2::SendRequest<ProxyBody>),
}

/// Why a request got no response head.
pub(super) enum SendError {
    /// No connection could be opened.
    Connect(BoxError),
    /// The connection failed while the request was on it.
    Request(hyper::Error),
}

/// The connections of one upstream.
pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    scheme: Scheme,
    authority: Authority,
    /// The `Host` an HTTP/1.1 request carries.
    host: HeaderValue,
    max_idle: usize,
    idle_timeout: Duration,
    idle: ThreadLocal<Mutex<Idle>>,
    reaper_started: AtomicBool,
}

/// One thread's idle connections.
#[derive(Default)]
struct Idle {
    /// Oldest first; checked out from the back, so the warmest goes first.
    http1: VecDeque<IdleHttp1>,
    http2: Option<http2::SendRequest<ProxyBody>>,
}

struct IdleHttp1 {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

impl Pool {
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        scheme: Scheme,
        authority: Authority,
        max_idle: usize,
        idle_timeout: Duration,
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
            host: HeaderValue::from_str(&host)?,
            max_idle,
            idle_timeout,
            idle: ThreadLocal::new(),
            reaper_started: AtomicBool::new(false),
        })
    }

    /// Sends `request` (its path and query are kept) and returns the
    /// response head. A request that a pooled connection closed before
    /// sending is sent once more on a new connection.
    pub(super) async fn send(
        self: &Arc<Self>,
        request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        // Opening a connection (TLS, HTTP/2 handshake) is a large future
        // that most requests never need: boxed, it does not swell theirs.
        let (sender, reused) = match self.checkout() {
            Some(sender) => (sender, true),
            None => (Box::pin(self.connect()).await?, false),
        };
        match self.try_send(sender, request).await {
            Err(mut failed) if reused => match failed.take_message() {
                Some(request) => {
                    let sender = Box::pin(self.connect()).await?;
                    self.try_send(sender, request)
                        .await
                        .map_err(|failed| SendError::Request(failed.into_error()))
                }
                None => Err(SendError::Request(failed.into_error())),
            },
            result => result.map_err(|failed| SendError::Request(failed.into_error())),
        }
    }

    async fn try_send(
        self: &Arc<Self>,
        sender: Sender,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, TrySendError<Request<ProxyBody>>> {
        let path_and_query = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match sender {
            Sender::Http1(mut sender) => {
                // Origin form on the request line, the upstream in Host.
                *request.uri_mut() = Uri::from(path_and_query);
                *request.version_mut() = http::Version::HTTP_11;
                request
                    .headers_mut()
                    .insert(http::header::HOST, self.host.clone());
                let response = sender.try_send_request(request).await?;
                Ok(response.map(|body| UpstreamBody {
                    body,
                    release: Some(Release {
                        pool: self.clone(),
                        sender,
                    }),
                    ended: false,
                }))
            }
            Sender::Http2(mut sender) => {
                // HTTP/2 carries scheme and authority as pseudo-headers.
                *request.uri_mut() = self.absolute(path_and_query);
                *request.version_mut() = http::Version::HTTP_2;
                let response = sender.try_send_request(request).await?;
                Ok(response.map(|body| UpstreamBody {
                    body,
                    release: None,
                    ended: false,
                }))
            }
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
        if let Some(http2) = &idle.http2 {
            if !http2.is_closed() {
                return Some(Sender::Http2(http2.clone()));
            }
            idle.http2 = None;
        }
        // Idle ones past the timeout are the reaper's to close, within a
        // period of it. Connections whose last exchange is still finishing
        // are not waited for (that could hold this request up), but kept
        // for the next one.
        let mut finishing = Vec::new();
        let mut found = None;
        while let Some(mut candidate) = idle.http1.pop_back() {
            match ready_now(&mut candidate.sender) {
                Readiness::Ready => {
                    found = Some(Sender::Http1(candidate.sender));
                    break;
                }
                Readiness::Finishing => finishing.push(candidate),
                Readiness::Closed => {}
            }
        }
        idle.http1.extend(finishing.into_iter().rev());
        found
    }

    /// Gives an HTTP/1.1 connection back to this thread's pool.
    fn checkin(self: &Arc<Self>, sender: http1::SendRequest<ProxyBody>) {
        if self.max_idle == 0 || sender.is_closed() {
            return;
        }
        let mut idle = self.local();
        idle.http1.push_back(IdleHttp1 {
            sender,
            since: Instant::now(),
        });
        if idle.http1.len() > self.max_idle {
            idle.http1.pop_front();
        }
        drop(idle);
        self.start_reaper();
    }

    /// Opens a new connection, HTTP/2 if the server picks it by ALPN.
    async fn connect(self: &Arc<Self>) -> Result<Sender, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.absolute(PathAndQuery::from_static("/")))
            .await
            .map_err(SendError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(SendError::Request)?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "upstream HTTP/2 connection ended with an error");
                }
            });
            if self.max_idle > 0 {
                self.local().http2 = Some(sender.clone());
            }
            Ok(Sender::Http2(sender))
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(SendError::Request)?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(error = %err, "upstream connection ended with an error");
                }
            });
            Ok(Sender::Http1(sender))
        }
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
            idle.http1.retain(|connection| {
                !connection.sender.is_closed()
                    && expired.is_none_or(|expired| connection.since >= expired)
            });
            if idle.http2.as_ref().is_some_and(|http2| http2.is_closed()) {
                idle.http2 = None;
            }
        }
    }
}

enum Readiness {
    Ready,
    Finishing,
    Closed,
}

/// Whether an HTTP/1.1 connection can take a request right now.
fn ready_now(sender: &mut http1::SendRequest<ProxyBody>) -> Readiness {
    if sender.is_ready() {
        return Readiness::Ready;
    }
    // The flag may lag the connection task by a poll: ask without waiting.
    match sender.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(Ok(())) => Readiness::Ready,
        Poll::Ready(Err(_)) => Readiness::Closed,
        Poll::Pending => Readiness::Finishing,
    }
}

/// An HTTP/1.1 connection to give back once its response has been read.
struct Release {
    pool: Arc<Pool>,
    sender: http1::SendRequest<ProxyBody>,
}

/// A response body from the upstream, streamed. Its HTTP/1.1 connection goes
/// back to the pool once the body has been read to the end.
pub struct UpstreamBody {
    body: Incoming,
    release: Option<Release>,
    ended: bool,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(release) = self.release.take()
            && (self.ended || self.body.is_end_stream())
        {
            release.pool.checkin(release.sender);
        }
    }
}
