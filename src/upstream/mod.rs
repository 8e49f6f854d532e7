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

pub(crate) use pool::UpstreamBody;

use std::error::Error;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response, Uri};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;

use rustls::RootCertStore;

use crate::body::{BoxError, ClientBodyError, ProxyBody};
use crate::config::{Config, ConfigError, RootStore};
use crate::headers;
use crate::tls;
use pool::{Pool, TCP_KEEPALIVE};

/// Why a request to the upstream failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// Refused, reset or otherwise broken: 502.
    Unavailable(BoxError),
    /// No connection or no response head in time: 504.
    Timeout,
    /// The client's own request body failed on the way: 400.
    ClientBody(BoxError),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Unavailable(err) => write!(f, "upstream unavailable: {err}"),
            UpstreamError::Timeout => f.write_str("upstream timed out"),
            UpstreamError::ClientBody(err) => write!(f, "client body failed: {err}"),
        }
    }
}

impl UpstreamError {
    /// Whether the upstream's side failed (so that its status counts as
    /// the upstream's answer in metrics and logs).
    pub(crate) fn is_upstreams(&self) -> bool {
        !matches!(self, UpstreamError::ClientBody(_))
    }
}

/// The client to the configured upstream.
pub(crate) struct Upstream {
    pool: Arc<Pool>,
    request_timeout: Duration,
}

impl Upstream {
    /// The client to the Cloud API named by `upstream`.
    pub(crate) fn new(config: &Config) -> Result<Self, ConfigError> {
        Self::to(&config.upstream_uri()?, config.request_timeout(), config)
    }

    /// A client to another base URL (the webhook downstream) with the same
    /// TLS, connect-timeout and pool settings.
    pub(crate) fn to(
        base: &Uri,
        request_timeout: Duration,
        config: &Config,
    ) -> Result<Self, ConfigError> {
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
    pub(crate) async fn send(
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

/// Whether the upstream's TLS settings (root store, CA file) make a client
/// config, as starting the proxy will: `check-config` runs this too.
pub(crate) fn check_tls(config: &Config) -> Result<(), ConfigError> {
    tls_config(config).map(drop)
}

/// The TLS client config: the chosen root store plus any extra CA file.
/// ALPN (h2, http/1.1) is set by the connector builder.
fn tls_config(config: &Config) -> Result<rustls::ClientConfig, ConfigError> {
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
                return Err(ConfigError::new(
                    "upstream_roots",
                    format!("no system CA certificates: {why}"),
                ));
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    if !config.upstream_ca_file.is_empty() {
        tls::add_pem_roots(&mut roots, "upstream_ca_file", &config.upstream_ca_file)?;
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(|err| ConfigError::new("upstream", err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
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
