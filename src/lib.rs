//! sendgate: a reverse proxy in front of the WhatsApp Cloud API that makes
//! outbound sends survive the move from phone numbers to usernames and
//! business-scoped user IDs (BSUIDs).
//!
//! Senders point their base URL at sendgate. Every send is inspected: the
//! recipient is classified (phone, BSUID, parent BSUID, username, junk), put
//! in the field the Cloud API needs, resolved to a known phone where that is
//! better, or refused with a Graph-shaped error the sender's SDK already
//! understands. Every other request streams through untouched.
//!
//! # Layout
//!
//! From the binary's commands down to the pieces everything stands on; no
//! two files import each other, directly or around a circle
//! (`scripts/import-cycles.py`, run by CI).
//!
//! - [`cli`]: the binary's commands (`serve`, `import`, `audit`, …) as
//!   library code; `main.rs` only parses the command line.
//! - [`server`]: listeners, worker threads with a runtime each, connection
//!   limits and graceful shutdown; `server::http1` serves plain HTTP/1.1
//!   requests itself and hands everything else (HTTP/2 included) to hyper.
//! - [`admin`]: the admin API: health, readiness, identities, dry run.
//! - `proxy`: the router: sends, the webhook path, batches, passthrough.
//! - [`send`]: the send path; `send::payload` (facts and byte-preserving
//!   rewrite, with `send::scan`), `send::policy` (the decision table),
//!   `send::batch` (Graph batch requests).
//! - [`webhook`]: the webhook relay: verify, learn durably, forward;
//!   `webhook::learn` reads what a payload teaches.
//! - [`app`]: the shared state every handler uses, forwarding and request ids.
//! - `relay`: an upstream answer on its way back to the client.
//! - `route`: which requests are sends, in every spelling, and batches.
//! - `client`: who a sender is: its token (by its fingerprint), its client.
//! - [`fingerprint`]: keyed hashes of access tokens.
//! - `templates`: template categories from config and Meta, cached.
//! - [`limits`]: per-number, per-pair and per-client rate limits (governor),
//!   back-offs from Meta's answers, reloadable.
//! - [`identity`]: phone ↔ BSUID mappings per scope, store and cache.
//! - [`fleet`]: the Redis connection replicas share state through, its
//!   health, and cache invalidation across replicas.
//! - `audit`: a campaign list judged offline, row by row; `csv_rows`: CSV
//!   rows with true line numbers, for import and audit.
//! - [`sandbox`]: a simulated Cloud API for development and tests.
//! - `upstream`: the client to the Cloud API (rustls, per-thread pool,
//!   sendgate's own HTTP/1.1 client, hyper for HTTP/2), timeouts.
//! - `graph_error`: local errors shaped like Graph errors.
//! - [`config`]: typed configuration over the embedded defaults, env
//!   overrides, validation.
//! - [`identifier`]: pure classification of recipient identifiers.
//! - [`body`]: the body type both directions use, and its helpers.
//! - `http1`: HTTP/1.1 on the wire, for both of sendgate's own loops: field
//!   names, lengths, the body encoder and chunked decoder, heads into maps.
//! - `headers`: hop-by-hop rules (RFC 9110 §7.6.1) and sendgate's own headers.
//! - `query`: percent-decoding of query strings and path segments.
//! - `metrics`: Prometheus metrics; `logging`: log setup, masking, escaping;
//!   `prehashed`: the hasher of maps keyed by 64-bit hashes; `stall`: the
//!   body stall timer.
//! - `fuzzing` (tests and fuzz builds only): the invariants the fuzz
//!   targets in `fuzz/` check.

pub mod admin;
pub mod app;
mod audit;
pub mod body;
pub mod cli;
mod client;
pub mod config;
mod csv_rows;
pub mod fingerprint;
pub mod fleet;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
mod graph_error;
mod headers;
mod http1;
pub mod identifier;
pub mod identity;
pub mod limits;
mod logging;
mod metrics;
mod prehashed;
mod proxy;
mod query;
mod relay;
mod route;
pub mod sandbox;
pub mod send;
pub mod server;
mod stall;
mod templates;
pub mod tls;
mod upstream;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use tokio::net::TcpListener;

pub use app::App;
pub use config::Config;

use crate::body::ProxyBody;
use crate::server::Handler;

impl Handler for App {
    /// Not an async fn: that would be one more future holding the request
    /// (see [`App::handle`] on why requests travel boxed).
    fn call(
        &self,
        request: Request<ProxyBody>,
    ) -> impl std::future::Future<Output = Response<ProxyBody>> + Send + '_ {
        self.handle(Box::new(request))
    }
}

/// Runs the proxy on an already-bound listener, on its worker threads
/// (`worker_threads`, `worker_pin_cpus`), until `shutdown`
/// completes. Fails only if the workers cannot start.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    app.spawn_housekeeping();
    let config = app.config();
    let workers = server::Workers {
        threads: config.worker_threads,
        pin_cpus: config.worker_pin_cpus,
    };
    let limits = server::ConnectionLimits::from(&*config);
    tracing::info!(
        max_connections = limits.max_connections,
        backlog = config.connections.backlog,
        "accepting connections"
    );
    let tls = match &app.tls {
        Some(terminator) => server::Tls::Proxy(terminator.clone()),
        None => server::Tls::Plain,
    };
    server::serve_on_workers(listener, app, workers, limits, tls, shutdown).await
}
