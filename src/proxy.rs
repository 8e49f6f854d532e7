//! The proxy's shared state and its router: sends go to the send path,
//! everything else streams to the upstream untouched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use std::fmt;
use std::path::Path;

use crate::config::{Config, ConfigError, Secrets};
use crate::headers;
use crate::identity::{Identities, RedbStore, StoreError};
use crate::send;
use crate::templates::TemplateCategories;
use crate::upstream::{ProxyBody, Upstream};
use crate::webhook::Relay;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    config: Arc<Config>,
    pub upstream: Arc<Upstream>,
    pub identities: Arc<Identities>,
    pub templates: TemplateCategories,
    /// The webhook relay, when `webhook.path` is set.
    webhook: Option<Relay>,
    /// Secrets from the environment (admin token, app secret).
    pub secrets: Secrets,
    /// Prefix that makes request ids unique across restarts.
    id_prefix: String,
    next_id: AtomicU64,
}

impl App {
    /// Builds the state for a validated config, opening the identity store
    /// it names (or an in-memory one for `store.path = ""`).
    pub fn new(config: Config, secrets: Secrets) -> Result<Self, StartError> {
        let store = match config.store.path.as_str() {
            "" => RedbStore::in_memory(),
            path => RedbStore::open(Path::new(path)),
        }
        .map_err(StartError::Store)?;
        let identities = Arc::new(Identities::new(
            store,
            config.cache.identity_capacity,
            std::time::Duration::from_secs(config.cache.identity_ttl_secs),
        ));
        Self::with_identities(config, secrets, identities)
    }

    /// Builds the state around an identity service already open.
    pub fn with_identities(
        config: Config,
        secrets: Secrets,
        identities: Arc<Identities>,
    ) -> Result<Self, StartError> {
        let upstream = Arc::new(Upstream::new(&config).map_err(StartError::Config)?);
        let templates = TemplateCategories::new(&config.cache, upstream.clone());
        let webhook = match config.webhook.enabled() {
            true => Some(Relay::new(&config, &secrets).map_err(StartError::Config)?),
            false => None,
        };
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        Ok(App {
            config: Arc::new(config),
            upstream,
            identities,
            templates,
            webhook,
            secrets,
            id_prefix: format!("sg{started:x}"),
            next_id: AtomicU64::new(1),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.clone()
    }

    /// A new id for a request, echoed as `fbtrace_id` in local errors and logs.
    fn request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.id_prefix)
    }

    /// Routes one request.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<ProxyBody> {
        let path = request.uri().path().to_owned();
        if let Some(relay) = &self.webhook
            && path == self.config.webhook.path
        {
            let config = self.config();
            return relay.handle(&config, &self.identities, request).await.1;
        }
        if let Some(route) = send::route(request.method(), &path) {
            let request_id = self.request_id();
            return send::handle(&self, request, route, &request_id).await;
        }
        self.passthrough(request).await
    }

    /// Streams a request that is not a send to the upstream and its answer
    /// back, both bodies unbuffered.
    async fn passthrough(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let request = request.map(|body| body.map_err(Into::into).boxed());
        match self.upstream.send(request).await {
            Ok(response) => relay(response),
            Err(error) => {
                let request_id = self.request_id();
                tracing::warn!(request_id, error = ?error, "upstream request failed");
                error.to_graph_error().into_response(&request_id)
            }
        }
    }
}

/// Why sendgate could not start.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    Store(StoreError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(err) => write!(f, "config error: {err}"),
            StartError::Store(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

/// An upstream response on its way back: hop-by-hop headers go, the body streams.
pub fn relay(response: Response<Incoming>) -> Response<ProxyBody> {
    let mut response = response.map(|body| body.map_err(Into::into).boxed());
    headers::strip_hop_by_hop(response.headers_mut());
    response
}
