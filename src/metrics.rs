//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! Labels are bounded on purpose: a decision's verb and reason, an HTTP
//! status, a Meta error code, a limit's name. Never an identifier, a number
//! id or a client name, which would make the series unbounded.
//!
//! Every family is on the first scrape: the label sets known ahead (limits,
//! outcomes, cache results) are made at 0 at start, and a family whose
//! labels are open-ended (a status, a Graph error code) is described by its
//! `# HELP` and `# TYPE` lines until its first series.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The limits a send can be refused by: `LimitKind::as_str` in `limits`,
/// spelled here because `limits` sits above this module (it would make an
/// import circle through `config` and `identity`).
const LIMIT_NAMES: [&str; 3] = ["number", "pair", "client"];

/// A family registered so that it is described even with no series yet:
/// prometheus-client leaves an empty family out of the exposition
/// altogether, and OpenMetrics allows a family with no samples.
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// How a configuration reload ends.
pub(crate) const RELOAD_SUCCESS: &str = "success";
pub(crate) const RELOAD_FAILURE: &str = "failure";
const RELOAD_OUTCOMES: [&str; 2] = [RELOAD_SUCCESS, RELOAD_FAILURE];

/// The `limit` label of a shaped send's wait, counted once whichever limit
/// made it.
pub(crate) const ANY_LIMIT: &str = "any";

/// A request, by route and what sendgate decided.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// `send` or `passthrough`.
    pub(crate) route: &'static str,
    /// The decision's verb: `forwarded`, `rewritten`, `resolved`, `blocked`,
    /// `limited`, `would-block`, … (`none` for passthrough).
    pub(crate) decision: &'static str,
    /// The block reason or rewrite, `none` when there is none.
    pub(crate) reason: &'static str,
}

/// Every decision verb and reason a label can carry. Labels are matched
/// against these static strings so that counting a request allocates
/// nothing; anything else (which would be a bug) counts as `other`.
const LABEL_WORDS: &[&str] = &[
    "none",
    "forwarded",
    "rewritten",
    "resolved",
    "blocked",
    "limited",
    "would-block",
    "would-rewrite",
    "would-resolve",
    "to->recipient",
    "recipient->to",
    "bsuid->phone",
    "username_target",
    "invalid_recipient",
    "missing_recipient",
    "conflicting_recipients",
    "auth_template_needs_phone",
    "bid_spec_needs_phone",
    "campaign_needs_phone",
    "malformed_json",
    "not_an_object",
    "duplicate_field",
    "unreadable_body",
    "body_too_large",
    "number",
    "pair",
    "client",
];

/// A request's labels: the first decision of `label` and its reason.
fn request_labels(route: &'static str, label: &str) -> RequestLabels {
    let first = label.split(", ").next().unwrap_or(label);
    let (decision, reason) = first.split_once(": ").unwrap_or((first, "none"));
    RequestLabels {
        route,
        decision: label_word(decision),
        reason: label_word(reason),
    }
}

fn label_word(word: &str) -> &'static str {
    LABEL_WORDS
        .iter()
        .find(|known| **known == word)
        .copied()
        .unwrap_or("other")
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabels {
    pub(crate) status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabels {
    pub(crate) code: u32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimitLabels {
    /// `number`, `pair` or `client`.
    pub(crate) limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    /// `hit` or `miss`.
    pub(crate) result: &'static str,
}

/// Every metric sendgate exports.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) upstream_responses: Family<StatusLabels, Counter>,
    pub(crate) meta_errors: Family<CodeLabels, Counter>,
    pub(crate) upstream_latency: Histogram,
    pub(crate) limit_rejections: Family<LimitLabels, Counter>,
    pub(crate) limit_waits: Family<LimitLabels, Counter>,
    pub(crate) limit_wait_seconds: Histogram,
    pub(crate) limiter_keys: Family<LimitLabels, Gauge>,
    pub(crate) identity_cache: Family<ResultLabels, Counter>,
    pub(crate) identities: Gauge,
    /// Fleet mode only: 1 while Redis answers, 0 while degraded.
    pub(crate) fleet_redis_up: Option<Gauge>,
    pub(crate) webhook_relays: Family<OutcomeLabels, Counter>,
    pub(crate) config_reloads: Family<OutcomeLabels, Counter>,
    /// The series nearly every request counts in, looked up once here
    /// instead of hashed into a family per request.
    hot: HotSeries,
}

/// Counters of `requests` and `upstream_responses` shared with their
/// families (a counter is a handle on one value).
struct HotSeries {
    /// By (route, label as [`Metrics::request`] takes it).
    requests: Vec<(&'static str, &'static str, Counter)>,
    upstream_ok: Counter,
}

/// The request labels resolved once: passthrough, and a send forwarded as
/// it came or with one change.
const HOT_REQUESTS: [(&str, &str); 5] = [
    ("passthrough", "none"),
    ("send", "forwarded"),
    ("send", "rewritten: to->recipient"),
    ("send", "rewritten: recipient->to"),
    ("send", "resolved: bsuid->phone"),
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("sendgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route, decision and reason",
            Described(requests.clone()),
        );
        let upstream_responses = Family::<StatusLabels, Counter>::default();
        registry.register(
            "upstream_responses",
            "Upstream responses by HTTP status",
            Described(upstream_responses.clone()),
        );
        let meta_errors = Family::default();
        registry.register(
            "meta_errors",
            "Graph error codes in upstream error responses to sends",
            Described(meta_errors.clone()),
        );
        // 0.5 ms to ~16 s.
        let upstream_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "upstream_latency_seconds",
            "Time from forwarding a request to the upstream's response head",
            upstream_latency.clone(),
        );
        let limit_rejections = Family::default();
        registry.register(
            "limit_rejections",
            "Sends refused (or, in report mode, that would be) by a limit",
            Described(limit_rejections.clone()),
        );
        let limit_waits = Family::default();
        registry.register(
            "limit_waits",
            "Sends delayed by a limit in shape mode",
            Described(limit_waits.clone()),
        );
        let limit_wait_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "limit_wait_seconds",
            "How long shaped sends waited",
            limit_wait_seconds.clone(),
        );
        let limiter_keys = Family::default();
        registry.register(
            "limiter_keys",
            "Live keys per limiter",
            Described(limiter_keys.clone()),
        );
        let identity_cache = Family::default();
        registry.register(
            "identity_cache",
            "Identity cache lookups by result",
            Described(identity_cache.clone()),
        );
        let identities = Gauge::default();
        registry.register(
            "identities",
            "People the identity store knows",
            identities.clone(),
        );
        let webhook_relays = Family::default();
        registry.register(
            "webhook_relays",
            "Webhook deliveries by outcome",
            Described(webhook_relays.clone()),
        );
        let config_reloads = Family::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by outcome",
            Described(config_reloads.clone()),
        );
        // The label sets known ahead, at 0 until counted.
        // (limiter_keys needs none: every scrape sets its three gauges.)
        for limit in LIMIT_NAMES {
            let labels = LimitLabels {
                limit: limit.to_owned(),
            };
            let _ = limit_rejections.get_or_create(&labels);
        }
        let _ = limit_waits.get_or_create(&LimitLabels {
            limit: ANY_LIMIT.to_owned(),
        });
        let hot = HotSeries {
            requests: HOT_REQUESTS
                .iter()
                .map(|&(route, label)| {
                    let counter = requests
                        .get_or_create(&request_labels(route, label))
                        .clone();
                    (route, label, counter)
                })
                .collect(),
            upstream_ok: upstream_responses
                .get_or_create(&StatusLabels { status: 200 })
                .clone(),
        };
        let metrics = Metrics {
            hot,
            registry,
            requests,
            upstream_responses,
            meta_errors,
            upstream_latency,
            limit_rejections,
            limit_waits,
            limit_wait_seconds,
            limiter_keys,
            identity_cache,
            identities,
            fleet_redis_up: None,
            webhook_relays,
            config_reloads,
        };
        Self::expect_outcomes(&metrics.config_reloads, RELOAD_OUTCOMES);
        metrics
    }

    /// Adds the fleet's metrics: a single machine has no Redis to report
    /// on. Returns the counter of Redis calls, for the connection to count in.
    pub(crate) fn add_fleet(&mut self) -> Counter {
        let up = Gauge::default();
        self.registry.register(
            "fleet_redis_up",
            "1 while the fleet's Redis answers, 0 while sendgate runs degraded on local state",
            up.clone(),
        );
        self.fleet_redis_up = Some(up);
        let calls = Counter::default();
        self.registry.register(
            "fleet_redis_calls",
            "Calls made to the fleet's Redis (a script or a command each)",
            calls.clone(),
        );
        calls
    }

    /// Counts a request by route and decision label (`blocked: username_target`,
    /// `rewritten: to->recipient, resolved: bsuid->phone`, `forwarded`, …).
    pub(crate) fn request(&self, route: &'static str, label: &str) {
        let hot = self
            .hot
            .requests
            .iter()
            .find(|hot| hot.0 == route && hot.1 == label);
        match hot {
            Some((_, _, counter)) => counter.inc(),
            None => self
                .requests
                .get_or_create(&request_labels(route, label))
                .inc(),
        };
    }

    /// Counts an upstream response (or the local error that stood for one)
    /// by HTTP status.
    pub(crate) fn upstream_response(&self, status: u16) {
        match status {
            200 => {
                self.hot.upstream_ok.inc();
            }
            status => {
                self.upstream_responses
                    .get_or_create(&StatusLabels { status })
                    .inc();
            }
        }
    }

    /// Makes the series of outcomes known ahead, at 0 until counted.
    pub(crate) fn expect_outcomes<'a>(
        family: &Family<OutcomeLabels, Counter>,
        outcomes: impl IntoIterator<Item = &'a str>,
    ) {
        for outcome in outcomes {
            let _ = family.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
    }

    pub(crate) fn outcome(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub(crate) fn limit(family: &Family<LimitLabels, Counter>, limit: &str) {
        family
            .get_or_create(&LimitLabels {
                limit: limit.to_owned(),
            })
            .inc();
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_series_count_in_their_families() {
        let metrics = Metrics::new();
        metrics.request("send", "forwarded");
        metrics.request("send", "forwarded");
        metrics.request("passthrough", "none");
        metrics.request("send", "rewritten: to->recipient");
        metrics.request("send", "resolved: bsuid->phone, would-limit: pair");
        metrics.upstream_response(200);
        metrics.upstream_response(400);
        let text = metrics.render();
        for line in [
            "sendgate_requests_total{route=\"send\",decision=\"forwarded\",reason=\"none\"} 2",
            "sendgate_requests_total{route=\"passthrough\",decision=\"none\",reason=\"none\"} 1",
            "sendgate_requests_total{route=\"send\",decision=\"rewritten\",reason=\"to->recipient\"} 1",
            "sendgate_requests_total{route=\"send\",decision=\"resolved\",reason=\"bsuid->phone\"} 1",
            "sendgate_upstream_responses_total{status=\"200\"} 1",
            "sendgate_upstream_responses_total{status=\"400\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
