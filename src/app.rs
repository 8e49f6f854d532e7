//! The proxy's shared state: what every request handler needs, built once
//! from a validated config, and the upstream calls they share (forwarding,
//! relaying the answer, request ids).
//!
//! What a reload may change (policies, templates, numbers, clients, limits)
//! lives in one [`Live`] snapshot behind an `ArcSwap`: a request takes the
//! snapshot once and uses it to the end, so a reload never mixes two configs
//! inside one request and never waits for, or drops, one in flight.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::{Request, Response};

use crate::body::ProxyBody;
use crate::config::{Config, ConfigError, Secrets};
use crate::fingerprint::Fingerprinter;
use crate::fleet::Fleet;
use crate::graph_error::GraphError;
use crate::identity::{
    Identities, LEGACY_DEFAULT_SCOPE, Migration, RedbStore, RedisStore, StoreError,
};
use crate::limits::Limits;
use crate::metrics::{Metrics, RELOAD_FAILURE, RELOAD_SUCCESS};
use crate::relay::{body_failed, relay};
use crate::templates::TemplateCategories;
use crate::tls::Terminator;
use crate::upstream::{Upstream, UpstreamBody};
use crate::webhook::{Outcome, Relay};

/// The reloadable part of the state: one consistent config and its limits.
pub struct Live {
    pub config: Arc<Config>,
    pub limits: Arc<Limits>,
}

/// Where a reload reads its config from: the file (or none, for the
/// embedded defaults) and the command-line overrides to apply again.
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub overrides: Box<dyn Fn(&mut Config) + Send + Sync>,
}

/// Everything a request handler needs, shared by all connections.
pub struct App {
    live: ArcSwap<Live>,
    source: Option<ConfigSource>,
    pub(crate) metrics: Metrics,
    pub(crate) upstream: Arc<Upstream>,
    pub identities: Arc<Identities>,
    pub(crate) templates: TemplateCategories,
    /// The webhook relay, when `webhook.path` is set.
    pub(crate) webhook: Option<Relay>,
    /// Secrets from the environment (admin token, app secret).
    pub secrets: Secrets,
    /// Names senders by their tokens (`SENDGATE_FINGERPRINT_KEY`).
    pub fingerprinter: Fingerprinter,
    /// The Redis connection replicas share state through (fleet mode).
    pub(crate) fleet: Option<Arc<Fleet>>,
    /// Prefix that makes request ids unique across restarts.
    id_prefix: String,
    next_id: AtomicU64,
    /// Set when shutdown begins: readiness fails from then on.
    draining: AtomicBool,
    /// The listeners' certificates, when `[tls]` is on.
    pub(crate) tls: Option<Arc<Terminator>>,
}

impl App {
    /// Builds the state for a validated config, opening the identity store
    /// it names (or an in-memory one for `store.path = ""`).
    pub fn new(config: Config, secrets: Secrets) -> Result<Self, StartError> {
        if config.fleet.enabled() {
            let fleet = Fleet::start(&config.fleet).map_err(|err| StartError::Store(err.into()))?;
            let identities = Identities::shared(
                RedisStore::new(fleet.clone()),
                config.cache.identity_capacity,
                Duration::from_secs(config.cache.identity_ttl_secs),
            );
            let limits = Limits::with_fleet(&config, fleet.redis().clone());
            let mut app = Self::with_identities(config, secrets, identities, limits)?;
            fleet.redis().count_calls_in(app.metrics.add_fleet());
            app.fleet = Some(fleet);
            return Ok(app);
        }
        let store = match config.store.path.as_str() {
            "" => RedbStore::in_memory(),
            path => RedbStore::open(Path::new(path)).map(|(store, migration)| {
                report_migration(&config, &migration);
                store
            }),
        }
        .map_err(StartError::Store)?;
        let identities = Arc::new(Identities::new(
            store,
            config.cache.identity_capacity,
            Duration::from_secs(config.cache.identity_ttl_secs),
        ));
        let limits = Limits::new(&config);
        Self::with_identities(config, secrets, identities, limits)
    }

    /// Builds the state around an identity service already open and the
    /// limits (in-process, or the fleet's).
    fn with_identities(
        config: Config,
        secrets: Secrets,
        identities: Arc<Identities>,
        limits: Limits,
    ) -> Result<Self, StartError> {
        let tls = Terminator::new(&config.tls).map_err(StartError::Config)?;
        let upstream = Arc::new(Upstream::new(&config).map_err(StartError::Config)?);
        let templates = TemplateCategories::new(&config.cache, upstream.clone());
        let webhook = match config.webhook.enabled() {
            true => Some(Relay::new(&config, &secrets).map_err(StartError::Config)?),
            false => None,
        };
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let metrics = Metrics::new();
        Metrics::expect_outcomes(&metrics.webhook_relays, Outcome::ALL.map(Outcome::as_str));
        identities.count_cache_in(metrics.identity_cache.clone());
        let limits = Arc::new(limits);
        Ok(App {
            live: ArcSwap::from_pointee(Live {
                config: Arc::new(config),
                limits,
            }),
            source: None,
            metrics,
            upstream,
            identities,
            templates,
            webhook,
            fingerprinter: Fingerprinter::new(secrets.fingerprint_key.as_deref()),
            secrets,
            fleet: None,
            id_prefix: format!("sg{started:x}"),
            next_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            tls,
        })
    }

    /// Shutdown has begun: `/readyz` fails from now on, so that the
    /// orchestrator routes new work elsewhere while this keeps serving.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Remembers where the config came from, so that it can be reloaded.
    pub fn with_source(mut self, source: ConfigSource) -> Self {
        self.source = Some(source);
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.live.load().config.clone()
    }

    /// The config and limits in force, as one snapshot.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Re-reads the config from its source and, if valid, puts it in force.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let result = self.try_reload();
        let outcome = if result.is_ok() {
            RELOAD_SUCCESS
        } else {
            RELOAD_FAILURE
        };
        Metrics::outcome(&self.metrics.config_reloads, outcome);
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(err) => {
                tracing::warn!(error = %err, "configuration reload refused; the old one stays")
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        let mut config = Config::load(source.path.as_deref()).map_err(ReloadError::Invalid)?;
        (source.overrides)(&mut config);
        config.validate().map_err(ReloadError::Invalid)?;
        self.replace_config(config)
    }

    /// Puts a validated config in force, keeping limiter state where the
    /// limits did not change. Refused when it changes what only a restart
    /// can apply (listeners, upstream, store, caches, webhook relay).
    pub fn replace_config(&self, config: Config) -> Result<(), ReloadError> {
        let current = self.live.load();
        let needs_restart = current.config.restart_only_changes(&config);
        if !needs_restart.is_empty() {
            return Err(ReloadError::NeedsRestart(needs_restart));
        }
        // Renewed certificates are read on every reload, changed config or not.
        if let Some(tls) = &self.tls {
            tls.reload(&config.tls).map_err(ReloadError::Invalid)?;
        }
        let limits = Arc::new(current.limits.reconfigured(&config));
        self.live.store(Arc::new(Live {
            config: Arc::new(config),
            limits,
        }));
        Ok(())
    }

    /// Drops idle limiter state every `limits.retain_interval_secs`, and
    /// publishes how many keys are live. Runs until the app is dropped.
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let interval = match app.upgrade() {
                    Some(app) => Duration::from_secs(app.config().limits.retain_interval_secs),
                    None => return,
                };
                tokio::time::sleep(interval).await;
                let Some(app) = app.upgrade() else { return };
                app.housekeeping();
                if let Some(store) = app.identities.shared_store() {
                    // Counted here, off the metrics request: across a
                    // fleet's scopes it is a round trip each.
                    if let Ok(known) = store.count().await {
                        app.metrics.identities.set(known as i64);
                    }
                }
            }
        });
    }

    /// One round of housekeeping (also run before metrics are rendered).
    pub fn housekeeping(&self) {
        let live = self.live();
        live.limits.retain_recent();
        self.publish_gauges(&live);
    }

    fn publish_gauges(&self, live: &Live) {
        for (kind, keys) in live.limits.keys() {
            let labels = crate::metrics::LimitLabels {
                limit: kind.as_str().to_owned(),
            };
            self.metrics
                .limiter_keys
                .get_or_create(&labels)
                .set(keys as i64);
        }
        match &self.fleet {
            // The fleet's count is refreshed by housekeeping: a round trip
            // per scope is no work for a metrics request.
            Some(fleet) => {
                if let Some(up) = &self.metrics.fleet_redis_up {
                    up.set(i64::from(fleet.redis().health().is_up()));
                }
            }
            None => {
                if let Ok(known) = self.identities.len() {
                    self.metrics.identities.set(known as i64);
                }
            }
        }
    }

    /// The Prometheus text of every metric, gauges brought up to date.
    pub fn render_metrics(&self) -> String {
        self.publish_gauges(&self.live());
        self.metrics.render()
    }

    /// Forwards a request upstream, timing it and counting its status.
    pub(crate) async fn forward(
        &self,
        request: Box<Request<ProxyBody>>,
    ) -> Result<Response<UpstreamBody>, crate::upstream::UpstreamError> {
        // One reading of the clock both times the request and starts its
        // timeout.
        let started = tokio::time::Instant::now();
        let result = self.upstream.send(request, started).await;
        self.metrics
            .upstream_latency
            .observe(started.elapsed().as_secs_f64());
        let status = match &result {
            Ok(response) => Some(response.status().as_u16()),
            Err(error) if error.is_upstreams() => Some(GraphError::from(error).status.as_u16()),
            // The client's body failed: the upstream gave no answer to count.
            Err(_) => None,
        };
        if let Some(status) = status {
            self.metrics.upstream_response(status);
        }
        result
    }

    /// A new id for a request, echoed as `fbtrace_id` in local errors and logs.
    pub(crate) fn request_id(&self) -> RequestId<'_> {
        RequestId {
            prefix: &self.id_prefix,
            n: self.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Forwards a request and relays the answer; upstream failures become
    /// Graph-shaped 502/504s.
    pub(crate) async fn relay_upstream(
        &self,
        request: Box<Request<ProxyBody>>,
    ) -> Response<ProxyBody> {
        let forwarded = self.forward(request).await;
        self.relayed(forwarded).await
    }

    /// Relays a forwarded answer, or answers its failure Graph-shaped.
    pub(crate) async fn relayed(
        &self,
        forwarded: Result<Response<UpstreamBody>, crate::upstream::UpstreamError>,
    ) -> Response<ProxyBody> {
        let error = match forwarded {
            Ok(response) => match relay(response).await {
                Ok(relayed) => return relayed,
                Err(error) => return body_failed(&error, &self.request_id()),
            },
            Err(error) => error,
        };
        let request_id = self.request_id();
        if error.is_upstreams() {
            tracing::warn!(request_id = %request_id, error = %error, "upstream request failed");
        } else {
            tracing::info!(request_id = %request_id, error = %error, "the client's request body failed");
        }
        GraphError::from(&error).into_response(request_id)
    }
}

/// A request id, `<prefix>-<n in hex>`, made into text only when shown:
/// every send gets one and few are ever shown (an info log line, an error
/// body), so a send does not pay for formatting it.
pub struct RequestId<'a> {
    prefix: &'a str,
    n: u64,
}

impl fmt::Display for RequestId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:x}", self.prefix, self.n)
    }
}

/// Why a reload was refused (the old config stays in force).
#[derive(Debug)]
pub enum ReloadError {
    /// sendgate was started without a config source to re-read.
    NoSource,
    Invalid(ConfigError),
    /// These keys changed, and only a restart applies them.
    NeedsRestart(Vec<&'static str>),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::NoSource => f.write_str("this sendgate has no config file to reload"),
            ReloadError::Invalid(err) => write!(f, "config error: {err}"),
            ReloadError::NeedsRestart(keys) => {
                write!(f, "{} changed; restart sendgate to apply", keys.join(", "))
            }
        }
    }
}

impl std::error::Error for ReloadError {}

/// Says at start what opening an older store changed, and warns while
/// identities sit in the scope that numbers without a portfolio shared
/// before scopes existed and that no number uses now.
fn report_migration(config: &Config, migration: &Migration) {
    if migration.send_pairs_to_claims > 0 {
        tracing::warn!(
            pairs = migration.send_pairs_to_claims,
            "pairs learned from sends by an older sendgate no longer resolve: they are kept as \
             claims of no number (see GET /admin/identities) until a signed webhook attests them"
        );
    }
    if migration.legacy_default_records > 0 && !config.has_portfolio(LEGACY_DEFAULT_SCOPE) {
        tracing::warn!(
            records = migration.legacy_default_records,
            "identities stored under the shared portfolio \"default\" answer for no number: \
             numbers without a portfolio are scopes of their own now. Give numbers \
             portfolio = \"default\" in config, or move the identities with \
             `sendgate move-scope --from default --to-number <id>` (README, \"Who is trusted\")"
        );
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

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn request_ids_read_as_prefix_dash_hex() {
        for (n, id) in [
            (0, "sg6a1f0c2d-0"),
            (15, "sg6a1f0c2d-f"),
            (16, "sg6a1f0c2d-10"),
            (0xabc, "sg6a1f0c2d-abc"),
            (u64::MAX, "sg6a1f0c2d-ffffffffffffffff"),
        ] {
            let prefix = "sg6a1f0c2d";
            assert_eq!(RequestId { prefix, n }.to_string(), id);
        }
    }
}
