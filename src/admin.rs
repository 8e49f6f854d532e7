//! The admin API, on its own listener (loopback by default): health and
//! readiness for orchestrators, identity lookup, import and erasure for
//! operators (GDPR requests), and a dry run of the send decision.
//!
//! Every route but the probes (`/healthz`, `/readyz`, which say a status
//! word and nothing else without the token) and, with `public_metrics`,
//! `/metrics`, needs `Authorization: Bearer <token>` with the token from
//! `SENDGATE_ADMIN_TOKEN`, compared in constant time. Without a configured
//! token, those routes are closed. Identifiers are shown in full
//! here: the caller is the authorised operator, and the logs stay masked.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::body::{ProxyBody, local_response, read_whole};
use crate::client::{self, Sender};
use crate::config::check_portfolio_name;
use crate::headers::CLIENT_HEADER;
use crate::identity::import::{self, Destination, Format};
use crate::identity::{Erased, Source, StoreError};
use crate::query::{decode_path_segment, query_pairs};
use crate::route::{Endpoint, SendRoute};
use crate::send;
use crate::server::Handler;
use crate::templates::LookupContext;

/// The most an import request may carry.
const MAX_IMPORT_BYTES: usize = 256 << 20;
/// Where identity routes live.
const IDENTITIES: &str = "/admin/identities";

/// The admin API over the proxy's shared state.
pub struct Admin {
    app: Arc<App>,
}

impl Admin {
    pub fn new(app: Arc<App>) -> Arc<Self> {
        Arc::new(Admin { app })
    }

    async fn answer(&self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        let path = request.uri().path().to_owned();
        let authorised = self.authorised(request.headers().get(header::AUTHORIZATION));
        // The probes answer anyone (an orchestrator has no token) and say a
        // status word; the operator with the token gets the details too.
        match (request.method(), path.as_str()) {
            (&Method::GET | &Method::HEAD, "/healthz") => {
                return reply(StatusCode::OK, json!({"status": "ok"}));
            }
            (&Method::GET | &Method::HEAD, "/readyz") => return self.ready(authorised).await,
            (&Method::GET | &Method::HEAD, "/metrics")
                if authorised || self.app.config().admin.public_metrics =>
            {
                return metrics(&self.app);
            }
            _ => {}
        }
        if !authorised {
            let message = if self.app.secrets.admin_token.is_some() {
                "a valid Authorization: Bearer token is required"
            } else {
                "the admin API is closed: set SENDGATE_ADMIN_TOKEN"
            };
            return reply(StatusCode::UNAUTHORIZED, json!({"error": message}));
        }
        let query = request.uri().query().unwrap_or("").to_owned();
        match (request.method().clone(), path.as_str()) {
            (Method::POST, "/admin/reload") => self.reload().await,
            (Method::GET, "/admin/limits") => self.limits().await,
            (Method::POST, IDENTITIES) => self.import(request, &query).await,
            (Method::POST, "/admin/fingerprint") => self.fingerprint(request).await,
            (Method::POST, "/admin/dry-run") => self.dry_run(request, &query).await,
            (method, path) if path.starts_with(IDENTITIES) && path.len() > IDENTITIES.len() + 1 => {
                let id = decode_path_segment(&path[IDENTITIES.len() + 1..]);
                let scope = match self.scope_in(&query) {
                    Ok(scope) => scope,
                    Err(why) => return bad_request(&why),
                };
                match method {
                    Method::GET => self.lookup(id, scope).await,
                    Method::DELETE => self.erase(id, scope).await,
                    _ => reply(
                        StatusCode::METHOD_NOT_ALLOWED,
                        json!({"error": "GET or DELETE"}),
                    ),
                }
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                json!({"error": "no such admin route"}),
            ),
        }
    }

    fn authorised(&self, given: Option<&HeaderValue>) -> bool {
        let (Some(expected), Some(given)) = (&self.app.secrets.admin_token, given) else {
            return false;
        };
        let Some(token) = given.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        bool::from(token.as_bytes().ct_eq(expected.as_bytes()))
    }

    /// `?number=ID` scopes a request to that number's scope (its portfolio,
    /// or the number alone), `?portfolio=NAME` to a portfolio; without
    /// either, every scope.
    fn scope_in(&self, query: &str) -> Result<Option<String>, String> {
        for (name, value) in query_pairs(query) {
            match name.as_str() {
                "number" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    return Ok(Some(self.app.config().scope_of(&value).key().into_owned()));
                }
                "number" => return Err("?number= is a phone number id (digits)".into()),
                "portfolio" => {
                    return match check_portfolio_name(&value) {
                        Ok(()) => Ok(Some(value)),
                        Err(why) => Err(format!("?portfolio= {why}")),
                    };
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Ready when the identity store answers; in a fleet, when Redis
    /// answers a PING (a count across the fleet's scopes would be a round
    /// trip per scope: `sendgate_identities` has it), and "degraded" (still
    /// 200: sends flow on local state) while it does not. Not ready (503)
    /// once shutdown has begun. Details (the store's size, why Redis is
    /// away) only for a caller with the token.
    async fn ready(&self, authorised: bool) -> Response<ProxyBody> {
        let (status, mut body) = self.readiness().await;
        if !authorised && let Some(fields) = body.as_object_mut() {
            fields.retain(|name, _| name == "status");
        }
        reply(status, body)
    }

    async fn readiness(&self) -> (StatusCode, Value) {
        if self.app.is_draining() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "draining"}),
            );
        }
        if let Some(fleet) = &self.app.fleet {
            let redis = fleet.redis();
            return match redis.ping().await {
                Ok(()) => (StatusCode::OK, json!({"status": "ready", "redis": "up"})),
                // The failure that took Redis down says more than a skipped PING.
                Err(err) => {
                    let why = redis.health().degraded().unwrap_or_else(|| err.to_string());
                    (
                        StatusCode::OK,
                        json!({"status": "degraded: redis", "reason": why}),
                    )
                }
            };
        }
        let identities = self.app.identities.clone();
        let failure = match tokio::task::spawn_blocking(move || identities.len()).await {
            Ok(Ok(known)) => {
                return (
                    StatusCode::OK,
                    json!({"status": "ready", "identities": known}),
                );
            }
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::error!(error = %failure, "readiness: identity store unusable");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "store unavailable"}),
        )
    }

    /// Re-reads the config file, as SIGHUP does.
    async fn reload(&self) -> Response<ProxyBody> {
        let app = self.app.clone();
        match tokio::task::spawn_blocking(move || app.reload()).await {
            Ok(Ok(())) => reply(StatusCode::OK, json!({"status": "reloaded"})),
            Ok(Err(err)) => reply(StatusCode::BAD_REQUEST, json!({"error": err.to_string()})),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "reload failed"}),
            ),
        }
    }

    /// The limits in force and their live state.
    async fn limits(&self) -> Response<ProxyBody> {
        let live = self.app.live();
        let config = &live.config;
        let numbers: serde_json::Map<String, Value> = config
            .numbers
            .iter()
            .filter_map(|(id, number)| Some((id.clone(), json!(number.throughput?.per_second()))))
            .collect();
        let clients: serde_json::Map<String, Value> = config
            .clients
            .iter()
            .filter(|(_, client)| client.per_second.is_some() || client.burst.is_some())
            .map(|(name, client)| {
                (
                    name.clone(),
                    json!({"per_second": client.per_second, "burst": client.burst}),
                )
            })
            .collect();
        let keys: serde_json::Map<String, Value> = live
            .limits
            .keys()
            .iter()
            .map(|(kind, keys)| (kind.as_str().to_owned(), json!(keys)))
            .collect();
        reply(
            StatusCode::OK,
            json!({
                "mode": config.policy.mode,
                "limits": config.limits,
                "number_per_second_overrides": numbers,
                "client_overrides": clients,
                "live": {
                    "numbers": live.limits.numbers().await,
                    "pairs_backing_off": live.limits.pairs_backing_off(),
                    "keys": keys,
                },
            }),
        )
    }

    /// The records an identifier names (trusted pairs, with their source
    /// and when Meta last attested them) and the claims sends made about
    /// it (each answering only for the number that sent it).
    async fn lookup(&self, id: String, scope: Option<String>) -> Response<ProxyBody> {
        let identities = self.app.identities.clone();
        let found = tokio::task::spawn_blocking(move || identities.lookup(&id, scope.as_deref()))
            .await
            .unwrap_or_else(|_| Err(StoreError::new("lookup failed")));
        match found {
            Ok(Erased { records, claims }) => {
                let status = match records.is_empty() && claims.is_empty() {
                    true => StatusCode::NOT_FOUND,
                    false => StatusCode::OK,
                };
                reply(status, json!({"records": records, "claims": claims}))
            }
            Err(err) => store_failure(&err),
        }
    }

    async fn erase(&self, id: String, scope: Option<String>) -> Response<ProxyBody> {
        let identities = self.app.identities.clone();
        let erased =
            tokio::task::spawn_blocking(move || identities.erase(&id, scope.as_deref())).await;
        match erased {
            Ok(Ok(removed)) => {
                let count = removed.records.len() + removed.claims.len();
                tracing::info!(target: "sendgate::admin", erased = count, "identity erased");
                let mut scopes: Vec<&str> = removed
                    .records
                    .iter()
                    .map(|r| r.scope.as_str())
                    .chain(removed.claims.iter().map(|c| c.scope.as_str()))
                    .collect();
                scopes.sort_unstable();
                scopes.dedup();
                reply(
                    StatusCode::OK,
                    json!({
                        "erased": removed.records.len(),
                        "claims_erased": removed.claims.len(),
                        "scopes": scopes,
                    }),
                )
            }
            Ok(Err(err)) => store_failure(&err),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "erase failed"}),
            ),
        }
    }

    /// JSON lines (or CSV) in the body; the import summary out. Rows that
    /// name no number or portfolio go to `?number=`'s or `?portfolio=`'s
    /// scope, and are rejected without one.
    async fn import(&self, request: Request<ProxyBody>, query: &str) -> Response<ProxyBody> {
        let default_scope = match self.scope_in(query) {
            Ok(scope) => scope,
            Err(why) => return bad_request(&why),
        };
        let body = match read(request, MAX_IMPORT_BYTES).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let app = self.app.clone();
        let imported = tokio::task::spawn_blocking(move || {
            let config = app.config();
            let format = Format::detect(&body);
            let destination = Destination {
                default_scope: default_scope.as_deref(),
                source: Source::Admin,
            };
            import::import(
                Cursor::new(body),
                format,
                &config,
                &app.identities,
                destination,
                |_| {},
            )
        })
        .await;
        match imported {
            Ok(Ok(summary)) => reply(StatusCode::OK, json!(summary)),
            Ok(Err(err)) => store_failure(&err),
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "import failed"}),
            ),
        }
    }

    /// A sender's token in the body (as sent in `Authorization`, or bare),
    /// its fingerprint out: what `[clients.<name>] tokens` and
    /// `[numbers."<id>"] tokens` list. The token is neither kept nor logged.
    async fn fingerprint(&self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        let body = match read(request, 64 << 10).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let Some(token) = std::str::from_utf8(&body)
            .ok()
            .and_then(|text| client::token_in(text.trim()))
        else {
            return bad_request("the body must be a token");
        };
        let fingerprint = self.app.fingerprinter.of(token);
        reply(
            StatusCode::OK,
            json!({"fingerprint": fingerprint.to_string()}),
        )
    }

    /// A send payload in (`?number=ID`, optionally `&endpoint=marketing_messages`
    /// and an `x-sendgate-client` header), the decision out; nothing is sent.
    /// The sender is the token in `x-graph-authorization`, if given, which
    /// also looks up a template category not in config or cache.
    async fn dry_run(&self, request: Request<ProxyBody>, query: &str) -> Response<ProxyBody> {
        let mut number = None;
        let mut endpoint = Endpoint::Messages;
        for (name, value) in query_pairs(query) {
            match (name.as_str(), value.as_str()) {
                ("number", _) => number = Some(value),
                ("endpoint", "marketing_messages") => endpoint = Endpoint::MarketingMessages,
                _ => {}
            }
        }
        let Some(number) =
            number.filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "?number=<phone-number-id> is required"}),
            );
        };
        let declared = header_text(&request, CLIENT_HEADER.as_str());
        // The dry run's lookups authorize as the sender's would.
        let mut sender_headers = http::HeaderMap::new();
        if let Some(authorization) = request.headers().get("x-graph-authorization") {
            sender_headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        let config = self.app.config();
        let fingerprint =
            client::token(&sender_headers, None).map(|t| self.app.fingerprinter.of(&t));
        let sender = Sender::identify(&config, fingerprint, declared.as_deref(), None);
        let body = match read(request, config.max_send_body_bytes).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let route = SendRoute {
            version: None,
            phone_number_id: &number,
            endpoint,
        };
        let lookup = LookupContext {
            phone_number_id: &number,
            version: None,
            sender_headers: &sender_headers,
        };
        let verdict = send::judge(
            &self.app, &config, &body, route, &sender, &lookup, &"dry-run",
        )
        .await;
        let forwarded = match (&verdict.refusal, config.policy.mode) {
            (Some(_), crate::config::Mode::Enforce) => Value::Null,
            _ => {
                let bytes = verdict.rewritten.as_deref().unwrap_or(&body);
                Value::String(String::from_utf8_lossy(bytes).into_owned())
            }
        };
        let error = verdict.refusal.as_ref().map_or(Value::Null, |error| {
            serde_json::from_slice(&error.body("dry-run")).unwrap_or(Value::Null)
        });
        reply(
            StatusCode::OK,
            json!({
                "decision": verdict.label,
                "status": verdict.refusal.as_ref().map_or(200, |e| e.status.as_u16()),
                "error": error,
                "forwarded_body": forwarded,
            }),
        )
    }
}

impl Handler for Admin {
    async fn call(&self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        self.answer(request).await
    }
}

/// prometheus-client writes OpenMetrics text (`_total` suffixes, `# EOF`),
/// which Prometheus reads when told so.
fn metrics(app: &App) -> Response<ProxyBody> {
    let text = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    local_response(StatusCode::OK, text, app.render_metrics())
}

fn header_text(request: &Request<ProxyBody>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

async fn read(request: Request<ProxyBody>, limit: usize) -> Result<Bytes, Response<ProxyBody>> {
    match read_whole(request.into_body(), limit).await {
        Ok(body) => Ok(body),
        Err(_) => Err(reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": format!("the body is unreadable or larger than {limit} bytes")}),
        )),
    }
}

fn bad_request(message: &str) -> Response<ProxyBody> {
    reply(StatusCode::BAD_REQUEST, json!({"error": message}))
}

fn store_failure(err: &crate::identity::StoreError) -> Response<ProxyBody> {
    tracing::error!(error = %err, "admin: identity store failed");
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": err.to_string()}),
    )
}

fn reply(status: StatusCode, body: Value) -> Response<ProxyBody> {
    local_response(status, "application/json", body.to_string())
}
