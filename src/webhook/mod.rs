//! The webhook relay: Meta → sendgate → the business's own webhook endpoint.
//!
//! Webhooks are where phone ↔ BSUID pairs appear (docs/cloud-api.md §6), so
//! sendgate sits on the webhook path too. A delivery is verified (HMAC-SHA256
//! of the raw body with the app secret), learned from (durably, before
//! anything is acknowledged), and forwarded byte for byte with its signature
//! to `webhook.forward_to`. Meta gets the downstream's status back, so a
//! failing downstream makes Meta retry (for up to 7 days) and nothing is lost.

pub mod learn;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::body::{ProxyBody, full_body, local_response, read_whole};
use crate::config::{Config, ConfigError, Secrets};
use crate::graph_error::GraphError;
use crate::identity::{Identities, IdentityEvent, Source};
use crate::query::{hex_value, query_pairs};
use crate::upstream::Upstream;

/// The header Meta signs every delivery with: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The relay on `webhook.path`.
pub struct Relay {
    key: hmac::Key,
    verify_token: String,
    downstream: Upstream,
    /// Path and query of `forward_to`, which every forwarded POST uses.
    forward_path: String,
    /// `webhook.path`: only a restart changes it, like the rest of the table.
    path: String,
}

/// How one delivery went, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The subscription handshake answered with its challenge.
    Verified,
    /// Signature checked, learned, forwarded; Meta gets the downstream's answer.
    Relayed,
    /// Forwarded, but the downstream failed or was unreachable.
    DownstreamFailed,
    /// Forwarded, but the store could not record what it taught: Meta is
    /// asked to retry so the lesson is not lost.
    StoreFailed,
    /// Missing or wrong signature (not learned, not forwarded), or a
    /// handshake with the wrong token.
    Unauthorized,
    /// Over `webhook.max_body_bytes` or unreadable.
    Rejected,
}

impl Outcome {
    /// Every outcome, so that each is counted (at 0) from the start.
    pub const ALL: [Outcome; 6] = [
        Outcome::Verified,
        Outcome::Relayed,
        Outcome::DownstreamFailed,
        Outcome::StoreFailed,
        Outcome::Unauthorized,
        Outcome::Rejected,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Relayed => "relayed",
            Outcome::DownstreamFailed => "downstream_failed",
            Outcome::StoreFailed => "store_failed",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Rejected => "rejected",
        }
    }
}

impl Relay {
    /// The relay for a config whose webhook path is set. Needs the app secret
    /// and the verify token (see [`Secrets::check`]).
    pub fn new(config: &Config, secrets: &Secrets) -> Result<Self, ConfigError> {
        secrets.check(config)?;
        let forward = config.webhook_forward_uri()?;
        let timeout = std::time::Duration::from_millis(config.webhook.timeout_ms);
        Ok(Relay {
            key: hmac::Key::new(
                hmac::HMAC_SHA256,
                secrets.app_secret.as_deref().unwrap_or_default().as_bytes(),
            ),
            verify_token: secrets.verify_token.clone().unwrap_or_default(),
            downstream: Upstream::to(&forward, timeout, config)?,
            forward_path: forward
                .path_and_query()
                .map_or_else(|| "/".to_owned(), ToString::to_string),
            path: config.webhook.path.clone(),
        })
    }

    /// The path Meta delivers to.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Answers Meta on the webhook path.
    pub async fn handle(
        &self,
        config: &Config,
        identities: &Arc<Identities>,
        request: Request<ProxyBody>,
    ) -> (Outcome, Response<ProxyBody>) {
        match *request.method() {
            Method::GET => {
                let answer = self.verify(request.uri().query().unwrap_or(""));
                match answer.status() {
                    StatusCode::OK => (Outcome::Verified, answer),
                    _ => (Outcome::Unauthorized, answer),
                }
            }
            Method::POST => self.deliver(config, identities, request).await,
            _ => (
                Outcome::Rejected,
                plain(StatusCode::METHOD_NOT_ALLOWED, "GET or POST only"),
            ),
        }
    }

    /// The subscription handshake: echo `hub.challenge` when the token matches.
    fn verify(&self, query: &str) -> Response<ProxyBody> {
        let (mut mode, mut token, mut challenge) = (None, None, None);
        for (name, value) in query_pairs(query) {
            match name.as_str() {
                "hub.mode" => mode = Some(value),
                "hub.verify_token" => token = Some(value),
                "hub.challenge" => challenge = Some(value),
                _ => {}
            }
        }
        let token_ok = token
            .is_some_and(|token| bool::from(token.as_bytes().ct_eq(self.verify_token.as_bytes())));
        match (mode.as_deref(), challenge) {
            (Some("subscribe"), Some(challenge)) if token_ok => plain(StatusCode::OK, &challenge),
            _ => plain(StatusCode::FORBIDDEN, "verification failed"),
        }
    }

    async fn deliver(
        &self,
        config: &Config,
        identities: &Arc<Identities>,
        request: Request<ProxyBody>,
    ) -> (Outcome, Response<ProxyBody>) {
        let (parts, body) = request.into_parts();
        let body = match read_whole(body, config.webhook.max_body_bytes).await {
            Ok(body) => body,
            Err(_) => {
                let response = plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "webhook body too large or unreadable",
                );
                return (Outcome::Rejected, response);
            }
        };
        let signature = parts
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        if !signature.is_some_and(|signature| self.signed(&body, signature)) {
            tracing::warn!("webhook refused: missing or wrong signature");
            return (
                Outcome::Unauthorized,
                plain(StatusCode::UNAUTHORIZED, "invalid signature"),
            );
        }

        let learned = learn_durably(config, identities, &body).await;

        let mut forward = Request::builder()
            .method(Method::POST)
            .uri(&self.forward_path);
        for (name, value) in &parts.headers {
            forward = forward.header(name, value);
        }
        let forward = match forward.body(full_body(body)) {
            Ok(forward) => forward,
            Err(_) => {
                return (
                    Outcome::Rejected,
                    plain(StatusCode::BAD_REQUEST, "bad request"),
                );
            }
        };
        let (outcome, response) = match self
            .downstream
            .send(Box::new(forward), tokio::time::Instant::now())
            .await
        {
            Ok(response) => {
                let success = response.status().is_success();
                match (crate::relay::relay(response).await, success) {
                    (Ok(relayed), true) => (Outcome::Relayed, relayed),
                    (Ok(relayed), false) => (Outcome::DownstreamFailed, relayed),
                    (Err(err), _) => {
                        tracing::warn!(error = %err, "webhook downstream answer broke off");
                        let failed = plain(StatusCode::BAD_GATEWAY, "webhook downstream failed");
                        (Outcome::DownstreamFailed, failed)
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "webhook downstream unreachable");
                let status = GraphError::from(&err).status;
                (
                    Outcome::DownstreamFailed,
                    plain(status, "webhook downstream unavailable"),
                )
            }
        };
        if !learned && outcome == Outcome::Relayed {
            let retry = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity store unavailable; retry",
            );
            return (Outcome::StoreFailed, retry);
        }
        tracing::info!(target: "sendgate::webhook", outcome = ?outcome, status = response.status().as_u16(), "webhook relayed");
        (outcome, response)
    }

    /// Checks `sha256=<hex>` against the HMAC of the raw body, in constant time.
    fn signed(&self, body: &[u8], signature: &str) -> bool {
        let Some(tag) = signature.strip_prefix("sha256=").and_then(decode_hex) else {
            return false;
        };
        hmac::verify(&self.key, body, &tag).is_ok()
    }
}

/// Learns what a verified payload teaches and commits it before returning.
/// False only when the store failed; a payload that is not a webhook, or
/// teaches nothing, is still a success.
async fn learn_durably(config: &Config, identities: &Arc<Identities>, body: &Bytes) -> bool {
    let Ok(learned) = learn::learn(body) else {
        tracing::info!("webhook payload is not a WhatsApp webhook; forwarded without learning");
        return true;
    };
    let events: Vec<(String, IdentityEvent)> = learned
        .into_iter()
        .map(|item| {
            (
                config.scope_of(&item.phone_number_id).key().into_owned(),
                item.event,
            )
        })
        .collect();
    if events.is_empty() {
        return true;
    }
    let identities = identities.clone();
    let applied =
        tokio::task::spawn_blocking(move || identities.apply(&events, Source::Webhook)).await;
    match applied {
        Ok(Ok(applied)) => {
            tracing::debug!(?applied, "learned from webhook");
            true
        }
        Ok(Err(err)) => {
            tracing::error!(error = %err, "could not record what a webhook taught");
            false
        }
        Err(err) => {
            tracing::error!(error = %err, "webhook learning task failed");
            false
        }
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(hex_value(pair[0])? << 4 | hex_value(pair[1])?))
        .collect()
}

/// `sha256=<hex>` of `body` under `secret`: what Meta sends, for tests and tools.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    let hex: String = tag
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    local_response(status, "text/plain; charset=utf-8", text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_reject_tampering() {
        let relay_key = hmac::Key::new(hmac::HMAC_SHA256, b"app-secret");
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let signature = sign("app-secret", body);
        let tag = decode_hex(signature.strip_prefix("sha256=").unwrap()).unwrap();
        assert!(hmac::verify(&relay_key, body, &tag).is_ok());
        assert!(hmac::verify(&relay_key, b"{}", &tag).is_err());
        assert_eq!(decode_hex("0g"), None);
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("00ff"), Some(vec![0, 255]));
    }
}
