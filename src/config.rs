//! Typed configuration: TOML text → merged onto the embedded defaults →
//! environment overrides → typed value → `validate()`.
//!
//! `config/sendgate.toml` is embedded in the binary and is the single source of
//! defaults, so a user's file only needs the keys it changes. Every error names
//! the key it is about, so `sendgate check-config` can print one clear line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::fingerprint::Fingerprint;
pub use crate::fleet::FleetConfig;
use crate::identity::{NUMBER_SCOPE_PREFIX, Scope};
use crate::send::policy::Policy;

/// The documented defaults, every key present.
pub const DEFAULTS: &str = include_str!("../config/sendgate.toml");

/// `store.path` in [`DEFAULTS`]: the store a plain `serve` keeps, which
/// `serve --sandbox` leaves alone.
pub const DEFAULT_STORE_PATH: &str = "sendgate-identities.redb";

/// Prefix of environment variables that override config keys.
const ENV_PREFIX: &str = "SENDGATE_";

/// The `SENDGATE_*` variables read on purpose that are not config keys:
/// every other one must name a setting, so that a misspelt override is an
/// error rather than silently ignored.
const NOT_SETTINGS: [&str; 5] = [
    Secrets::APP_SECRET,
    Secrets::VERIFY_TOKEN,
    Secrets::ADMIN_TOKEN,
    Secrets::FINGERPRINT_KEY,
    // The config file of every command (`--config`).
    "SENDGATE_CONFIG",
];

/// `Deserialize` and `Serialize` for an enum config spells as words, from one
/// table, with an error that lists the words whatever the wrong value was:
/// serde's derive lists them for a wrong word only, and says "invalid type:
/// unit variant, expected string only" for a number or a boolean.
macro_rules! words {
    ($name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $name {
            /// The words config may spell it with.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The value `text` spells, if it is one of the words.
            pub fn from_word(text: &str) -> Option<Self> {
                match text {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The word config spells it with.
            pub fn as_word(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_word())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl serde::de::Visitor<'_> for Visitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(&one_of(quoted($name::WORDS)))
                    }

                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        $name::from_word(text)
                            .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(text), &self))
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }
    };
}

/// Words quoted as they are written in TOML.
fn quoted(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| format!("{word:?}")).collect()
}

/// `a`, `a or b`, `a, b or c`: the allowed values in a sentence.
fn one_of(allowed: Vec<String>) -> String {
    match allowed.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub upstream: String,
    pub upstream_roots: RootStore,
    /// Extra PEM CA certificates for the upstream; empty for none.
    pub upstream_ca_file: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub pool_max_idle: usize,
    pub pool_idle_timeout_ms: u64,
    pub max_send_body_bytes: usize,
    /// Proxy worker threads, each with its own runtime; 0 for one per core.
    pub worker_threads: usize,
    /// Each worker thread runs on its own CPU.
    pub worker_pin_cpus: bool,
    pub connections: ConnectionsConfig,
    pub policy: PolicyConfig,
    /// Template name → category, consulted before Meta.
    pub templates: BTreeMap<String, Category>,
    /// Business phone number id → its settings.
    pub numbers: BTreeMap<String, NumberConfig>,
    /// Client name → its settings and the tokens that are this client.
    pub clients: BTreeMap<String, ClientConfig>,
    pub identity: IdentityConfig,
    pub cache: CacheConfig,
    pub store: StoreConfig,
    pub fleet: FleetConfig,
    pub limits: LimitsConfig,
    pub webhook: WebhookConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

/// How a limit acts when a send is over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitMode {
    /// Not enforced.
    Off,
    /// Refuse at once with 429 and `Retry-After`.
    Reject,
    /// Wait for room up to `max_wait_ms`, then refuse.
    Shape,
}

words!(LimitMode { Off => "off", Reject => "reject", Shape => "shape" });

/// Meta's throughput tiers per business number, or an explicit rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Throughput {
    PerSecond(u32),
    Tier(Tier),
}

/// A tier's name or a rate per second, as a number or as digits in a
/// string (what `SENDGATE_LIMITS__NUMBER__THROUGHPUT=200` gives, the
/// default being a name), with an error that says what is allowed.
impl<'de> Deserialize<'de> for Throughput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Throughput;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut allowed = quoted(Tier::WORDS);
                allowed.push("messages per second".to_owned());
                f.write_str(&one_of(allowed))
            }

            fn visit_u64<E: serde::de::Error>(self, rate: u64) -> Result<Throughput, E> {
                u32::try_from(rate)
                    .map(Throughput::PerSecond)
                    .map_err(|_| E::custom(format!("{rate} messages per second is too many")))
            }

            fn visit_i64<E: serde::de::Error>(self, rate: i64) -> Result<Throughput, E> {
                u64::try_from(rate)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(rate), &self))
                    .and_then(|rate| self.visit_u64(rate))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Throughput, E> {
                if let Some(tier) = Tier::from_word(text) {
                    return Ok(Throughput::Tier(tier));
                }
                match text.parse::<u64>() {
                    Ok(rate) => self.visit_u64(rate),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Str(text), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// 80 messages per second, the default.
    Standard,
    /// 1,000 per second, for large senders.
    High,
    /// 20 per second, for numbers shared with the WhatsApp Business app.
    Coexistence,
}

words!(Tier { Standard => "standard", High => "high", Coexistence => "coexistence" });

impl Throughput {
    pub fn per_second(self) -> u32 {
        match self {
            Throughput::PerSecond(rate) => rate,
            Throughput::Tier(Tier::Standard) => 80,
            Throughput::Tier(Tier::High) => 1000,
            Throughput::Tier(Tier::Coexistence) => 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// How often idle limiter state is dropped.
    pub retain_interval_secs: u64,
    pub number: NumberLimit,
    pub pair: PairLimit,
    pub client: ClientLimit,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NumberLimit {
    pub mode: LimitMode,
    pub throughput: Throughput,
    pub max_wait_ms: u64,
    /// How long a number pauses after Meta answers 130429.
    pub backoff_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PairLimit {
    pub mode: LimitMode,
    /// One send per this many milliseconds, on average.
    pub period_ms: u64,
    /// Sends that may borrow future quota at once.
    pub burst: u32,
    pub max_wait_ms: u64,
    /// Meta's 131056 pauses the pair 4^n s; n stops growing here.
    pub backoff_max_exponent: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientLimit {
    pub mode: LimitMode,
    pub per_second: u32,
    pub burst: u32,
    pub max_wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The identity store file; empty keeps identities in memory only.
    pub path: String,
}

/// `[fleet]`: the URL's scheme, a positive replica count, a CA file that
/// exists, a sane deadline.
fn validate_fleet(fleet: &FleetConfig) -> Result<(), ConfigError> {
    if fleet.enabled()
        && !(fleet.redis_url.starts_with("redis://") || fleet.redis_url.starts_with("rediss://"))
    {
        return Err(ConfigError::new(
            "fleet.redis_url",
            "must start with redis:// or rediss://",
        ));
    }
    if fleet.expected_replicas == 0 {
        return Err(ConfigError::new(
            "fleet.expected_replicas",
            "must be greater than 0",
        ));
    }
    if !fleet.ca_file.is_empty() && !Path::new(&fleet.ca_file).is_file() {
        return Err(ConfigError::new("fleet.ca_file", "no such file"));
    }
    if !(1..=60_000).contains(&fleet.timeout_ms) {
        return Err(ConfigError::new(
            "fleet.timeout_ms",
            "must be from 1 to 60000",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The path Meta calls (GET to verify, POST to deliver); empty disables the relay.
    pub path: String,
    /// The URL verified webhooks are forwarded to, unchanged.
    pub forward_to: String,
    pub timeout_ms: u64,
    pub max_body_bytes: usize,
}

impl WebhookConfig {
    pub fn enabled(&self) -> bool {
        !self.path.is_empty()
    }
}

/// How client connections are held (see `[connections]` in the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    pub backlog: u32,
    pub header_timeout_ms: u64,
    pub keepalive_timeout_ms: u64,
    /// 0 for a cap derived from the file-descriptor limit.
    pub max: usize,
}

impl ConnectionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        // The registry's clock counts milliseconds in 32 bits.
        const A_DAY_MS: u64 = 24 * 3600 * 1000;
        for (key, value) in [
            ("connections.header_timeout_ms", self.header_timeout_ms),
            (
                "connections.keepalive_timeout_ms",
                self.keepalive_timeout_ms,
            ),
        ] {
            if !(1..=A_DAY_MS).contains(&value) {
                return Err(ConfigError::new(key, "must be from 1 to 86400000 (a day)"));
            }
        }
        if self.backlog == 0 {
            return Err(ConfigError::new(
                "connections.backlog",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin API listens; empty disables it.
    pub listen: String,
    /// `/metrics` without the admin token, for scrapers that cannot send
    /// one (the counts name no person and no secret).
    pub public_metrics: bool,
    /// Serve the admin API over TLS too, with `[tls]`'s certificate (and
    /// no client certificate asked for: probes present none).
    pub tls: bool,
}

/// TLS on the listeners (see `[tls]` in the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM; with `key`, the proxy speaks HTTPS.
    pub cert: String,
    /// The private key, PEM.
    pub key: String,
    /// CA certificates, PEM: set, clients must present a certificate one
    /// of them signed.
    pub client_ca: String,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() || !self.key.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            if !self.client_ca.is_empty() {
                return Err(ConfigError::new(
                    "tls.client_ca",
                    "needs tls.cert and tls.key: client certificates are asked for over TLS",
                ));
            }
            return Ok(());
        }
        // The files themselves are read where they are used
        // (`tls::Terminator`), by check-config, serve and every reload alike.
        for (key, path) in [("tls.cert", &self.cert), ("tls.key", &self.key)] {
            if path.is_empty() {
                return Err(ConfigError::new(
                    key,
                    "a PEM file is needed (both cert and key)",
                ));
            }
        }
        Ok(())
    }
}

/// How sendgate stops (see `[shutdown]` in the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After the stop signal, how long `/readyz` fails while everything is
    /// still served, for the orchestrator to stop routing here first.
    pub delay_ms: u64,
    /// Then, how long in-flight requests get to finish once the listeners
    /// have closed.
    pub drain_timeout_ms: u64,
}

impl ShutdownConfig {
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // Longer than an orchestrator waits before it kills the process
        // anyway (Kubernetes' grace period, systemd's stop timeout).
        const AN_HOUR_MS: u64 = 3600 * 1000;
        if self.delay_ms > AN_HOUR_MS || self.drain_timeout_ms > AN_HOUR_MS {
            return Err(ConfigError::new(
                "shutdown",
                "delay_ms and drain_timeout_ms must be at most 3600000 (an hour)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootStore {
    Webpki,
    System,
}

words!(RootStore { Webpki => "webpki", System => "system" });

/// What sendgate believes about phone ↔ BSUID pairs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Keep the pair a successful send names (a phone in `to`, a BSUID in
    /// `recipient`), for the sending number only, until a webhook attests
    /// or contradicts it. Off: a send teaches nothing, because Meta
    /// delivers to `to` and ignores `recipient`, so its 2xx proves nothing.
    pub learn_from_sends: bool,
}

/// What becomes of a Graph batch request that holds sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPolicy {
    /// Refuse it: senders send one message per request.
    Refuse,
    /// Judge each send in it and its limits; forward the batch untouched
    /// only when every send would go out as written.
    Inspect,
}

words!(BatchPolicy { Refuse => "refuse", Inspect => "inspect" });

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Rewrite and block.
    Enforce,
    /// Forward unchanged; report what enforce would do.
    Report,
}

words!(Mode { Enforce => "enforce", Report => "report" });

/// A template category as Meta names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
}

words!(Category { Marketing => "MARKETING", Utility => "UTILITY", Authentication => "AUTHENTICATION" });

/// What a template of unknown category is treated as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownCategory {
    Allow,
    Marketing,
    Authentication,
}

words!(UnknownCategory { Allow => "allow", Marketing => "marketing", Authentication => "authentication" });

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    pub mode: Mode,
    pub prefer_phone: bool,
    pub block_usernames: bool,
    pub auth_templates_require_phone: bool,
    pub campaign_requires_phone: bool,
    pub unknown_category: UnknownCategory,
    /// Graph batch requests (`POST /` with `batch`) that hold sends.
    pub batch: BatchPolicy,
}

impl PolicyConfig {
    /// The switches the pure decision needs.
    pub fn policy(&self) -> Policy {
        Policy {
            prefer_phone: self.prefer_phone,
            block_usernames: self.block_usernames,
            auth_templates_require_phone: self.auth_templates_require_phone,
            campaign_requires_phone: self.campaign_requires_phone,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberConfig {
    /// The WhatsApp Business Account that owns the number's templates.
    pub waba_id: Option<String>,
    /// Numbers in one portfolio share BSUIDs and identity mappings; a
    /// number in none is a scope of its own.
    #[serde(default)]
    pub portfolio: Option<String>,
    /// This number's throughput, when it differs from `limits.number`.
    #[serde(default)]
    pub throughput: Option<Throughput>,
    /// The fingerprints of the tokens that may send for this number; empty
    /// for any token.
    #[serde(default)]
    pub tokens: Vec<Fingerprint>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Every send of this client is a campaign send.
    #[serde(default)]
    pub campaign: bool,
    /// This client's share, when it differs from `limits.client`.
    #[serde(default)]
    pub per_second: Option<u32>,
    #[serde(default)]
    pub burst: Option<u32>,
    /// The fingerprints of the tokens that are this client. A client that
    /// lists none is only a label a sender may put on itself.
    #[serde(default)]
    pub tokens: Vec<Fingerprint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub identity_capacity: u64,
    pub identity_ttl_secs: u64,
    pub template_capacity: u64,
    pub template_ttl_secs: u64,
    pub template_negative_ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub show_identifiers: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

words!(LogFormat { Text => "text", Json => "json" });

/// Secrets, which come from the environment only, never from the file.
#[derive(Clone, Default)]
pub struct Secrets {
    /// `SENDGATE_APP_SECRET`: the Meta app secret that signs webhooks.
    pub app_secret: Option<String>,
    /// `SENDGATE_VERIFY_TOKEN`: the token Meta echoes in the webhook handshake.
    pub verify_token: Option<String>,
    /// `SENDGATE_ADMIN_TOKEN`: the bearer token of the admin API.
    pub admin_token: Option<String>,
    /// `SENDGATE_FINGERPRINT_KEY`: the key senders' token fingerprints are
    /// made with (a fixed one when unset).
    pub fingerprint_key: Option<String>,
}

impl Secrets {
    const APP_SECRET: &str = "SENDGATE_APP_SECRET";
    const VERIFY_TOKEN: &str = "SENDGATE_VERIFY_TOKEN";
    const ADMIN_TOKEN: &str = "SENDGATE_ADMIN_TOKEN";
    const FINGERPRINT_KEY: &str = "SENDGATE_FINGERPRINT_KEY";

    /// Reads the secrets from environment pairs; empty values count as unset.
    pub fn from_env(env: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut secrets = Secrets::default();
        for (name, value) in env {
            let slot = match name.as_str() {
                Self::APP_SECRET => &mut secrets.app_secret,
                Self::VERIFY_TOKEN => &mut secrets.verify_token,
                Self::ADMIN_TOKEN => &mut secrets.admin_token,
                Self::FINGERPRINT_KEY => &mut secrets.fingerprint_key,
                _ => continue,
            };
            *slot = Some(value).filter(|value| !value.is_empty());
        }
        secrets
    }

    /// What a config needs from the environment and does not have.
    pub fn check(&self, config: &Config) -> Result<(), ConfigError> {
        let needed = [
            (Self::APP_SECRET, &self.app_secret),
            (Self::VERIFY_TOKEN, &self.verify_token),
        ];
        for (name, secret) in needed {
            if config.webhook.enabled() && secret.is_none() {
                return Err(ConfigError::new(name, "must be set when webhook.path is"));
            }
        }
        Ok(())
    }
}

/// Never prints a secret, only whether it is set.
impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |secret: &Option<String>| if secret.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Secrets")
            .field("app_secret", &set(&self.app_secret))
            .field("verify_token", &set(&self.verify_token))
            .field("admin_token", &set(&self.admin_token))
            .field("fingerprint_key", &set(&self.fingerprint_key))
            .finish()
    }
}

/// A configuration problem, naming the key (or file) it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads a config file (or only the defaults when `path` is `None`) with
    /// the process environment's overrides, and validates it.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|err| ConfigError::new(path.display().to_string(), err.to_string()))?,
            None => String::new(),
        };
        let origin = path.map_or_else(|| "(file)".into(), |path| path.display().to_string());
        Self::from_named_sources(&text, &origin, std::env::vars())
    }

    /// Builds a config from file text and environment pairs. Tests call this
    /// with a map instead of the process environment.
    pub fn from_sources(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::from_named_sources(text, "(file)", env)
    }

    /// [`Config::from_sources`] with the name of the file `text` came from,
    /// which a syntax error names with the line and column.
    fn from_named_sources(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let defaults: Table = DEFAULTS
            .parse()
            .expect("the embedded defaults are valid TOML");
        let user: Table = text
            .parse()
            .map_err(|err: toml::de::Error| syntax_error(text, origin, &err))?;
        let mut merged = defaults.clone();
        merge(&mut merged, user);
        for (name, value) in env {
            apply_env_override(&mut merged, &defaults, &name, &value)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(Value::Table(merged)).map_err(|err| {
                let key = err.path().to_string();
                let mut reason = one_line(&err.into_inner().to_string());
                // toml repeats the key at the end; it is already in front.
                if let Some(trimmed) = reason.strip_suffix(&format!(" in `{key}`")) {
                    reason = trimmed.to_owned();
                }
                ConfigError::new(key, reason)
            })?;
        config.validate()?;
        Ok(config)
    }

    /// The log format the config file text and the environment ask for,
    /// read as far as they go: a config too broken to load still says how
    /// the error that it is should be printed. Text unless JSON is asked.
    pub fn log_format_of(text: &str, env: impl IntoIterator<Item = (String, String)>) -> LogFormat {
        // Not a whole load: the config may be what failed, and only this
        // one key matters (the environment's wins, as in a load).
        let from_env = env.into_iter().filter_map(|(name, value)| {
            let key = name.strip_prefix(ENV_PREFIX)?;
            key.eq_ignore_ascii_case("LOG__FORMAT").then_some(value)
        });
        let from_env = from_env.last();
        let file: Option<Table> = text.parse().ok();
        let from_file = file
            .as_ref()
            .and_then(|file| file.get("log")?.get("format")?.as_str());
        from_env
            .as_deref()
            .or(from_file)
            .and_then(LogFormat::from_word)
            .unwrap_or(LogFormat::Text)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.upstream_uri()?;
        validate_fleet(&self.fleet)?;
        let positive = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("pool_idle_timeout_ms", self.pool_idle_timeout_ms),
            ("cache.identity_capacity", self.cache.identity_capacity),
            ("cache.identity_ttl_secs", self.cache.identity_ttl_secs),
            ("cache.template_capacity", self.cache.template_capacity),
            ("cache.template_ttl_secs", self.cache.template_ttl_secs),
            (
                "cache.template_negative_ttl_secs",
                self.cache.template_negative_ttl_secs,
            ),
        ];
        if !self.upstream_ca_file.is_empty() && !Path::new(&self.upstream_ca_file).is_file() {
            return Err(ConfigError::new("upstream_ca_file", "no such file"));
        }
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::new(*key, "must be greater than 0"));
        }
        if !(1024..=64 << 20).contains(&self.max_send_body_bytes) {
            return Err(ConfigError::new(
                "max_send_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        for (id, number) in &self.numbers {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::new(
                    format!("numbers.{id}"),
                    "a phone number id is digits only",
                ));
            }
            if let Some(portfolio) = &number.portfolio {
                check_portfolio_name(portfolio).map_err(|reason| {
                    ConfigError::new(format!("numbers.{id}.portfolio"), reason)
                })?;
            }
        }
        if self.webhook.enabled() {
            if !self.webhook.path.starts_with('/') {
                return Err(ConfigError::new("webhook.path", "must start with /"));
            }
            self.webhook_forward_uri()?;
            if self.webhook.timeout_ms == 0 || self.webhook.max_body_bytes == 0 {
                return Err(ConfigError::new(
                    "webhook",
                    "timeout_ms and max_body_bytes must be greater than 0",
                ));
            }
        }
        self.admin_listen()?;
        self.connections.validate()?;
        self.shutdown.validate()?;
        self.tls.validate()?;
        if self.admin.tls && !self.tls.enabled() {
            return Err(ConfigError::new(
                "admin.tls",
                "needs tls.cert and tls.key: the admin listener uses the same certificate",
            ));
        }
        self.validate_limits()?;
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(ConfigError::new("log.level", "not a valid log filter"));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        let positive = [
            ("limits.retain_interval_secs", limits.retain_interval_secs),
            (
                "limits.number.throughput",
                u64::from(limits.number.throughput.per_second()),
            ),
            ("limits.pair.period_ms", limits.pair.period_ms),
            ("limits.pair.burst", u64::from(limits.pair.burst)),
            (
                "limits.client.per_second",
                u64::from(limits.client.per_second),
            ),
            ("limits.client.burst", u64::from(limits.client.burst)),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::new(*key, "must be greater than 0"));
        }
        for (id, number) in &self.numbers {
            if number.throughput.is_some_and(|t| t.per_second() == 0) {
                return Err(ConfigError::new(
                    format!("numbers.{id}.throughput"),
                    "must be greater than 0",
                ));
            }
        }
        for (name, client) in &self.clients {
            if client.per_second == Some(0) || client.burst == Some(0) {
                return Err(ConfigError::new(
                    format!("clients.{name}"),
                    "per_second and burst must be greater than 0",
                ));
            }
            let own_share = client.per_second.is_some() || client.burst.is_some();
            // With client certificates, a certificate naming the client is
            // the proof; a header alone never gets a share.
            if own_share && client.tokens.is_empty() && self.tls.client_ca.is_empty() {
                return Err(ConfigError::new(
                    format!("clients.{name}.tokens"),
                    "a client with a share of its own must list its tokens' fingerprints \
                     (`sendgate fingerprint`) or be named by client certificates \
                     (tls.client_ca), or any sender could claim the share by header",
                ));
            }
        }
        // A token has one share: were it given two, a header choosing
        // between them would double it.
        let shares = self
            .clients
            .iter()
            .filter(|(_, client)| client.per_second.is_some() || client.burst.is_some());
        let mut seen: BTreeMap<Fingerprint, &str> = BTreeMap::new();
        for (name, client) in shares {
            for token in &client.tokens {
                if let Some(other) = seen.insert(*token, name) {
                    return Err(ConfigError::new(
                        format!("clients.{name}.tokens"),
                        format!("{token} already has a share of its own in clients.{other}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The keys that differ between `self` and `new` and that only a restart
    /// can apply: they shaped listeners, clients, caches or the store.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let checks = [
            ("listen", self.listen != new.listen),
            ("upstream", self.upstream != new.upstream),
            ("upstream_roots", self.upstream_roots != new.upstream_roots),
            (
                "upstream_ca_file",
                self.upstream_ca_file != new.upstream_ca_file,
            ),
            (
                "connect_timeout_ms",
                self.connect_timeout_ms != new.connect_timeout_ms,
            ),
            (
                "request_timeout_ms",
                self.request_timeout_ms != new.request_timeout_ms,
            ),
            ("pool_max_idle", self.pool_max_idle != new.pool_max_idle),
            ("worker_threads", self.worker_threads != new.worker_threads),
            ("connections", self.connections != new.connections),
            (
                "worker_pin_cpus",
                self.worker_pin_cpus != new.worker_pin_cpus,
            ),
            (
                "pool_idle_timeout_ms",
                self.pool_idle_timeout_ms != new.pool_idle_timeout_ms,
            ),
            ("cache", self.cache != new.cache),
            ("store", self.store != new.store),
            ("fleet", self.fleet != new.fleet),
            ("webhook", self.webhook != new.webhook),
            ("admin", self.admin != new.admin),
            ("tls", self.tls.enabled() != new.tls.enabled()),
            ("shutdown", self.shutdown != new.shutdown),
            ("log", self.log != new.log),
        ];
        checks
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| *key)
            .collect()
    }

    /// The upstream base URL: http or https, a host, and no path.
    pub fn upstream_uri(&self) -> Result<Uri, ConfigError> {
        let uri = http_url("upstream", &self.upstream)?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(ConfigError::new(
                "upstream",
                "must be a base URL with no path or query",
            ));
        }
        Ok(uri)
    }

    /// Where verified webhooks go, when the relay is on.
    pub fn webhook_forward_uri(&self) -> Result<Uri, ConfigError> {
        http_url("webhook.forward_to", &self.webhook.forward_to)
    }

    /// The admin listener's address, when it is on.
    pub fn admin_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.admin.listen.as_str() {
            "" => Ok(None),
            text => text.parse().map(Some).map_err(|_| {
                ConfigError::new("admin.listen", "not an address like 127.0.0.1:9090")
            }),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The identity scope of a business number: the portfolio config puts
    /// it in, or the number alone (`number:<id>`), so that numbers never
    /// share identities by accident.
    pub fn scope_of<'a>(&'a self, phone_number_id: &'a str) -> Scope<'a> {
        match self
            .numbers
            .get(phone_number_id)
            .and_then(|number| number.portfolio.as_deref())
        {
            Some(portfolio) => Scope::Portfolio(portfolio),
            None => Scope::Number(phone_number_id),
        }
    }

    /// True when some number is configured into `portfolio`.
    pub fn has_portfolio(&self, portfolio: &str) -> bool {
        self.numbers
            .values()
            .any(|number| number.portfolio.as_deref() == Some(portfolio))
    }

    /// True when a number restricts its sends to some tokens and `sender`
    /// holds none of them.
    pub fn number_refuses(&self, phone_number_id: &str, sender: Option<Fingerprint>) -> bool {
        self.numbers.get(phone_number_id).is_some_and(|number| {
            !number.tokens.is_empty() && !sender.is_some_and(|fp| number.tokens.contains(&fp))
        })
    }

    /// True when some policy needs a sender's token fingerprint: a client
    /// limit, a client or number tied to tokens.
    pub fn needs_fingerprints(&self) -> bool {
        self.limits.client.mode != LimitMode::Off
            || self
                .clients
                .values()
                .any(|client| !client.tokens.is_empty())
            || self
                .numbers
                .values()
                .any(|number| !number.tokens.is_empty())
    }

    /// The WABA whose templates a business number sends.
    pub fn waba_of(&self, phone_number_id: &str) -> Option<&str> {
        self.numbers.get(phone_number_id)?.waba_id.as_deref()
    }

    /// True when the named client is a campaign tool.
    pub fn is_campaign_client(&self, client: &str) -> bool {
        self.clients
            .get(client)
            .is_some_and(|client| client.campaign)
    }
}

/// A portfolio name: a scope key in the identity store, so not empty, no
/// control characters, and never spelled like a number's own scope.
pub fn check_portfolio_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.chars().any(char::is_control) {
        return Err("must not hold control characters");
    }
    if name.starts_with(NUMBER_SCOPE_PREFIX) {
        return Err("must not start with `number:` (how a number without a portfolio is scoped)");
    }
    Ok(())
}

/// An absolute http(s) URL with a host.
fn http_url(key: &str, text: &str) -> Result<Uri, ConfigError> {
    let uri: Uri = text
        .parse()
        .map_err(|_| ConfigError::new(key, "not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(ConfigError::new(key, "must start with http:// or https://"));
    }
    if uri.host().is_none() {
        return Err(ConfigError::new(key, "has no host"));
    }
    Ok(uri)
}

/// Deep-merges `overlay` onto `base`: tables merge, anything else replaces.
fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base_table)), Value::Table(overlay_table)) => {
                merge(base_table, overlay_table);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies `SENDGATE_A__B=value` to key `a.b`, which the defaults must hold
/// as a scalar. Any other `SENDGATE_*` variable is an error naming the
/// closest setting, unless it is one read on purpose ([`NOT_SETTINGS`]).
fn apply_env_override(
    merged: &mut Table,
    defaults: &Table,
    name: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let Some(path) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if NOT_SETTINGS.contains(&name) {
        return Ok(());
    }
    let path: Vec<String> = path
        .to_ascii_lowercase()
        .split("__")
        .map(str::to_owned)
        .collect();
    let (leaf, tables) = path.split_last().expect("split yields at least one part");
    let mut default_table = defaults;
    // Where the value goes, while the user's file keeps the tables the
    // defaults have (a file that does not is refused when deserialized).
    let mut target = Some(merged);
    for (depth, table) in tables.iter().enumerate() {
        match default_table.get(table) {
            Some(Value::Table(entries)) if entries.is_empty() => {
                return Err(map_entry_error(name, &path[..=depth]));
            }
            Some(Value::Table(inner)) => {
                default_table = inner;
                target = target.and_then(|t| match t.get_mut(table) {
                    Some(Value::Table(t)) => Some(t),
                    _ => None,
                });
            }
            _ => return Err(not_a_setting(name, defaults)),
        }
    }
    let typed = match default_table.get(leaf) {
        Some(Value::String(_)) => Value::String(value.to_owned()),
        Some(Value::Integer(_)) => value.trim().parse().map(Value::Integer).map_err(|_| {
            ConfigError::new(name, format!("expected a whole number, got {value:?}"))
        })?,
        Some(Value::Boolean(_)) => value.trim().parse().map(Value::Boolean).map_err(|_| {
            ConfigError::new(name, format!("expected true or false, got {value:?}"))
        })?,
        Some(Value::Table(entries)) if entries.is_empty() => {
            return Err(map_entry_error(name, &path));
        }
        _ => return Err(not_a_setting(name, defaults)),
    };
    if let Some(target) = target {
        target.insert(leaf.clone(), typed);
    }
    Ok(())
}

/// A variable under a section of named entries (`[numbers."<id>"]`,
/// `[clients.<name>]`, `[templates]`): those have no variables, since an
/// environment variable's name cannot keep a name's case or dots.
fn map_entry_error(name: &str, section: &[String]) -> ConfigError {
    ConfigError::new(
        name,
        format!(
            "not a setting: [{}] entries are set in the config file only",
            section.join(".")
        ),
    )
}

/// A `SENDGATE_*` variable that names no setting, with the closest name
/// when one is close enough to be a slip of the keyboard.
fn not_a_setting(name: &str, defaults: &Table) -> ConfigError {
    let mut known: Vec<String> = NOT_SETTINGS.iter().map(|&n| n.to_owned()).collect();
    setting_variables(defaults, ENV_PREFIX, &mut known);
    let typed = name.to_ascii_uppercase();
    let closest = known
        .iter()
        .map(|candidate| (edit_distance(&typed, candidate), candidate))
        .min();
    let typed_len = typed.len() - ENV_PREFIX.len();
    match closest {
        Some((distance, candidate)) if distance <= (typed_len / 3).max(2) => {
            ConfigError::new(name, format!("not a setting; did you mean {candidate}?"))
        }
        _ => ConfigError::new(
            name,
            "not a setting (a setting's variable is SENDGATE_ and its key in \
             config/sendgate.toml, tables joined by __, e.g. SENDGATE_POLICY__MODE)",
        ),
    }
}

/// The variable of every scalar setting under `table`.
fn setting_variables(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let name = format!("{prefix}{}", key.to_ascii_uppercase());
        match value {
            Value::Table(inner) => setting_variables(inner, &format!("{name}__"), out),
            _ => out.push(name),
        }
    }
}

/// Levenshtein distance: the fewest single-character insertions,
/// deletions and substitutions that turn `a` into `b`. Names are short
/// and errors rare, so the plain two-row table is plenty.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, a_char) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// A TOML syntax error as `file:line:column: what`, like a compiler's.
fn syntax_error(text: &str, origin: &str, err: &toml::de::Error) -> ConfigError {
    let what = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let Some(at) = err.span().map(|span| span.start.min(text.len())) else {
        return ConfigError::new(origin, what);
    };
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |start| start.chars().count())
        + 1;
    ConfigError::new(format!("{origin}:{line}:{column}"), what)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn embedded_defaults_are_a_valid_config() {
        let config = Config::from_sources("", env(&[])).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.upstream, "https://graph.facebook.com");
        assert_eq!(config.policy.mode, Mode::Enforce);
        assert_eq!(config.policy.unknown_category, UnknownCategory::Allow);
        assert!(config.numbers.is_empty());
        assert!(!config.log.show_identifiers);
        assert!(!config.worker_pin_cpus);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let text = r#"
            listen = "127.0.0.1:9000"
            [policy]
            mode = "report"
            [templates]
            otp_login = "AUTHENTICATION"
            [numbers."123456"]
            waba_id = "999"
            portfolio = "acme"
            [clients.blaster]
            campaign = true
        "#;
        let config = Config::from_sources(
            text,
            env(&[
                ("SENDGATE_LISTEN", "127.0.0.1:9100"),
                ("SENDGATE_CACHE__TEMPLATE_TTL_SECS", "5"),
                ("SENDGATE_APP_SECRET", "not a key"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(config.policy.mode, Mode::Report);
        assert!(
            config.policy.prefer_phone,
            "untouched keys keep their default"
        );
        assert_eq!(config.cache.template_ttl_secs, 5);
        assert_eq!(config.templates["otp_login"], Category::Authentication);
        assert_eq!(config.scope_of("123456").key(), "acme");
        assert_eq!(
            config.scope_of("777").key(),
            "number:777",
            "a scope of its own"
        );
        assert_eq!(config.waba_of("123456"), Some("999"));
        assert!(config.is_campaign_client("blaster"));
        assert!(!config.is_campaign_client("crm"));
    }

    #[test]
    fn errors_name_the_key() {
        let key_of = |text: &str| Config::from_sources(text, env(&[])).unwrap_err().key;
        assert_eq!(key_of("[policy]\nmode = \"enforc\""), "policy.mode");
        assert_eq!(key_of("lisen = \"x\""), "lisen");
        assert_eq!(key_of("listen = \"nowhere\""), "listen");
        assert_eq!(key_of("upstream = \"ftp://x\""), "upstream");
        assert_eq!(
            key_of("upstream = \"https://graph.facebook.com/v21.0\""),
            "upstream"
        );
        assert_eq!(key_of("[templates]\nx = \"PROMO\""), "templates.x");
        assert_eq!(key_of("[numbers.abc]"), "numbers.abc");
        assert_eq!(key_of("connect_timeout_ms = 0"), "connect_timeout_ms");
        assert_eq!(key_of("max_send_body_bytes = 10"), "max_send_body_bytes");
        assert_eq!(
            key_of("[cache]\nidentity_ttl_secs = -1"),
            "cache.identity_ttl_secs"
        );
        assert_eq!(key_of("listen = "), "(file):1:10");
        assert_eq!(key_of("[policy]\nmode = report\n"), "(file):2:8");
        assert_eq!(
            key_of("upstream_ca_file = \"/no/such.pem\""),
            "upstream_ca_file"
        );
        let err = Config::from_sources("", env(&[("SENDGATE_CONNECT_TIMEOUT_MS", "soon")]));
        assert_eq!(err.unwrap_err().key, "SENDGATE_CONNECT_TIMEOUT_MS");
    }

    #[test]
    fn trust_settings_are_checked() {
        let key_of = |text: &str| Config::from_sources(text, env(&[])).unwrap_err().key;
        assert_eq!(
            key_of("[clients.big]\nper_second = 10\n"),
            "clients.big.tokens",
            "a share needs tokens"
        );
        assert_eq!(
            key_of("[clients.big]\ntokens = [\"nope\"]\n"),
            "clients.big.tokens[0]"
        );
        let twice = "[clients.a]\nper_second = 1\ntokens = [\"00000000000000aa\"]\n\
                     [clients.b]\nburst = 9\ntokens = [\"00000000000000aa\"]\n";
        assert_eq!(key_of(twice), "clients.b.tokens");
        assert_eq!(
            key_of("[numbers.\"1\"]\nportfolio = \"number:2\"\n"),
            "numbers.1.portfolio"
        );
        assert_eq!(
            key_of("[numbers.\"1\"]\nportfolio = \"\"\n"),
            "numbers.1.portfolio"
        );
        assert_eq!(key_of("[policy]\nbatch = \"allow\"\n"), "policy.batch");
        let config = Config::from_sources(
            "[clients.tool]\ncampaign = true\n[identity]\nlearn_from_sends = true\n",
            env(&[]),
        )
        .unwrap();
        assert!(config.identity.learn_from_sends);
        assert!(!config.needs_fingerprints(), "a label needs no fingerprint");
    }

    #[test]
    fn unknown_key_error_says_which() {
        let err = Config::from_sources("lisen = \"x\"", env(&[])).unwrap_err();
        assert!(err.reason.contains("lisen"), "{err}");
    }

    #[test]
    fn the_fleet_keys_change_only_with_a_restart() {
        let before = Config::from_sources("", env(&[])).unwrap();
        let after = Config::from_sources(
            "[fleet]\nredis_url = \"redis://127.0.0.1:6379/0\"\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(before.restart_only_changes(&after), ["fleet"]);
        let err = Config::from_sources("[fleet]\nredis_url = \"http://x\"\n", env(&[]));
        assert_eq!(err.unwrap_err().key, "fleet.redis_url");
    }

    #[test]
    fn a_throughput_is_a_tier_or_a_rate_in_either_spelling() {
        let rate = |text: &str, vars: &[(&str, &str)]| {
            Config::from_sources(text, env(vars)).map(|c| c.limits.number.throughput.per_second())
        };
        assert_eq!(rate("", &[]).unwrap(), 80);
        let by_env = [("SENDGATE_LIMITS__NUMBER__THROUGHPUT", "200")];
        assert_eq!(
            rate("", &by_env).unwrap(),
            200,
            "the README allows a number"
        );
        assert_eq!(rate("[limits.number]\nthroughput = 5\n", &[]).unwrap(), 5);
        assert_eq!(
            rate("[limits.number]\nthroughput = \"high\"\n", &[]).unwrap(),
            1000
        );
        let err = rate("[limits.number]\nthroughput = \"fast\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "limits.number.throughput");
        let message = err.to_string();
        assert!(
            message.contains("\"standard\", \"high\", \"coexistence\" or messages per second"),
            "{message}"
        );
        assert!(!message.contains("untagged"), "{message}");
    }

    #[test]
    fn a_misspelt_environment_variable_is_an_error_naming_the_closest_setting() {
        let err_of = |name: &str| {
            Config::from_sources("", env(&[(name, "enforce")]))
                .map(|_| ())
                .unwrap_err()
        };
        let err = err_of("SENDGATE_POLICY__MDOE");
        assert_eq!(err.key, "SENDGATE_POLICY__MDOE");
        assert_eq!(
            err.reason,
            "not a setting; did you mean SENDGATE_POLICY__MODE?"
        );
        assert!(
            err_of("SENDGATE_LISTN")
                .reason
                .ends_with("did you mean SENDGATE_LISTEN?")
        );
        assert!(
            err_of("SENDGATE_LIMITS__NUMBR__MODE")
                .reason
                .ends_with("did you mean SENDGATE_LIMITS__NUMBER__MODE?")
        );
        assert!(
            err_of("SENDGATE_ADMIN_TOKNE")
                .reason
                .ends_with("did you mean SENDGATE_ADMIN_TOKEN?"),
            "the secrets are among the names suggested"
        );
        let far = err_of("SENDGATE_ZZZZZZZZZZZZZZZZ");
        assert!(!far.reason.contains("did you mean"), "{far}");
        // A section is not a setting, nor is a key below a setting.
        assert_eq!(err_of("SENDGATE_POLICY").key, "SENDGATE_POLICY");
        assert_eq!(err_of("SENDGATE_LISTEN__PORT").key, "SENDGATE_LISTEN__PORT");
        // Entries of map sections are set in the file only, and said so.
        for name in [
            "SENDGATE_NUMBERS__123__WABA_ID",
            "SENDGATE_CLIENTS__CRM__CAMPAIGN",
            "SENDGATE_TEMPLATES__OTP",
        ] {
            let err = err_of(name);
            assert_eq!(err.key, name);
            assert!(err.reason.contains("config file"), "{err}");
        }
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("MODE", "MODE"), 0);
        assert_eq!(edit_distance("MDOE", "MODE"), 2);
        assert_eq!(edit_distance("LISTN", "LISTEN"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn the_variables_read_on_purpose_are_not_settings_and_are_accepted() {
        let read = [
            "SENDGATE_APP_SECRET",
            "SENDGATE_VERIFY_TOKEN",
            "SENDGATE_ADMIN_TOKEN",
            "SENDGATE_FINGERPRINT_KEY",
            "SENDGATE_CONFIG",
        ];
        let pairs: Vec<(&str, &str)> = read.iter().map(|name| (*name, "x")).collect();
        Config::from_sources("", env(&pairs)).unwrap();
        let secrets = Secrets::from_env(env(&pairs));
        assert_eq!(
            format!("{secrets:?}").matches("<set>").count(),
            4,
            "each secret is read: {secrets:?}"
        );
        // Not the prefix: not ours.
        Config::from_sources("", env(&[("SENDGATEPOLICY__MDOE", "x"), ("OTHER", "x")])).unwrap();
    }

    #[test]
    fn the_log_format_is_read_from_a_config_that_does_not_load() {
        let format = |text: &str, vars: &[(&str, &str)]| Config::log_format_of(text, env(vars));
        let json = [("SENDGATE_LOG__FORMAT", "json")];
        assert_eq!(format("", &[]), LogFormat::Text);
        assert_eq!(format("[log]\nformat = \"json\"\n", &[]), LogFormat::Json);
        assert_eq!(format("", &json), LogFormat::Json);
        // Invalid elsewhere, or not TOML at all.
        let bad_key = "lisen = 1\n[log]\nformat = \"json\"\n";
        assert_eq!(format(bad_key, &[]), LogFormat::Json);
        assert_eq!(format("listen = \n", &json), LogFormat::Json);
        assert_eq!(
            format(
                "[log]\nformat = \"json\"\n",
                &[("SENDGATE_LOG__FORMAT", "text")]
            ),
            LogFormat::Text,
            "the environment wins over the file"
        );
    }

    #[test]
    fn the_default_store_path_is_the_embedded_one() {
        let config = Config::from_sources("", env(&[])).unwrap();
        assert_eq!(config.store.path, DEFAULT_STORE_PATH);
    }
}
