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
//! - [`config`]: typed configuration over the embedded defaults, env overrides, validation.
//! - [`server`]: listeners, worker threads with a runtime each, graceful
//!   shutdown; `server::http1` serves plain HTTP/1.1 requests itself and
//!   hands everything else (HTTP/2 included) to hyper.
//! - [`proxy`]: shared state and routing; passthrough streaming.
//! - [`route`]: which requests are sends, in every spelling, and batches.
//! - [`client`]: who a sender is: its token's fingerprint, its client.
//! - [`upstream`]: the rustls client to the Cloud API, timeouts, 502/504;
//!   `upstream::pool` keeps its connections per thread; `upstream::http1`
//!   speaks HTTP/1.1 on them in the request's own task.
//! - [`query`]: percent-decoding of query strings and path segments.
//! - [`headers`]: hop-by-hop rules (RFC 9110 §7.6.1) and sendgate's own headers.
//! - `http1`: HTTP/1.1 on the wire, for both of sendgate's own loops: field
//!   names, lengths, the body encoder and chunked decoder, heads into maps.
//! - [`send`]: the send path; `send::identifier` (classification),
//!   `send::payload` (facts and byte-preserving rewrite), `send::policy` (the
//!   decision table).
//! - [`identity`]: phone ↔ BSUID mappings per portfolio.
//! - [`templates`]: template categories from config and Meta, cached.
//! - [`graph_error`]: local errors shaped like Graph errors.
//! - [`limits`]: per-number, per-pair and per-client rate limits (governor),
//!   back-offs from Meta's answers, reloadable.
//! - [`metrics`]: Prometheus metrics.
//! - [`prehashed`]: the hasher of maps keyed by 64-bit hashes.
//! - [`logging`]: log setup and identifier masking.
//! - [`webhook`]: the webhook relay: verify, learn durably, forward;
//!   `webhook::learn` reads what a payload teaches.
//! - [`admin`]: the admin API: health, readiness, identities, dry run.
//! - [`csv_rows`]: CSV rows with true line numbers, for import and audit.
//! - [`audit`]: `sendgate audit`: a campaign list judged offline, row by row.
//! - [`sandbox`]: a simulated Cloud API for development and tests.
//! - `fuzzing` (tests and fuzz builds only): the invariants the fuzz
//!   targets in `fuzz/` check.

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod client;
pub mod config;
pub mod csv_rows;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod graph_error;
pub mod headers;
mod http1;
pub mod identity;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod prehashed;
pub mod proxy;
pub mod query;
pub mod route;
pub mod sandbox;
pub mod send;
pub mod server;
mod stall;
pub mod templates;
pub mod upstream;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use tokio::net::TcpListener;

pub use config::Config;
pub use proxy::App;

use crate::server::Handler;
use crate::upstream::ProxyBody;

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
    let limits = config.connections.limits(server::default_max_connections);
    tracing::info!(
        max_connections = limits.max_connections,
        backlog = config.connections.backlog,
        "accepting connections"
    );
    server::serve_on_workers(listener, app, workers, limits, shutdown).await
}
