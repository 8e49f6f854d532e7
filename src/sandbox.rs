//! A simulated Cloud API to develop and test against, with no Meta account.
//!
//! It answers sends the way Meta does (docs/cloud-api.md §2): `contacts[].input`
//! with `wa_id` for a phone send and `user_id` for a BSUID send, and a
//! `wamid.` id. Like Meta, it accepts a BSUID placed in `to` with a 200 and
//! then never delivers it: the sandbox records such a send as *dropped*. It
//! refuses authentication templates to a BSUID with 131062, lists a few
//! templates for category lookups, and lets a test (or `GET
//! /_sandbox/received`) read everything it received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::body::{ProxyBody, local_response};
use crate::identifier::{classify, phone_digits};
use crate::server::Handler;

/// The business phone number id the sandbox walkthrough uses.
pub const PHONE_NUMBER_ID: &str = "106540352242922";
/// The WABA that owns the sandbox's templates.
pub const WABA_ID: &str = "102290129340398";

/// The templates the sandbox knows: (name, language, category).
pub const TEMPLATES: [(&str, &str, &str); 3] = [
    ("otp_login", "en_US", "AUTHENTICATION"),
    ("spring_sale", "en_US", "MARKETING"),
    ("order_update", "en_US", "UTILITY"),
];

/// What became of a request the sandbox received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A send Meta would deliver.
    Delivered,
    /// A send Meta accepts with 200 and silently never delivers (a BSUID in `to`).
    Dropped,
    /// A send Meta refuses; the Graph error code.
    Rejected(u32),
    /// Not a send.
    Other,
}

/// One request as the sandbox received it.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// The body exactly as received, lossily shown as text.
    pub body: String,
    #[serde(skip)]
    pub raw_body: Bytes,
    pub outcome: Outcome,
}

/// The simulated Cloud API.
#[derive(Default)]
pub struct Sandbox {
    received: Mutex<Vec<Received>>,
    next_message: AtomicU64,
}

impl Sandbox {
    pub fn new() -> Arc<Self> {
        Arc::new(Sandbox::default())
    }

    /// Everything received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("sandbox log poisoned").clone()
    }

    async fn answer(&self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        let authorized = request.headers().contains_key(header::AUTHORIZATION);
        let body = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => Bytes::new(),
        };
        if method == Method::GET && path == "/_sandbox/received" {
            let log = serde_json::to_vec(&self.received()).unwrap_or_default();
            return json_response(StatusCode::OK, Bytes::from(log));
        }
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let last = segments.last().copied().unwrap_or("");
        let (outcome, status, answer) = match (&method, last) {
            (&Method::POST, "messages" | "marketing_messages") => self.send(&body),
            (&Method::GET, "message_templates") if !authorized => {
                let error = graph_error(190, "Invalid OAuth access token.");
                (Outcome::Other, StatusCode::UNAUTHORIZED, error)
            }
            (&Method::GET, "message_templates") => {
                (Outcome::Other, StatusCode::OK, template_listing(&query))
            }
            (&Method::GET, id) => (Outcome::Other, StatusCode::OK, json!({"id": id})),
            _ => (Outcome::Other, StatusCode::OK, json!({"success": true})),
        };
        self.received
            .lock()
            .expect("sandbox log poisoned")
            .push(Received {
                method: method.to_string(),
                path: if query.is_empty() {
                    path
                } else {
                    format!("{path}?{query}")
                },
                body: String::from_utf8_lossy(&body).into_owned(),
                raw_body: body,
                outcome,
            });
        json_response(status, Bytes::from(answer.to_string()))
    }

    /// Answers a send as Meta would.
    fn send(&self, body: &[u8]) -> (Outcome, StatusCode, Value) {
        let Ok(send) = serde_json::from_slice::<Value>(body) else {
            let error = graph_error(100, "Invalid parameter");
            return (Outcome::Rejected(100), StatusCode::BAD_REQUEST, error);
        };
        let text = |key: &str| send.get(key).and_then(Value::as_str);
        let (to, recipient) = (text("to"), text("recipient"));
        let template = send.pointer("/template/name").and_then(Value::as_str);
        let is_auth = template.is_some_and(|name| {
            TEMPLATES
                .iter()
                .any(|(n, _, category)| *n == name && *category == "AUTHENTICATION")
        });
        let id = self.next_message.fetch_add(1, Ordering::Relaxed);
        let message = json!({"id": format!("wamid.SANDBOX{id:016}"), "message_status": "accepted"});
        let group = text("recipient_type") == Some("group");
        // `to` wins when both are present, exactly as at Meta.
        let (contact, outcome) = match (to, recipient) {
            // A group's id stands where a person's wa_id would.
            (Some(to), _) if group => (json!({"input": to, "wa_id": to}), Outcome::Delivered),
            (Some(to), _) if classify(to).is_bsuid() => {
                (json!({"input": to, "user_id": to}), Outcome::Dropped)
            }
            (Some(to), _) => (
                json!({"input": to, "wa_id": phone_digits(to)}),
                Outcome::Delivered,
            ),
            (None, Some(bsuid)) if classify(bsuid).is_bsuid() => {
                if is_auth || send.get("bid_spec").is_some() {
                    let error = graph_error(
                        131062,
                        "Business-scoped User ID (BSUID) recipients are not supported for this message.",
                    );
                    return (Outcome::Rejected(131062), StatusCode::BAD_REQUEST, error);
                }
                (
                    json!({"input": bsuid, "user_id": bsuid}),
                    Outcome::Delivered,
                )
            }
            _ => {
                let error = graph_error(100, "Invalid parameter");
                return (Outcome::Rejected(100), StatusCode::BAD_REQUEST, error);
            }
        };
        let answer =
            json!({"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]});
        (outcome, StatusCode::OK, answer)
    }
}

impl Handler for Sandbox {
    async fn call(&self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        self.answer(request).await
    }
}

/// The templates whose name contains `name=` (Meta's filter is a substring match).
fn template_listing(query: &str) -> Value {
    let wanted = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="))
        .unwrap_or("");
    let data: Vec<Value> = TEMPLATES
        .iter()
        .filter(|(name, _, _)| name.contains(wanted))
        .map(|(name, language, category)| {
            json!({"name": name, "language": language, "category": category, "status": "APPROVED"})
        })
        .collect();
    json!({"data": data, "paging": {}})
}

fn graph_error(code: u32, message: &str) -> Value {
    json!({"error": {
        "message": format!("(#{code}) {message}"),
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": message},
        "fbtrace_id": "SANDBOX",
    }})
}

fn json_response(status: StatusCode, body: Bytes) -> Response<ProxyBody> {
    local_response(status, "application/json", body)
}
