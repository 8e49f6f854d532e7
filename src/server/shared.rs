//! What every connection of a runtime shares: the handler, hyper for the
//! connections and requests the own HTTP/1.1 loop hands over, and the
//! registry that applies the timeouts and the cap.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::registry::{Entry, HyperRequest, Phase, Registry};
use crate::body::{BoxError, ClientBodyError, ProxyBody};
use crate::tls::PeerNames;

/// How long a client may take nothing of its response before its
/// connection is closed (nginx's `send_timeout` default).
pub(super) const CLIENT_WRITE_STALL: Duration = Duration::from_secs(60);
/// How long a connection hyper serves may take to close gracefully once
/// it has no request in flight.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Something that answers requests: the proxy, the sandbox, the admin API.
pub trait Handler: Send + Sync + 'static {
    /// Borrows the handler: a connection holds it for its lifetime, so a
    /// request costs no reference count shared by every worker thread.
    fn call(
        &self,
        request: Request<ProxyBody>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + '_;
}

/// What every connection of a runtime uses.
pub(super) struct Shared<H> {
    pub(super) handler: Arc<H>,
    /// Serves the connections (and requests) that `http1` hands over.
    pub(super) hyper: auto::Builder<TokioExecutor>,
    pub(super) registry: Arc<Registry>,
}

impl<H: Handler> Shared<H> {
    /// Serves the rest of a connection with hyper (HTTP/2, upgrades and
    /// whatever `http1` leaves to it), `io` starting with the bytes already
    /// read from it. Shuts down gracefully when the registry says close
    /// (idle too long, evicted at the cap, or shutdown).
    /// A TLS client's certificate names (`peer`) go into each request's
    /// extensions.
    pub(super) async fn serve_with_hyper<I>(&self, io: I, entry: Entry, peer: Option<PeerNames>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let handler = self.handler.clone();
        let registry = self.registry.clone();
        let activity = entry.activity().clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let handler = handler.clone();
            let registry = registry.clone();
            let in_flight = activity.hyper_request(&registry);
            // A failure of the client's body is the client's, whoever
            // reads it (the send path, or the upstream client streaming it).
            let mut request = request.map(|body| {
                body.map_err(|err| BoxError::from(ClientBodyError(err.into())))
                    .boxed()
            });
            if let Some(peer) = &peer {
                request.extensions_mut().insert(peer.clone());
            }
            async move {
                let response = handler.call(request).await;
                Ok::<_, Infallible>(response.map(|body| CountedBody {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        if !entry.enter(Phase::Hyper) {
            return;
        }
        let connection = self.hyper.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let activity = entry.activity();
        let ended = match activity.until_close(connection.as_mut()).await {
            Some(ended) => ended,
            None => {
                connection.as_mut().graceful_shutdown();
                // HTTP/2's graceful close waits for the client to answer a
                // ping; one that does not is let go once it has nothing in
                // flight.
                loop {
                    match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                        Ok(ended) => break ended,
                        Err(_) if !activity.in_flight() => return,
                        Err(_) => {}
                    }
                }
            }
        };
        if let Err(err) = ended {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    }
}

/// A response body of a connection hyper serves, its request counted in
/// flight until the body has been sent or dropped: a long download is not
/// an idle connection.
struct CountedBody {
    body: ProxyBody,
    /// Held for its drop.
    _in_flight: HyperRequest,
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
