//! The send path: `POST /{version}/{phone-number-id}/messages` and
//! `/marketing_messages`.
//!
//! Phases, each a plain function: read the body (bounded) → parse the facts →
//! classify → resolve what the decision needs → decide → rewrite if asked →
//! forward → learn from the response. The pure phases live in
//! [`crate::identifier`], [`payload`] and [`policy`].

pub mod batch;
pub mod payload;
pub mod policy;
mod scan;

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;

use crate::app::{App, RequestId};
use crate::body::{ProxyBody, ReadBodyError, full_body, read_whole};
use crate::client::{self, Sender};
use crate::config::{Category, Config, LimitMode, Mode, UnknownCategory};
use crate::graph_error::GraphError;
use crate::headers::{self, CLIENT_HEADER, DECISION_HEADER};
use crate::identifier::{IdClass, classify, phone_digits};
use crate::identity::Scope;
use crate::limits::{Admission, ClientBucket, Refusal};
use crate::logging::{Escaped, mask};
use crate::metrics::{ANY_LIMIT, CodeLabels, Metrics};
use crate::relay::{body_failed, relay};
pub use crate::route::{Endpoint, SendRoute};
use crate::templates::LookupContext;
use crate::tls::PeerNames;
use crate::upstream::UpstreamBody;
use payload::{FieldValue, Member, PayloadError, SendPayload};
use policy::{Actions, Addressing, Decision, Facts, MessageKind, Person, Recipient};

/// Refuses a request that could be a send before reading it: counted and
/// labelled like a blocked send.
pub(crate) fn refuse(
    app: &App,
    error: GraphError,
    request_id: &RequestId<'_>,
) -> Response<ProxyBody> {
    let label = refusal_label(error.reason, Mode::Enforce);
    tracing::info!(
        target: "sendgate::decision",
        request_id = %request_id,
        decision = %label,
        "send refused unread"
    );
    app.metrics.request("send", &label);
    error_response(error, label, request_id)
}

/// Handles one send end to end.
pub async fn handle(
    app: &App,
    mut request: Box<Request<ProxyBody>>,
    route: SendRoute<'_>,
    request_id: &RequestId<'_>,
) -> Response<ProxyBody> {
    // One snapshot of config and limits for the whole request, whatever a
    // reload does meanwhile.
    let live = app.live();
    let config = &live.config;
    // The body is read out and the request kept whole for the upstream:
    // taking it apart and putting it together again copies its head twice.
    let body = std::mem::take(request.body_mut());
    // Over the cap is refused in both modes: report mode promises to forward
    // what it inspects, and a send this large is no send.
    let body = match read_body(body, config.max_send_body_bytes).await {
        Ok(body) => body,
        Err(error) => {
            let label = format!("blocked: {}", error.reason);
            app.metrics.request("send", &label);
            let mut response = error_response(error, label.into(), request_id);
            // The rest of a body refused unread stays on the connection:
            // the client must hear that it closes (a 413, or a body that
            // broke off), or its next request on it fails.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    let declared =
        headers::find_field(request.headers(), &CLIENT_HEADER).and_then(|v| v.to_str().ok());
    let fingerprint = match config.needs_fingerprints() {
        true => client::token(request.headers(), request.uri().query())
            .map(|token| app.fingerprinter.of(&token)),
        false => None,
    };
    let certificate = request.extensions().get::<PeerNames>();
    let sender = Sender::identify(config, fingerprint, declared, certificate);
    if config.number_refuses(route.phone_number_id, fingerprint) {
        let error = GraphError::number_not_allowed();
        let label = refusal_label(error.reason, Mode::Enforce);
        log_decision(
            config,
            request_id,
            route,
            &sender,
            &Facts::default(),
            &label,
        );
        app.metrics.request("send", &label);
        return error_response(error, label, request_id);
    }
    let lookup = LookupContext {
        phone_number_id: route.phone_number_id,
        version: route.version,
        sender_headers: request.headers(),
    };
    let verdict = judge(app, config, &body, route, &sender, &lookup, request_id).await;
    let mut label = verdict.label;
    let body = match (verdict.refusal, config.policy.mode) {
        (Some(error), Mode::Enforce) => {
            app.metrics.request("send", &label);
            return error_response(error, label, request_id);
        }
        _ => verdict.rewritten.map_or(body, Bytes::from),
    };

    // Only sends that will really go out count against the limits.
    let report = config.policy.mode == Mode::Report;
    let limits = &live.limits;
    let person = verdict.person.as_deref();
    let bucket = ClientBucket {
        key: sender.bucket(),
        share: sender.tied,
    };
    match limits
        .admit(route.phone_number_id, person, bucket, report)
        .await
    {
        Admission::Admitted { waited } if !waited.is_zero() => {
            Metrics::limit(&app.metrics.limit_waits, ANY_LIMIT);
            app.metrics.limit_wait_seconds.observe(waited.as_secs_f64());
        }
        Admission::Admitted { .. } => {}
        Admission::WouldLimit(limit) => {
            Metrics::limit(&app.metrics.limit_rejections, limit.as_str());
            label = format!("{label}, would-limit: {}", limit.as_str()).into();
        }
        Admission::Refused(refusal) => return limited_response(app, refusal, request_id),
    }
    app.metrics.request("send", &label);

    // The sender's Content-Length may be the old body's; the upstream
    // client announces the length of the body it sends, not the sender's.
    *request.body_mut() = full_body(body);
    let mut response = match app.forward(request).await {
        Ok(response) if response.status().is_success() => {
            limits
                .feedback(route.phone_number_id, person, None, true)
                .await;
            if let Some((phone, bsuid)) = verdict.learned {
                let scope = config.scope_of(route.phone_number_id);
                // Written in the background: the response does not wait.
                drop(
                    app.identities
                        .learn_from_send(scope, route.phone_number_id, phone, bsuid),
                );
            }
            match relay(response).await {
                Ok(relayed) => relayed,
                Err(error) => body_failed(&error, request_id),
            }
        }
        Ok(response) => {
            // Meta's error codes, not its HTTP statuses, say what happened
            // (throttling can come back as a 400): read the small error body.
            let (response, code) = Box::pin(read_error_code(response)).await;
            if let Some(code) = code {
                app.metrics
                    .meta_errors
                    .get_or_create(&CodeLabels { code })
                    .inc();
            }
            limits
                .feedback(route.phone_number_id, person, code, false)
                .await;
            response
        }
        Err(error) => GraphError::from(&error).into_response(request_id),
    };
    set_decision_header(&mut response, label);
    response
}

/// A send a limit refused: 429 with `Retry-After`, counted.
fn limited_response(
    app: &App,
    refusal: Refusal,
    request_id: &RequestId<'_>,
) -> Response<ProxyBody> {
    Metrics::limit(&app.metrics.limit_rejections, refusal.limit.as_str());
    let label = format!("limited: {}", refusal.limit.as_str());
    app.metrics.request("send", &label);
    let mut response =
        GraphError::rate_limited(refusal.limit, refusal.retry_after).into_response(request_id);
    let seconds = refusal.retry_after.as_secs() + u64::from(refusal.retry_after.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    set_decision_header(&mut response, label.into());
    response
}

/// The most of an upstream error body read to find its `error.code`.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Buffers an upstream error response (small by nature) to read its Graph
/// `error.code`, and gives the same bytes back to the client.
async fn read_error_code(response: Response<UpstreamBody>) -> (Response<ProxyBody>, Option<u32>) {
    #[derive(serde::Deserialize)]
    struct GraphBody {
        error: GraphCode,
    }
    #[derive(serde::Deserialize)]
    struct GraphCode {
        code: u32,
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    match read_whole(body.boxed(), MAX_ERROR_BODY).await {
        Ok(bytes) => {
            let code = serde_json::from_slice::<GraphBody>(&bytes)
                .ok()
                .map(|b| b.error.code);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            (Response::from_parts(parts, full_body(bytes)), code)
        }
        Err(_) => (
            GraphError::upstream_unavailable().into_response("upstream-error"),
            None,
        ),
    }
}

/// What the send path concluded about one body.
pub(crate) struct Verdict {
    /// Why enforce mode refuses the send (report mode forwards it anyway).
    pub(crate) refusal: Option<GraphError>,
    /// The rewritten body, in enforce mode, when the table rewrote it.
    pub(crate) rewritten: Option<Vec<u8>>,
    /// The (phone digits, BSUID) pair a successful forward of this send
    /// claims, when `identity.learn_from_sends` is on.
    pub(crate) learned: Option<(String, String)>,
    /// The `x-sendgate-decision` value.
    pub label: Cow<'static, str>,
    /// Who the pair limit counts this send against: the person's BSUID when
    /// one is known, else their phone digits. `None` when not a person send.
    pub person: Option<String>,
}

/// Parses, classifies, resolves and decides; logs the decision. Used by the
/// send path and by the admin API's dry run.
pub(crate) async fn judge(
    app: &App,
    config: &Config,
    body: &[u8],
    route: SendRoute<'_>,
    sender: &Sender<'_>,
    lookup: &LookupContext<'_>,
    request_id: &(dyn fmt::Display + Sync),
) -> Verdict {
    let mode = config.policy.mode;
    let payload = match SendPayload::parse(body) {
        Ok(payload) => payload,
        Err(error) => {
            let error = payload_error(&error);
            let label = refusal_label(error.reason, mode);
            log_decision(config, request_id, route, sender, &Facts::default(), &label);
            return Verdict {
                refusal: Some(error),
                rewritten: None,
                learned: None,
                label,
                person: None,
            };
        }
    };
    let facts = facts_of(&payload);
    let policy = config.policy.policy();
    let mut person_key = None;
    let decision = match policy::address(&facts, &policy) {
        Addressing::Untouched => Decision::Forward,
        Addressing::Blocked(reason) => Decision::Block(reason),
        Addressing::Person(person) => {
            let scope = config.scope_of(route.phone_number_id);
            let mut kind = MessageKind::default();
            let mut known_phone = None;
            if let Some(bsuid) = person.bsuid.filter(|_| person.is_bsuid_only()) {
                known_phone = app
                    .identities
                    .phone_for(
                        scope,
                        route.phone_number_id,
                        bsuid.value,
                        config.identity.learn_from_sends,
                    )
                    .await;
                if known_phone.is_none() || !policy.prefer_phone {
                    kind = message_kind(app, config, &payload, route, sender, lookup).await;
                }
            }
            if config.limits.pair.mode != LimitMode::Off {
                person_key = Some(person_of(app, scope, &person).await);
            }
            policy::decide(&person, kind, known_phone.as_deref(), &policy)
        }
    };
    let label = decision_label(&decision, mode);
    log_decision(config, request_id, route, sender, &facts, &label);
    let learned = config
        .identity
        .learn_from_sends
        .then(|| learnable_pair(&facts, &decision, mode))
        .flatten();
    let (refusal, rewritten) = match decision {
        Decision::Block(reason) => (Some(GraphError::blocked(reason)), None),
        Decision::Rewrite { to, recipient, .. } if mode == Mode::Enforce => {
            (None, Some(payload.rewrite(&to, &recipient)))
        }
        Decision::Rewrite { .. } | Decision::Forward => (None, None),
    };
    Verdict {
        refusal,
        rewritten,
        learned,
        label,
        person: person_key,
    }
}

/// One bucket per person: the BSUID when the send names one or the store
/// knows the phone's, so phone and BSUID addressing share a bucket.
async fn person_of(app: &App, scope: Scope<'_>, person: &Person<'_>) -> String {
    if let Some(bsuid) = person.bsuid {
        return bsuid.value.to_owned();
    }
    let digits = person
        .phone
        .map(|phone| phone_digits(phone.value))
        .unwrap_or_default();
    app.identities
        .bsuid_for_phone(scope, &digits)
        .await
        .unwrap_or(digits)
}

/// Reads the whole send body, refusing more than `limit` bytes.
async fn read_body(body: ProxyBody, limit: usize) -> Result<Bytes, GraphError> {
    // A body that declares more than the cap is refused unread: both front
    // ends (ours and hyper's) turn Content-Length into the body's size hint.
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(GraphError::body_too_large(limit));
    }
    match read_whole(body, limit).await {
        Ok(body) => Ok(body),
        Err(ReadBodyError::TooLarge) => Err(GraphError::body_too_large(limit)),
        Err(ReadBodyError::Broken) => Err(GraphError::unreadable_body()),
    }
}

fn payload_error(error: &PayloadError) -> GraphError {
    let reason = match error {
        PayloadError::Malformed(_) => "malformed_json",
        PayloadError::NotAnObject => "not_an_object",
        PayloadError::DuplicateField(_) => "duplicate_field",
    };
    GraphError::invalid_request(reason, error.to_string())
}

/// The recipient facts, each field classified. `null` counts as absent; an
/// object or boolean is an invalid recipient.
pub fn facts_of<'a>(payload: &'a SendPayload<'_>) -> Facts<'a> {
    let recipient = |member: &'a Option<Member<'_>>| {
        let member = member.as_ref()?;
        match &member.decoded {
            FieldValue::Null => None,
            FieldValue::Other => Some(Recipient {
                value: "",
                class: IdClass::Invalid,
            }),
            _ => member.text().map(|value| Recipient {
                value,
                class: classify(value),
            }),
        }
    };
    Facts {
        group: payload.is_group(),
        to: recipient(&payload.to),
        recipient: recipient(&payload.recipient),
    }
}

/// What kind of message this is, for rows 9 and 10 (docs/design.md §2). Asks for the template's
/// category only here, i.e. only for a BSUID-only send.
async fn message_kind(
    app: &App,
    config: &Config,
    payload: &SendPayload<'_>,
    route: SendRoute<'_>,
    sender: &Sender<'_>,
    lookup: &LookupContext<'_>,
) -> MessageKind {
    let mut kind = MessageKind {
        authentication: false,
        bid_spec: payload.has_bid_spec,
        campaign: route.endpoint == Endpoint::MarketingMessages || sender.is_campaign(config),
    };
    if let Some(template) = payload.template() {
        // Boxed: the lookup (cache, then Meta) is a large future that a
        // send without a template never needs, and every send would
        // otherwise carry, and copy, its space.
        let category = Box::pin(app.templates.category(config, &template, lookup)).await;
        match category.map_or(config.policy.unknown_category, unknown_as) {
            UnknownCategory::Authentication => kind.authentication = true,
            UnknownCategory::Marketing => kind.campaign = true,
            UnknownCategory::Allow => {}
        }
    }
    kind
}

/// A known category, expressed as the treatment an unknown one could get.
fn unknown_as(category: Category) -> UnknownCategory {
    match category {
        Category::Authentication => UnknownCategory::Authentication,
        Category::Marketing => UnknownCategory::Marketing,
        Category::Utility => UnknownCategory::Allow,
    }
}

/// The pair a successful send proves, when the sender gave both identifiers.
/// A phone sendgate resolved itself is already known and teaches nothing.
fn learnable_pair(facts: &Facts<'_>, decision: &Decision, mode: Mode) -> Option<(String, String)> {
    let forwarded = match decision {
        Decision::Block(_) => mode == Mode::Report,
        Decision::Forward | Decision::Rewrite { .. } => true,
    };
    let fields = [facts.to, facts.recipient];
    let phone = fields
        .iter()
        .flatten()
        .find(|r| r.class == IdClass::Phone)?;
    let bsuid = fields.iter().flatten().find(|r| r.class.is_bsuid())?;
    (forwarded && !facts.group).then(|| (phone_digits(phone.value), bsuid.value.to_owned()))
}

/// The `x-sendgate-decision` value: `forwarded`, `rewritten: to->recipient`,
/// `resolved: bsuid->phone`, `blocked: <reason>`, or in report mode
/// `would-rewrite: …`, `would-resolve: …`, `would-block: …`.
pub fn decision_label(decision: &Decision, mode: Mode) -> Cow<'static, str> {
    match decision {
        Decision::Forward => Cow::Borrowed("forwarded"),
        Decision::Block(reason) => refusal_label(reason.as_str(), mode),
        Decision::Rewrite { actions, .. } => Cow::Borrowed(rewrite_label(*actions, mode)),
    }
}

/// The label of a rewrite: one of eight per mode, each spelled once, so
/// that labelling a send allocates nothing.
fn rewrite_label(actions: Actions, mode: Mode) -> &'static str {
    static LABELS: OnceLock<[[String; 8]; 2]> = OnceLock::new();
    let labels = LABELS.get_or_init(|| {
        let spell = |mode: Mode, index: usize| {
            let (rewrite, resolve) = match mode {
                Mode::Enforce => ("rewritten", "resolved"),
                Mode::Report => ("would-rewrite", "would-resolve"),
            };
            let actions = [
                (rewrite, "to->recipient"),
                (rewrite, "recipient->to"),
                (resolve, "bsuid->phone"),
            ];
            actions
                .iter()
                .enumerate()
                .filter(|(bit, _)| index & (1 << bit) != 0)
                .map(|(_, (verb, what))| format!("{verb}: {what}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        [Mode::Enforce, Mode::Report].map(|mode| std::array::from_fn(|index| spell(mode, index)))
    });
    let index = usize::from(actions.to_recipient)
        | usize::from(actions.recipient_to) << 1
        | usize::from(actions.resolved) << 2;
    let mode = match mode {
        Mode::Enforce => 0,
        Mode::Report => 1,
    };
    &labels[mode][index]
}

fn refusal_label(reason: &str, mode: Mode) -> Cow<'static, str> {
    Cow::Owned(match mode {
        Mode::Enforce => format!("blocked: {reason}"),
        Mode::Report => format!("would-block: {reason}"),
    })
}

fn log_decision(
    config: &Config,
    request_id: &(dyn fmt::Display + Sync),
    route: SendRoute<'_>,
    sender: &Sender<'_>,
    facts: &Facts<'_>,
    label: &str,
) {
    let show = config.log.show_identifiers;
    let describe = |r: Option<Recipient<'_>>| match r {
        Some(r) => format!("{:?}:{}", r.class, mask(r.value, show)),
        None => "-".to_owned(),
    };
    tracing::info!(
        target: "sendgate::decision",
        request_id = %request_id,
        number = route.phone_number_id,
        endpoint = route.endpoint.as_str(),
        client = %Escaped(&sender.name()),
        to = %describe(facts.to),
        recipient = %describe(facts.recipient),
        decision = %Escaped(label),
        "send decision"
    );
}

fn error_response(
    error: GraphError,
    label: Cow<'static, str>,
    request_id: &RequestId<'_>,
) -> Response<ProxyBody> {
    let mut response = error.into_response(request_id);
    set_decision_header(&mut response, label);
    response
}

fn set_decision_header(response: &mut Response<ProxyBody>, label: Cow<'static, str>) {
    // Either way the value takes the label's bytes as they are, uncopied.
    let bytes = match label {
        Cow::Borrowed(label) => Bytes::from_static(label.as_bytes()),
        Cow::Owned(label) => Bytes::from(label),
    };
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes) {
        response.headers_mut().insert(DECISION_HEADER, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_labels_name_every_action_in_order() {
        let actions = |to_recipient, recipient_to, resolved| Actions {
            to_recipient,
            recipient_to,
            resolved,
        };
        for (done, mode, label) in [
            (
                actions(true, false, false),
                Mode::Enforce,
                "rewritten: to->recipient",
            ),
            (
                actions(false, true, false),
                Mode::Enforce,
                "rewritten: recipient->to",
            ),
            (
                actions(false, false, true),
                Mode::Report,
                "would-resolve: bsuid->phone",
            ),
            (
                actions(true, false, true),
                Mode::Enforce,
                "rewritten: to->recipient, resolved: bsuid->phone",
            ),
            (
                actions(true, true, true),
                Mode::Report,
                "would-rewrite: to->recipient, would-rewrite: recipient->to, \
                 would-resolve: bsuid->phone",
            ),
        ] {
            assert_eq!(rewrite_label(done, mode), label);
        }
    }
}
