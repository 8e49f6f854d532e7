//! Graph batch requests: `POST /` (or `/{version}`) with a `batch`
//! parameter whose entries are requests of their own, sends among them.
//!
//! A batch must not carry a send past the checks, so the root's body is
//! read (bounded like a send's) and every entry recognised like a request
//! ([`crate::route`]). A batch without sends is forwarded byte for byte.
//! One with sends is refused (`policy.batch = "refuse"`, the default), or
//! each send is judged and counted against the limits
//! (`policy.batch = "inspect"`): the batch then goes out untouched only
//! when every send in it would go out as written. sendgate never rewrites
//! inside a batch; a send that needs its recipient moved or resolved must
//! come on its own.

use bytes::Bytes;
use http::{Request, Response};
use serde_json::{Map, Value};

use super::{
    error_response, judge, limited_response, read_body, refusal_label, set_decision_header,
};
use crate::app::{App, RequestId};
use crate::body::{ProxyBody, full_body};
use crate::client::{self, Sender};
use crate::config::{BatchPolicy, Mode};
use crate::graph_error::GraphError;
use crate::headers::{self, CLIENT_HEADER};
use crate::limits::{Admission, ClientBucket};
use crate::query::query_pairs;
use crate::route::{self, BatchEntry, Route, UnreadableBatch};
use crate::templates::LookupContext;
use crate::tls::PeerNames;

/// Handles a request to the Graph root.
pub async fn handle(app: &App, mut request: Box<Request<ProxyBody>>) -> Response<ProxyBody> {
    let live = app.live();
    let config = &live.config;
    let request_id = app.request_id();
    let body = std::mem::take(request.body_mut());
    let body = match read_body(body, config.max_send_body_bytes).await {
        Ok(body) => body,
        Err(error) => return super::refuse(app, error, &request_id),
    };
    let entries = match route::batch_entries(request.uri().query(), &body) {
        Ok(Some(entries)) => entries,
        Ok(None) => return forward(app, request, body, None).await,
        Err(UnreadableBatch(why)) => {
            let error = GraphError::invalid_request(
                "unreadable_batch",
                format!(
                    "The batch could not be read ({why}), so its sends could not be inspected."
                ),
            );
            return super::refuse(app, error, &request_id);
        }
    };
    let sends: Vec<(usize, Route<'static>)> = entries
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| match entry.route() {
            Route::Other | Route::Root => None,
            send => Some((index, send)),
        })
        .collect();
    let Some((first, _)) = sends.first() else {
        return forward(app, request, body, None).await;
    };
    let refusal = match config.policy.batch {
        BatchPolicy::Refuse => Some(GraphError::invalid_request(
            "batch_contains_send",
            format!(
                "Entry {first} of this batch is a send. sendgate inspects every send and does not take them in batches: send each message in a request of its own."
            ),
        )),
        BatchPolicy::Inspect => match inspect(app, &request, &entries, &sends, &request_id).await {
            Ok(()) => None,
            Err(Refused::Error(error)) => Some(error),
            Err(Refused::Limited(response)) => return response,
        },
    };
    match (refusal, config.policy.mode) {
        (Some(error), Mode::Enforce) => {
            let label = refusal_label(error.reason, Mode::Enforce);
            app.metrics.request("send", &label);
            error_response(error, label, &request_id)
        }
        (Some(error), Mode::Report) => {
            let label = refusal_label(error.reason, Mode::Report);
            app.metrics.request("send", &label);
            forward(app, request, body, Some(label.into_owned())).await
        }
        (None, _) => {
            app.metrics.request("send", "forwarded");
            forward(app, request, body, Some("forwarded".to_owned())).await
        }
    }
}

/// Why an inspected batch does not go out.
enum Refused {
    Error(GraphError),
    /// A limit refused one of its sends: the 429 as a lone send gets it.
    Limited(Response<ProxyBody>),
}

/// Judges every send of a batch as it stands and takes its units from the
/// limits. A send that would be blocked, or would need a rewrite, refuses
/// the whole batch.
async fn inspect(
    app: &App,
    request: &Request<ProxyBody>,
    entries: &[BatchEntry],
    sends: &[(usize, Route<'static>)],
    request_id: &RequestId<'_>,
) -> Result<(), Refused> {
    let live = app.live();
    let config = &live.config;
    let declared =
        headers::find_field(request.headers(), &CLIENT_HEADER).and_then(|v| v.to_str().ok());
    let token = client::token(request.headers(), request.uri().query());
    let fingerprint = token.map(|token| app.fingerprinter.of(&token));
    let certificate = request.extensions().get::<PeerNames>();
    let sender = Sender::identify(config, fingerprint, declared, certificate);
    let at_entry = |index: usize, mut error: GraphError| {
        error.message = format!("{} (batch entry {index})", error.message);
        Refused::Error(error)
    };
    let mut admitted = Vec::with_capacity(sends.len());
    for (index, send) in sends {
        let path = match send {
            Route::SendAt(path) => path,
            Route::Refuse(why) => return Err(at_entry(*index, GraphError::unsendable(*why))),
            _ => continue,
        };
        let Some(route) = route::send_route(path) else {
            continue;
        };
        if config.number_refuses(route.phone_number_id, fingerprint) {
            return Err(at_entry(*index, GraphError::number_not_allowed()));
        }
        let payload = entry_payload(&entries[*index]).map_err(|why| {
            at_entry(*index, GraphError::invalid_request("unreadable_batch", why))
        })?;
        let lookup = LookupContext {
            phone_number_id: route.phone_number_id,
            version: route.version,
            sender_headers: request.headers(),
        };
        let verdict = judge(app, config, &payload, route, &sender, &lookup, request_id).await;
        if let Some(error) = verdict.refusal {
            return Err(at_entry(*index, error));
        }
        if verdict.label != "forwarded" {
            let error = GraphError::invalid_request(
                "batch_send_needs_rewrite",
                format!(
                    "This send needs sendgate to change it ({}), which it does only for a send in a request of its own.",
                    verdict.label
                ),
            );
            return Err(at_entry(*index, error));
        }
        admitted.push((route.phone_number_id.to_owned(), verdict.person));
    }
    let bucket = ClientBucket {
        key: sender.bucket(),
        share: sender.tied,
    };
    let report = config.policy.mode == Mode::Report;
    for (number, person) in &admitted {
        let admission = live
            .limits
            .admit(number, person.as_deref(), bucket, report)
            .await;
        if let Admission::Refused(refusal) = admission {
            return Err(Refused::Limited(limited_response(app, refusal, request_id)));
        }
    }
    Ok(())
}

/// One batch entry's parameters as the JSON object a send body would be:
/// a JSON body as it is, or form parameters, each value a string unless it
/// is a JSON object or array (Graph takes `template` and `text` so).
fn entry_payload(entry: &BatchEntry) -> Result<Vec<u8>, String> {
    let body = entry.body.as_deref().unwrap_or("").trim();
    if body.starts_with('{') {
        return Ok(body.as_bytes().to_vec());
    }
    let mut object = Map::new();
    for (name, value) in query_pairs(body) {
        let parsed = match value.trim_start().as_bytes().first() {
            Some(b'{' | b'[') => serde_json::from_str(&value).unwrap_or(Value::String(value)),
            _ => Value::String(value),
        };
        if object.insert(name.clone(), parsed).is_some() {
            return Err(format!("the parameter `{name}` is given twice"));
        }
    }
    serde_json::to_vec(&Value::Object(object)).map_err(|err| err.to_string())
}

/// Sends the root request on with the body it came with, labelled when it
/// held sends (and counted as a passthrough when it did not).
async fn forward(
    app: &App,
    mut request: Box<Request<ProxyBody>>,
    body: Bytes,
    label: Option<String>,
) -> Response<ProxyBody> {
    *request.body_mut() = full_body(body);
    if label.is_none() {
        app.metrics.request("passthrough", "none");
    }
    let mut response = app.relay_upstream(request).await;
    if let Some(label) = label {
        set_decision_header(&mut response, label.into());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str) -> BatchEntry {
        BatchEntry {
            method: "POST".into(),
            relative_url: "v21.0/1/messages".into(),
            body: Some(body.into()),
        }
    }

    #[test]
    fn form_parameters_read_as_a_send_body() {
        let payload = entry_payload(&entry(
            "messaging_product=whatsapp&to=pablomorales&type=template&template=%7B%22name%22%3A%22otp%22%7D",
        ))
        .unwrap();
        let value: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(value["to"], "pablomorales");
        assert_eq!(value["template"]["name"], "otp");
        let json = entry_payload(&entry(r#"{"to":"US.1"}"#)).unwrap();
        assert_eq!(json, br#"{"to":"US.1"}"#);
        assert!(entry_payload(&entry("to=a&to=b")).is_err());
    }
}
