//! Local errors shaped like Graph API errors (docs/design.md §3).
//!
//! Cloud API SDKs recognise an error only when it is a 4xx/5xx with a JSON
//! content type, an integer `error.code` and a string `error.message`
//! (docs/cloud-api.md §3), so every response sendgate makes up itself has exactly
//! that shape. Each error is tagged by the side that caused it, which fixes
//! its HTTP status.

use std::fmt;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::json;

use crate::body::{ProxyBody, local_response};
use crate::limits::LimitKind;
use crate::route::Unsendable;
use crate::send::policy::BlockReason;
use crate::upstream::UpstreamError;

/// A Graph-shaped error made by sendgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GraphError {
    pub(crate) status: StatusCode,
    /// `error.code`, the integer SDKs switch on.
    pub(crate) code: u32,
    /// `error.type`, as Meta spells it for the same kind of failure.
    pub(crate) kind: &'static str,
    /// `error.message`: what was wrong and what to do, never a secret.
    pub(crate) message: String,
    /// The machine-readable reason, first part of `error_data.details`.
    pub(crate) reason: &'static str,
}

impl GraphError {
    /// A send refused by the decision table.
    pub(crate) fn blocked(reason: BlockReason) -> Self {
        GraphError {
            status: StatusCode::BAD_REQUEST,
            code: reason.code(),
            kind: "OAuthException",
            message: format!("(#{}) {}", reason.code(), reason.message()),
            reason: reason.as_str(),
        }
    }

    /// The client sent something that is not a usable send body (code 100).
    pub(crate) fn invalid_request(reason: &'static str, message: impl Into<String>) -> Self {
        GraphError {
            status: StatusCode::BAD_REQUEST,
            code: 100,
            kind: "OAuthException",
            message: format!("(#100) {}", message.into()),
            reason,
        }
    }

    /// A limit refused the send (429). Code 130429 for a number's throughput,
    /// 131056 for a pair, 4 for a client's share, as Meta would answer.
    pub(crate) fn rate_limited(limit: LimitKind, retry_after: std::time::Duration) -> Self {
        let what = match limit {
            LimitKind::Number => {
                "This business number is sending faster than its throughput allows."
            }
            LimitKind::Pair => {
                "Too many messages to this person from this business number in a short time."
            }
            LimitKind::Client => "This client has used its share of the sending rate.",
        };
        GraphError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: limit.code(),
            kind: "OAuthException",
            message: format!(
                "(#{}) {what} Retry after {:.1} s.",
                limit.code(),
                retry_after.as_secs_f64()
            ),
            reason: match limit {
                LimitKind::Number => "number_rate_limit",
                LimitKind::Pair => "pair_rate_limit",
                LimitKind::Client => "client_rate_limit",
            },
        }
    }

    /// A request that could be a send but cannot be inspected (400, code 100).
    pub(crate) fn unsendable(why: Unsendable) -> Self {
        Self::invalid_request(why.reason(), why.message())
    }

    /// A sender whose token the business number is not configured to take
    /// (403, code 10: Meta's "permission denied").
    pub(crate) fn number_not_allowed() -> Self {
        GraphError {
            status: StatusCode::FORBIDDEN,
            code: 10,
            kind: "OAuthException",
            message:
                "(#10) This sender's token may not send for this business number through sendgate."
                    .into(),
            reason: "number_not_allowed",
        }
    }

    /// The client broke off while sending its body, or framed it wrong
    /// (400: the client's fault, whichever route it took).
    pub(crate) fn unreadable_body() -> Self {
        Self::invalid_request("unreadable_body", "The request body could not be read.")
    }

    /// A method sendgate does not forward (405). CONNECT asks a proxy for a
    /// tunnel; this one only relays the Cloud API's own requests.
    pub(crate) fn method_not_allowed(method: &http::Method) -> Self {
        GraphError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: 100,
            kind: "OAuthException",
            message: format!(
                "(#100) Unsupported request - method type: {}",
                method.as_str().escape_debug()
            ),
            reason: "method_not_allowed",
        }
    }

    /// The send body is over the configured cap.
    pub(crate) fn body_too_large(limit: usize) -> Self {
        GraphError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: 100,
            kind: "OAuthException",
            message: format!(
                "(#100) The send body is larger than this proxy accepts ({limit} bytes)."
            ),
            reason: "body_too_large",
        }
    }

    /// The upstream could not be reached or broke off (502). Code 2 is Meta's
    /// "service temporarily unavailable", which SDKs treat as transient.
    pub(crate) fn upstream_unavailable() -> Self {
        GraphError {
            status: StatusCode::BAD_GATEWAY,
            code: 2,
            kind: "OAuthException",
            message: "(#2) The Cloud API could not be reached through sendgate. Retry later."
                .into(),
            reason: "upstream_unavailable",
        }
    }

    /// The upstream did not answer in time (504).
    pub(crate) fn upstream_timeout() -> Self {
        GraphError {
            status: StatusCode::GATEWAY_TIMEOUT,
            code: 2,
            kind: "OAuthException",
            message: "(#2) The Cloud API did not answer in time through sendgate. Retry later."
                .into(),
            reason: "upstream_timeout",
        }
    }

    /// Every connection sendgate may hold is busy (503, code 2: transient).
    pub(crate) fn too_many_connections() -> Self {
        GraphError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: 2,
            kind: "OAuthException",
            message: "(#2) sendgate is at its connection limit. Retry later.".into(),
            reason: "too_many_connections",
        }
    }

    /// The JSON body, with `request_id` as `fbtrace_id` so a sender's log line
    /// can be matched to sendgate's.
    pub(crate) fn body(&self, request_id: impl fmt::Display) -> Bytes {
        let details = format!("{}: {}", self.reason, self.message);
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "code": self.code,
                "error_data": {"messaging_product": "whatsapp", "details": details},
                "fbtrace_id": request_id.to_string(),
            }
        });
        Bytes::from(body.to_string())
    }

    /// The whole response.
    pub(crate) fn into_response(self, request_id: impl fmt::Display) -> Response<ProxyBody> {
        local_response(self.status, "application/json", self.body(request_id))
    }
}

/// What the client is told when the upstream could not be asked.
impl From<&UpstreamError> for GraphError {
    fn from(error: &UpstreamError) -> Self {
        match error {
            UpstreamError::Unavailable(_) => GraphError::upstream_unavailable(),
            UpstreamError::Timeout => GraphError::upstream_timeout(),
            UpstreamError::ClientBody(_) => GraphError::unreadable_body(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_what_sdks_parse() {
        let error = GraphError::blocked(BlockReason::UsernameTarget {
            recased_bsuid: false,
        });
        let body: serde_json::Value = serde_json::from_slice(&error.body("req-1")).unwrap();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], 100);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Usernames cannot be")
        );
        assert_eq!(body["error"]["type"], "OAuthException");
        assert_eq!(body["error"]["fbtrace_id"], "req-1");
        assert!(
            body["error"]["error_data"]["details"]
                .as_str()
                .unwrap()
                .starts_with("username_target: ")
        );
    }

    #[test]
    fn auth_block_uses_metas_code() {
        let error = GraphError::blocked(BlockReason::AuthTemplateNeedsPhone);
        assert_eq!(error.code, 131062);
        assert!(error.message.starts_with("(#131062) "));
    }
}
