//! The router: sends (in every spelling [`route`](crate::route) recognises)
//! go to the send path, the webhook path to the relay, the Graph root to
//! the batch check, everything else streams to the upstream untouched.

use http::{Method, Request, Response};

use crate::app::App;
use crate::body::ProxyBody;
use crate::config::Mode;
use crate::graph_error::GraphError;
use crate::headers;
use crate::metrics::Metrics;
use crate::route::{self, Route, Unsendable};
use crate::send;

impl App {
    /// Routes one request.
    ///
    /// Requests travel boxed from here to the upstream client: an async fn
    /// keeps each argument it takes by value for as long as it runs (rustc
    /// gives argument slots no overlap with later states), so a 240-byte
    /// request handed down eight calls was eight copies in every request's
    /// future. Boxed, each holds a pointer, and a send in flight is
    /// kilobytes smaller.
    pub(crate) async fn handle(&self, request: Box<Request<ProxyBody>>) -> Response<ProxyBody> {
        if request.method() == Method::CONNECT {
            // A tunnel request has no path to route, and this proxy opens
            // tunnels to nowhere.
            let request_id = self.request_id();
            let mut response =
                GraphError::method_not_allowed(request.method()).into_response(request_id);
            // What follows a CONNECT is meant for a tunnel: not requests.
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            return response;
        }
        // A cheap clone (reference-counted bytes) that the route can borrow
        // from while the request itself moves on.
        let uri = request.uri().clone();
        // The relay keeps its path (a reload cannot change it), so routing
        // takes no config snapshot; the send path takes its own.
        if let Some(relay) = &self.webhook
            && uri.path() == relay.path()
        {
            let config = self.config();
            // Boxed so that the relay's large future does not swell every request's.
            let (outcome, response) =
                Box::pin(relay.handle(&config, &self.identities, *request)).await;
            Metrics::outcome(&self.metrics.webhook_relays, outcome.as_str());
            return response;
        }
        let has_body = !http_body::Body::is_end_stream(request.body());
        match route::recognize(request.method(), uri.path(), uri.query(), has_body) {
            Route::Send(route) => {
                let request_id = self.request_id();
                send::handle(self, request, route, &request_id).await
            }
            // The rare routes are boxed, so that their futures (large, and
            // each wrapping another) do not swell every request's.
            Route::SendAt(canonical) => Box::pin(self.send_at(request, &canonical)).await,
            Route::Refuse(why) => Box::pin(self.refuse_unsendable(request, why)).await,
            Route::Root => Box::pin(send::batch::handle(self, request)).await,
            Route::Other => self.passthrough(request).await,
        }
    }

    /// A send written in another spelling goes on as a POST to its
    /// canonical path, so that Meta receives the send that was inspected.
    /// Report mode forwards it as it came, like every send it inspects.
    async fn send_at(
        &self,
        mut request: Box<Request<ProxyBody>>,
        canonical: &str,
    ) -> Response<ProxyBody> {
        let request_id = self.request_id();
        let route = route::send_route(canonical).expect("a canonical path is a send route");
        if self.config().policy.mode == Mode::Enforce {
            let target = match request.uri().query() {
                Some(query) => format!("{canonical}?{query}"),
                None => canonical.to_owned(),
            };
            // A canonical path and a query that was already part of a URI.
            *request.uri_mut() = target.parse().expect("a valid request target");
            *request.method_mut() = Method::POST;
        }
        send::handle(self, request, route, &request_id).await
    }

    /// A request that could be a send but cannot be inspected: refused, or
    /// in report mode forwarded as it came with what enforce would do.
    async fn refuse_unsendable(
        &self,
        request: Box<Request<ProxyBody>>,
        why: Unsendable,
    ) -> Response<ProxyBody> {
        let request_id = self.request_id();
        let error = GraphError::unsendable(why);
        if self.config().policy.mode == Mode::Enforce {
            return send::refuse(self, error, &request_id);
        }
        let label = format!("would-block: {}", why.reason());
        self.metrics.request("send", &label);
        let mut response = self.relay_upstream(request).await;
        if let Ok(value) = http::HeaderValue::from_str(&label) {
            response
                .headers_mut()
                .insert(headers::DECISION_HEADER, value);
        }
        response
    }

    /// Streams a request that is not a send to the upstream and its answer
    /// back, both bodies unbuffered.
    async fn passthrough(&self, request: Box<Request<ProxyBody>>) -> Response<ProxyBody> {
        self.metrics.request("passthrough", "none");
        // Awaited here rather than through `relay_upstream`: a future
        // nested in another costs every passthrough request its own poll.
        let forwarded = self.forward(request).await;
        self.relayed(forwarded).await
    }
}
