//! Where a template's category comes from (docs/cloud-api.md §5).
//!
//! A send names its template but not its category, and the category decides
//! whether a BSUID may receive it. The answer comes from config overrides
//! first, then from Meta's `GET /{waba-id}/message_templates` with the
//! caller's own token, cached with a time-to-live (Meta can recategorise a
//! template, and the management API allows only ~200 calls an hour). A miss is
//! cached for a shorter time, and concurrent lookups of one template share a
//! single upstream call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, header};
use http_body_util::BodyExt;
use moka::Expiry;
use moka::future::Cache;
use serde::Deserialize;

use crate::body::{BoxError, full_body, read_whole};
use crate::config::{CacheConfig, Category, Config};
use crate::logging::Escaped;
use crate::send::payload::TemplateRef;
use crate::upstream::Upstream;

/// The most of a template listing sendgate reads.
const MAX_LISTING_BYTES: usize = 1 << 20;

/// Template categories from config and from Meta.
pub(crate) struct TemplateCategories {
    /// `waba \0 name \0 language` → the category, or `None` when Meta did not say.
    cache: Cache<String, Option<Category>>,
    upstream: Arc<Upstream>,
}

/// Found categories live for the positive TTL, misses for the negative one.
struct CategoryExpiry {
    found: Duration,
    missing: Duration,
}

impl Expiry<String, Option<Category>> for CategoryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Option<Category>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            self.found
        } else {
            self.missing
        })
    }
}

/// Where to ask and with whose token.
pub(crate) struct LookupContext<'a> {
    pub(crate) phone_number_id: &'a str,
    /// The Graph API version of the send's path, e.g. `v21.0`, reused for the lookup.
    pub(crate) version: Option<&'a str>,
    /// The sender's header fields: a lookup sends its `Authorization` on.
    /// Looked up only when a lookup is made, which few sends need.
    pub(crate) sender_headers: &'a HeaderMap,
}

impl TemplateCategories {
    pub(crate) fn new(cache: &CacheConfig, upstream: Arc<Upstream>) -> Self {
        let expiry = CategoryExpiry {
            found: Duration::from_secs(cache.template_ttl_secs),
            missing: Duration::from_secs(cache.template_negative_ttl_secs),
        };
        TemplateCategories {
            cache: Cache::builder()
                .max_capacity(cache.template_capacity)
                .expire_after(expiry)
                .build(),
            upstream,
        }
    }

    /// The category of `template` sent from a business number, or `None` when
    /// neither config nor Meta tells.
    pub(crate) async fn category(
        &self,
        config: &Config,
        template: &TemplateRef,
        context: &LookupContext<'_>,
    ) -> Option<Category> {
        if let Some(category) = config.templates.get(&template.name) {
            return Some(*category);
        }
        let waba = config.waba_of(context.phone_number_id)?;
        let language = template.language.as_deref().unwrap_or("");
        let key = [waba, template.name.as_str(), language].join("\0");
        self.cache
            .get_with(key, async {
                match self.fetch(waba, template, context).await {
                    Ok(category) => category,
                    Err(err) => {
                        tracing::warn!(waba, template = %Escaped(&template.name), error = %err, "template category lookup failed");
                        None
                    }
                }
            })
            .await
    }

    async fn fetch(
        &self,
        waba: &str,
        template: &TemplateRef,
        context: &LookupContext<'_>,
    ) -> Result<Option<Category>, BoxError> {
        let version = context.version.map(|v| format!("/{v}")).unwrap_or_default();
        let path = format!(
            "{version}/{waba}/message_templates?name={}&fields=name,language,category,status&limit=100",
            percent_encode(&template.name)
        );
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .body(full_body(Bytes::new()))?;
        if let Some(authorization) = context.sender_headers.get(header::AUTHORIZATION) {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization.clone());
        }
        let response = self
            .upstream
            .send(Box::new(request), tokio::time::Instant::now())
            .await
            .map_err(|err| format!("{err:?}"))?;
        let status = response.status();
        let body = read_whole(response.into_body().boxed(), MAX_LISTING_BYTES)
            .await
            .map_err(|err| format!("template listing: {err:?}"))?;
        if !status.is_success() {
            return Err(format!("Meta answered {status}").into());
        }
        Ok(category_from_listing(&body, template))
    }
}

#[derive(Deserialize)]
struct Listing {
    data: Vec<ListedTemplate>,
}

#[derive(Deserialize)]
struct ListedTemplate {
    name: String,
    language: Option<String>,
    category: Option<String>,
}

/// Picks the category of the exact (name, language) from a listing; Meta's
/// `name` filter also matches partial names.
fn category_from_listing(body: &[u8], template: &TemplateRef) -> Option<Category> {
    let listing: Listing = serde_json::from_slice(body).ok()?;
    let wanted = template.language.as_deref();
    listing
        .data
        .iter()
        .filter(|t| t.name == template.name)
        .find(|t| wanted.is_none() || t.language.as_deref() == wanted)
        .and_then(|t| t.category.as_deref())
        .and_then(parse_category)
}

fn parse_category(text: &str) -> Option<Category> {
    Category::from_word(&text.to_ascii_uppercase())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(name: &str, language: Option<&str>) -> TemplateRef {
        TemplateRef {
            name: name.into(),
            language: language.map(Into::into),
        }
    }

    #[test]
    fn picks_exact_name_and_language() {
        let listing = br#"{"data":[
            {"name":"otp_login_v2","language":"en_US","category":"MARKETING"},
            {"name":"otp_login","language":"es_ES","category":"UTILITY"},
            {"name":"otp_login","language":"en_US","category":"AUTHENTICATION","status":"APPROVED"}
        ],"paging":{}}"#;
        assert_eq!(
            category_from_listing(listing, &template("otp_login", Some("en_US"))),
            Some(Category::Authentication)
        );
        assert_eq!(
            category_from_listing(listing, &template("otp_login", Some("es_ES"))),
            Some(Category::Utility)
        );
        assert_eq!(
            category_from_listing(listing, &template("otp_login", Some("fr"))),
            None
        );
        assert_eq!(
            category_from_listing(listing, &template("nope", None)),
            None
        );
        assert_eq!(
            category_from_listing(b"not json", &template("otp_login", None)),
            None
        );
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(percent_encode("spring_sale-2"), "spring_sale-2");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
