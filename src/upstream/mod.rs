//! The client to the Cloud API: TLS, timeouts and error mapping.
//!
//! Every request sendgate sends goes to the one configured upstream; the
//! client's request path and query are kept, its scheme and authority are
//! replaced, so no request can make the proxy talk to another host.
//! Connections are pooled per thread (`pool`); HTTP/1.1 ones are spoken by
//! sendgate's own client (`http1`), HTTP/2 ones by hyper.

mod http1;
mod pool;
#[cfg(test)]
mod test_upstream;

#[cfg(any(test, fuzzing))]
pub(crate) use http1::check_response_head;

pub use pool::UpstreamBody;

use std::error::Error;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Scheme;
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::{Config, ConfigError, RootStore};
use crate::graph_error::GraphError;
use crate::headers;
use pool::Pool;

/// When an idle upstream connection starts TCP keep-alive probes.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Errors of a body, boxed because bodies come from hyper and from memory.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type flowing through the proxy in both directions.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body held in memory, as a [`ProxyBody`].
pub fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with a frame taken from it put back in front: a request sent
/// again on another connection, a response whose first frame was awaited
/// before its head went out.
pub struct Prepended<B> {
    first: Option<Frame<Bytes>>,
    rest: B,
    /// `rest` has already said it has no more frames.
    ended: bool,
}

impl<B> Prepended<B> {
    pub fn new(first: Frame<Bytes>, rest: B, ended: bool) -> Self {
        Prepended {
            first: Some(first),
            rest,
            ended,
        }
    }
}

impl<B> http_body::Body for Prepended<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.rest).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        let rest = if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.rest.size_hint()
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(first));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint
    }
}

/// The client's request body failed (it broke off, or sent bad chunks):
/// the client's fault, answered 400, never blamed on the upstream.
#[derive(Debug)]
pub struct ClientBodyError(pub BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client's request body: {}", self.0)
    }
}

impl Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// Why [`read_whole`] got no body.
#[derive(Debug)]
pub enum ReadBodyError {
    /// More than the limit.
    TooLarge,
    /// The client's body failed (reset, bad framing).
    Broken,
}

/// Reads a whole body of at most `limit` bytes. A body in one piece (as
/// sendgate's own HTTP/1.1 loop gives them) is returned without a copy.
pub async fn read_whole(mut body: ProxyBody, limit: usize) -> Result<Bytes, ReadBodyError> {
    // The body so far while it is one piece; `joined` once it is more.
    let mut only: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        let data = match frame.map_err(|_| ReadBodyError::Broken)?.into_data() {
            Ok(data) if !data.is_empty() => data,
            _ => continue,
        };
        length += data.len();
        if length > limit {
            return Err(ReadBodyError::TooLarge);
        }
        match only.take() {
            None if joined.is_empty() => only = Some(data),
            earlier => {
                joined.extend_from_slice(earlier.as_deref().unwrap_or_default());
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(only.unwrap_or_else(|| joined.freeze()))
}

/// A response sendgate makes itself (errors, admin answers, the sandbox).
pub fn local_response(
    status: http::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Why a request to the upstream failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// Refused, reset or otherwise broken: 502.
    Unavailable(BoxError),
    /// No connection or no response head in time: 504.
    Timeout,
    /// The client's own request body failed on the way: 400.
    ClientBody(BoxError),
}

impl UpstreamError {
    pub fn to_graph_error(&self) -> GraphError {
        match self {
            UpstreamError::Unavailable(_) => GraphError::upstream_unavailable(),
            UpstreamError::Timeout => GraphError::upstream_timeout(),
            UpstreamError::ClientBody(_) => GraphError::unreadable_body(),
        }
    }

    /// Whether the upstream's side failed (so that its status counts as
    /// the upstream's answer in metrics and logs).
    pub fn is_upstreams(&self) -> bool {
        !matches!(self, UpstreamError::ClientBody(_))
    }
}

/// The client to the configured upstream.
pub struct Upstream {
    pool: Arc<Pool>,
    request_timeout: Duration,
}

impl Upstream {
    /// The client to the Cloud API named by `upstream`.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        Self::to(&config.upstream_uri()?, config.request_timeout(), config)
    }

    /// A client to another base URL (the webhook downstream) with the same
    /// TLS, connect-timeout and pool settings.
    pub fn to(base: &Uri, request_timeout: Duration, config: &Config) -> Result<Self, ConfigError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout()));
        http.set_keepalive(Some(TCP_KEEPALIVE));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(config)?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let bad = |reason: String| ConfigError {
            key: "upstream".into(),
            reason,
        };
        let authority = base
            .authority()
            .cloned()
            .ok_or_else(|| bad(format!("{base} has no host")))?;
        let pool = Pool::new(
            connector,
            base.scheme().cloned().unwrap_or(Scheme::HTTPS),
            authority,
            config.connect_timeout(),
            config.pool_max_idle,
            Duration::from_millis(config.pool_idle_timeout_ms),
            request_timeout,
        )
        .map_err(|err| bad(format!("{base}: {err}")))?;
        Ok(Upstream {
            pool: Arc::new(pool),
            request_timeout,
        })
    }

    /// Sends a request to the upstream, keeping its path and query, and
    /// returns the response head with a streaming body. The request timeout
    /// counts from `started`, the caller's own reading of the clock.
    pub async fn send(
        &self,
        mut request: Box<Request<ProxyBody>>,
        started: tokio::time::Instant,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        headers::strip_hop_by_hop(request.headers_mut());
        let deadline = started + self.request_timeout;
        let error = match self.pool.send(request, deadline).await {
            Ok(response) => return Ok(response),
            Err(err) => err,
        };
        if caused_by::<ClientBodyError>(&*error) {
            Err(UpstreamError::ClientBody(error))
        } else if is_timeout(&*error) {
            Err(UpstreamError::Timeout)
        } else {
            Err(UpstreamError::Unavailable(error))
        }
    }
}

/// The TLS client config: the chosen root store plus any extra CA file.
/// ALPN (h2, http/1.1) is set by the connector builder.
fn tls_config(config: &Config) -> Result<rustls::ClientConfig, ConfigError> {
    let bad = |key: &str, reason: String| ConfigError {
        key: key.into(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    match config.upstream_roots {
        RootStore::Webpki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        RootStore::System => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let why = found
                    .errors
                    .first()
                    .map_or("none found".into(), ToString::to_string);
                return Err(bad(
                    "upstream_roots",
                    format!("no system CA certificates: {why}"),
                ));
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    if !config.upstream_ca_file.is_empty() {
        let path = &config.upstream_ca_file;
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| bad("upstream_ca_file", format!("{path}: {err}")))?;
        if certs.is_empty() {
            return Err(bad("upstream_ca_file", format!("{path}: no certificates")));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| bad("upstream_ca_file", format!("{path}: {err}")))?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(|err| bad("upstream", err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// The error of a request that ran out of time, as [`is_timeout`] knows it.
fn timed_out() -> io::Error {
    io::ErrorKind::TimedOut.into()
}

/// Whether an error of type `E` is somewhere in the chain.
fn caused_by<E: Error + 'static>(err: &(dyn Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(cause) = source {
        if cause.is::<E>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// A timeout (the request's own, or the connector's) surfaces as an I/O
/// `TimedOut` somewhere in the chain.
fn is_timeout(err: &(dyn Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
        {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;

    /// A body that arrives in `pieces`, as a streamed upload does.
    fn in_pieces(pieces: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = pieces
            .iter()
            .map(|piece| Ok(Frame::data(Bytes::from_static(piece.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn a_body_in_pieces_is_read_whole_up_to_its_limit() {
        let body = read_whole(in_pieces(&["abc", "", "def", "gh"]), 8).await;
        assert_eq!(body.unwrap(), "abcdefgh", "exactly the limit is fine");
        let over = read_whole(in_pieces(&["abc", "def", "ghi"]), 8).await;
        assert!(matches!(over, Err(ReadBodyError::TooLarge)));
    }

    #[tokio::test]
    async fn a_body_in_one_piece_is_returned_as_it_is() {
        let piece = Bytes::from_static(b"{\"to\":\"1\"}");
        let body = read_whole(full_body(piece.clone()), 64).await.unwrap();
        assert_eq!(body.as_ptr(), piece.as_ptr(), "not copied");
        let over = read_whole(full_body(piece), 9).await;
        assert!(matches!(over, Err(ReadBodyError::TooLarge)));
    }
}
