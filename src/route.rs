//! Which requests are sends: one recognizer for every spelling of a send
//! the Cloud API might accept.
//!
//! sendgate guards sends, so it must not depend on how Graph reads an odd
//! request. Whatever could be a send is inspected like one, or refused with
//! a Graph-shaped 400 that says why; it is never forwarded uninspected. A
//! path is read the way the most lenient server would read it: every
//! percent-escape decoded (again, while decoding changes it), `\` taken for
//! `/`, `;params` cut off each segment, empty and `.` segments dropped, `..`
//! applied, the version and the endpoint in any case, junk after the
//! endpoint or the number ignored, leading zeros of the number dropped. A
//! send found that way goes upstream under its canonical path, so Meta
//! receives exactly the send that was inspected.
//!
//! The method counts both as sent and as overridden (`?method=post`, which
//! Graph honours): a send is a POST that nothing overrides. A request whose
//! method and override disagree about being a POST is refused, and so is
//! any method but a bodiless read on a send path.
//!
//! The Graph root (`/`, `/{version}`) takes batch requests, whose entries
//! may be sends: [`Route::Root`] tells the caller to read the body and look
//! ([`batch_entries`]).
//!
//! Pure: no I/O, no config. The fast path, a canonical `POST` to
//! `/{version}/{id}/messages`, costs one scan of the path.

use std::borrow::Cow;

use http::Method;

use crate::query::{hex_value, query_pairs};

/// The two send endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    /// The Marketing Messages API: every send here is a campaign send.
    MarketingMessages,
}

impl Endpoint {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Endpoint::Messages => "messages",
            Endpoint::MarketingMessages => "marketing_messages",
        }
    }
}

/// A request recognised as a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRoute<'a> {
    /// `v21.0`; Graph also accepts unversioned paths.
    pub(crate) version: Option<&'a str>,
    /// Digits, no leading zero.
    pub(crate) phone_number_id: &'a str,
    pub(crate) endpoint: Endpoint,
}

/// Why a request that could be a send is refused rather than inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsendable {
    /// The method and a `method=` override disagree about being a POST, or
    /// the override is given twice.
    MethodOverride,
    /// A method other than POST (or a bodiless read) on a send path.
    UnsupportedMethod,
    /// A read (GET, HEAD) on a send path that carries a body.
    BodyOnRead,
    /// A send whose query names a parameter Graph could read as part of
    /// the message.
    QueryParameters,
}

impl Unsendable {
    /// The machine-readable reason, as in `error_data.details`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Unsendable::MethodOverride => "method_override",
            Unsendable::UnsupportedMethod => "unsupported_method",
            Unsendable::BodyOnRead => "body_on_read",
            Unsendable::QueryParameters => "query_parameters",
        }
    }

    /// What was wrong, in plain words.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Unsendable::MethodOverride => {
                "A send must be a POST, and a `method` query parameter may not make another method a send or a send another method. Send a plain POST."
            }
            Unsendable::UnsupportedMethod => {
                "Only POST sends a message on this path. Send a POST with the message as a JSON body."
            }
            Unsendable::BodyOnRead => {
                "A read on a send path may not carry a body. Send a POST with the message as a JSON body."
            }
            Unsendable::QueryParameters => {
                "A send may carry only access_token, appsecret_proof, appsecret_time and Graph's output switches in its query. Put the message's fields in the JSON body."
            }
        }
    }
}

/// What a request is, as far as sendgate cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// A send at its canonical path: inspect it as it is.
    Send(SendRoute<'a>),
    /// A send written another way: inspect it, and forward it as a POST
    /// with this canonical path (and the original query).
    SendAt(String),
    /// Could be a send, cannot be inspected: refuse it.
    Refuse(Unsendable),
    /// The Graph root, asked to do something that may be a batch: read the
    /// body and look for sends in it.
    Root,
    /// Not a send: stream it through untouched.
    Other,
}

/// The most times a segment is percent-decoded: enough for any layering a
/// server might undo, and a bound on the work.
const MAX_DECODINGS: usize = 4;

/// Recognises a request by its method, path, query and whether it has a body.
pub(crate) fn recognize<'a>(
    method: &Method,
    path: &'a str,
    query: Option<&str>,
    has_body: bool,
) -> Route<'a> {
    let overridden = match query.map(method_override) {
        Some(Err(())) => return refuse_if_could_send(path),
        Some(Ok(overridden)) => overridden,
        None => None,
    };
    if overridden.is_none() {
        // The two cases nearly every request is: a canonical send, and a
        // bodiless read (which no path makes a send).
        if method == Method::POST
            && let Some(route) = send_route(path)
        {
            return send_unless_queried(Route::Send(route), query);
        }
        if !has_body && (method == Method::GET || method == Method::HEAD) {
            return Route::Other;
        }
    }
    let posted = method == Method::POST || is_post(method.as_str());
    let effective_post = overridden.as_deref().map_or(posted, is_post);
    // A canonical send path was recognised above unless overridden.
    let reading = match overridden.is_some() || method != Method::POST {
        true => send_route(path)
            .map_or_else(|| read_path(path), |route| Reading::Send(canonical(&route))),
        false => read_path(path),
    };
    let canonical = match reading {
        Reading::Send(canonical) => canonical,
        Reading::Root if posted || effective_post => return Route::Root,
        Reading::Root | Reading::Neither => return Route::Other,
    };
    if posted != effective_post {
        return Route::Refuse(Unsendable::MethodOverride);
    }
    if !posted {
        let read = |name: &str| ["GET", "HEAD", "DELETE", "OPTIONS"].contains(&name);
        let upper = method.as_str().to_ascii_uppercase();
        let effective = overridden.map_or_else(|| upper.clone(), |o| o.to_ascii_uppercase());
        return match (read(&upper) && read(&effective), has_body) {
            (true, false) => Route::Other,
            (true, true) => Route::Refuse(Unsendable::BodyOnRead),
            (false, _) => Route::Refuse(Unsendable::UnsupportedMethod),
        };
    }
    let route = match send_route(path) {
        Some(route) if canonical == path && method == Method::POST => Route::Send(route),
        _ => Route::SendAt(canonical),
    };
    send_unless_queried(route, query)
}

/// Query parameters a send may carry: credentials and Graph's output
/// switches. Any other parameter might be merged into the message by Graph
/// (a `to` in the query beside the body's), so a send carrying one is
/// refused rather than guessed at.
const SEND_QUERY_PARAMETERS: [&str; 8] = [
    "access_token",
    "appsecret_proof",
    "appsecret_time",
    "method",
    "debug",
    "pretty",
    "format",
    "suppress_http_code",
];

fn send_unless_queried<'a>(route: Route<'a>, query: Option<&str>) -> Route<'a> {
    let Some(query) = query else { return route };
    let unknown = query_pairs(query).any(|(name, _)| {
        !SEND_QUERY_PARAMETERS
            .iter()
            .any(|known| name.trim().eq_ignore_ascii_case(known))
    });
    if unknown {
        Route::Refuse(Unsendable::QueryParameters)
    } else {
        route
    }
}

/// A `method=` override refused for being given twice: refused only where
/// the path could be a send, passed through elsewhere.
fn refuse_if_could_send(path: &str) -> Route<'_> {
    if send_route(path).is_some() {
        return Route::Refuse(Unsendable::MethodOverride);
    }
    match read_path(path) {
        Reading::Send(_) | Reading::Root => Route::Refuse(Unsendable::MethodOverride),
        Reading::Neither => Route::Other,
    }
}

/// The value of the query's `method` parameter, if any; an error when it is
/// given more than once (which one Graph reads is unknowable).
fn method_override(query: &str) -> Result<Option<String>, ()> {
    // Cheap first look: most queries have no such parameter, spelled
    // plainly or with escapes.
    if !query.contains('%') && !contains_ignore_case(query, "method") {
        return Ok(None);
    }
    let mut found = None;
    for (name, value) in query_pairs(query) {
        if name.trim().eq_ignore_ascii_case("method") {
            if found.is_some() {
                return Err(());
            }
            found = Some(value.trim().to_owned());
        }
    }
    Ok(found)
}

fn is_post(method: &str) -> bool {
    method.trim().eq_ignore_ascii_case("POST")
}

/// Whether `text` holds `needle` (ASCII, lower case) in any case. Looks
/// closer only where the needle's first letter is.
fn contains_ignore_case(text: &str, needle: &str) -> bool {
    let (text, needle) = (text.as_bytes(), needle.as_bytes());
    let first = needle[0];
    text.iter().enumerate().any(|(at, &byte)| {
        byte | 0x20 == first
            && text
                .get(at..at + needle.len())
                .is_some_and(|window| window.eq_ignore_ascii_case(needle))
    })
}

/// Recognises a canonical send path,
/// `/{version}/{phone-number-id}/(marketing_)messages` or unversioned. The
/// version is `v` and digits with dots; the id is digits with no leading
/// zero. Anything else is for [`canonical_send_path`] to judge.
pub(crate) fn send_route(path: &str) -> Option<SendRoute<'_>> {
    // Cut at the last two slashes: most paths are not sends, and the last
    // segment alone tells.
    let rest = path.strip_prefix('/')?;
    let (rest, endpoint) = split_at_last_slash(rest)?;
    let endpoint = match endpoint {
        "messages" => Endpoint::Messages,
        "marketing_messages" => Endpoint::MarketingMessages,
        _ => return None,
    };
    let (version, phone_number_id) = match split_at_last_slash(rest) {
        Some((version, phone_number_id)) => (Some(version), phone_number_id),
        None => (None, rest),
    };
    if !is_id(phone_number_id) || version.is_some_and(|version| !is_version(version)) {
        return None;
    }
    Some(SendRoute {
        version,
        phone_number_id,
        endpoint,
    })
}

/// `a/b/c` → (`a/b`, `c`). A byte search: `str::rsplit` and `str::rfind`
/// with a char pattern cost several times as much on a send's short path.
fn split_at_last_slash(text: &str) -> Option<(&str, &str)> {
    let at = text.bytes().rposition(|byte| byte == b'/')?;
    Some((&text[..at], &text[at + 1..]))
}

/// Digits with no leading zero (`0` itself is an id, if no number's).
fn is_id(text: &str) -> bool {
    !text.is_empty()
        && (text == "0" || !text.starts_with('0'))
        && text.bytes().all(|b| b.is_ascii_digit())
}

/// `v` and digits with dots, lower case.
fn is_version(text: &str) -> bool {
    text.strip_prefix('v').is_some_and(|rest| {
        !rest.is_empty()
            && rest.as_bytes()[0].is_ascii_digit()
            && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    })
}

/// The canonical path of whatever spelling of a send `path` is, or `None`
/// when no lenient reading makes it one (the fuzz target's oracle).
#[cfg(any(test, fuzzing))]
pub(crate) fn canonical_send_path(path: &str) -> Option<String> {
    if let Some(route) = send_route(path) {
        return Some(canonical(&route));
    }
    match read_path(path) {
        Reading::Send(canonical) => Some(canonical),
        Reading::Root | Reading::Neither => None,
    }
}

/// What a path reads as, leniently.
enum Reading {
    /// A send, at this canonical path.
    Send(String),
    /// The Graph root (`/`, `/{version}`), where batches go.
    Root,
    Neither,
}

/// The lenient reading of a path that is not a canonical send path (the
/// caller asked [`send_route`] first).
fn read_path(path: &str) -> Reading {
    if plainly_neither(path) {
        return Reading::Neither;
    }
    let segments = lenient_segments(path);
    let (version, id, endpoint) = match segments.as_slice() {
        [] => return Reading::Root,
        [version] if canonical_version(version).is_some() => return Reading::Root,
        [id, endpoint] => (None, id, endpoint),
        [version, id, endpoint] => (Some(version), id, endpoint),
        _ => return Reading::Neither,
    };
    let endpoint = match word_before_junk(&endpoint.to_ascii_lowercase()).as_str() {
        "messages" => Endpoint::Messages,
        "marketing_messages" => Endpoint::MarketingMessages,
        _ => return Reading::Neither,
    };
    let Some(id) = id_before_junk(id) else {
        return Reading::Neither;
    };
    let version = match version.map(|version| canonical_version(version)) {
        Some(None) => return Reading::Neither,
        Some(Some(version)) => Some(version),
        None => None,
    };
    let route = SendRoute {
        version: version.as_deref(),
        phone_number_id: &id,
        endpoint,
    };
    Reading::Send(canonical(&route))
}

/// True for a path that no lenient reading makes a send or the root, told
/// without reading it: one with no escape, backslash, `;params`, empty or
/// dot segment reads segment by segment as written, so it is neither when
/// it has two segments or more and its last does not start with the
/// endpoint's name in some case. Every passthrough request asks this; the
/// searches are memchr's vectorised ones.
fn plainly_neither(path: &str) -> bool {
    let bytes = path.as_bytes();
    let plain = memchr::memchr3(b'%', b'\\', b';', bytes).is_none()
        && memchr::memchr_iter(b'/', bytes)
            .all(|at| !matches!(bytes.get(at + 1), Some(b'/' | b'.')));
    if !plain {
        return false;
    }
    let trimmed = bytes.strip_suffix(b"/").unwrap_or(bytes);
    let Some(last_slash) = memchr::memrchr(b'/', trimmed) else {
        return false;
    };
    if last_slash == 0 {
        // One segment: the root's version, perhaps.
        return false;
    }
    let last = &trimmed[last_slash + 1..];
    let starts_with = |name: &[u8]| {
        last.get(..name.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(name))
    };
    !starts_with(b"messages") && !starts_with(b"marketing_messages")
}

fn canonical(route: &SendRoute<'_>) -> String {
    match route.version {
        Some(version) => format!(
            "/{version}/{}/{}",
            route.phone_number_id,
            route.endpoint.as_str()
        ),
        None => format!("/{}/{}", route.phone_number_id, route.endpoint.as_str()),
    }
}

/// The path's segments as the most lenient server would read them.
fn lenient_segments(path: &str) -> Vec<String> {
    let decoded = decode_fully(path.as_bytes());
    let text = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<String> = Vec::new();
    for raw in text.split(['/', '\\']) {
        let segment = raw.split(';').next().unwrap_or("").trim();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment.to_owned()),
        }
    }
    segments
}

/// Percent-decodes until nothing changes (at most [`MAX_DECODINGS`] times).
fn decode_fully(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut current = Cow::Borrowed(bytes);
    for _ in 0..MAX_DECODINGS {
        if !current.contains(&b'%') {
            break;
        }
        let decoded = percent_decode(&current);
        if decoded == *current {
            break;
        }
        current = Cow::Owned(decoded);
    }
    current
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some(hex_value(*bytes.get(i + 1)?)? << 4 | hex_value(*bytes.get(i + 2)?)?))
            .flatten();
        match escape {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// The leading word of `a-z` and `_` when what follows it is no letter or
/// digit: `messages.json`, `messages\0x` and `messages~` read as `messages`.
fn word_before_junk(segment: &str) -> String {
    let end = segment
        .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .unwrap_or(segment.len());
    let rest = &segment[end..];
    if rest.starts_with(|c: char| c.is_alphanumeric()) {
        return segment.to_owned();
    }
    segment[..end].to_owned()
}

/// The number in an id segment: its leading digits, when what follows them
/// is no letter, without leading zeros.
fn id_before_junk(segment: &str) -> Option<String> {
    let end = segment
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(segment.len());
    let (digits, rest) = segment.split_at(end);
    if digits.is_empty() || rest.starts_with(|c: char| c.is_alphabetic()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed }.to_owned())
}

/// `V21.0`, `v21` → `v21.0`, `v21`: a version in lower case.
fn canonical_version(segment: &str) -> Option<String> {
    let lower = segment.to_ascii_lowercase();
    is_version(&lower).then_some(lower)
}

/// One request inside a Graph batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchEntry {
    /// As given; Graph's default is GET.
    pub(crate) method: String,
    pub(crate) relative_url: String,
    /// The entry's parameters, form-encoded as Graph takes them.
    pub(crate) body: Option<String>,
}

impl BatchEntry {
    /// What this entry is, read like a request of its own.
    /// Owned, since the entry's path may need a leading slash added.
    pub(crate) fn route(&self) -> Route<'static> {
        let method = Method::from_bytes(self.method.trim().as_bytes()).unwrap_or(Method::GET);
        let url = self.relative_url.trim();
        let (path, query) = match url.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (url, None),
        };
        let path = if path.starts_with('/') {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(format!("/{path}"))
        };
        let has_body = self.body.as_deref().is_some_and(|body| !body.is_empty());
        match recognize(&method, &path, query, has_body) {
            Route::Send(route) => Route::SendAt(canonical(&route)),
            Route::SendAt(path) => Route::SendAt(path),
            Route::Refuse(why) => Route::Refuse(why),
            Route::Root => Route::Root,
            Route::Other => Route::Other,
        }
    }
}

/// Why a batch could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnreadableBatch(pub String);

/// The entries of a Graph batch request, if the request is one: the
/// `batch` parameter of the query, of a form-encoded body, or of a JSON
/// body (an array, or a string holding one). `Ok(None)` when no `batch` is
/// given at all; an error when one is given but cannot be read, or is given
/// twice.
pub(crate) fn batch_entries(
    query: Option<&str>,
    body: &[u8],
) -> Result<Option<Vec<BatchEntry>>, UnreadableBatch> {
    let mut found: Vec<serde_json::Value> = Vec::new();
    let from_form = |text: &str, found: &mut Vec<serde_json::Value>| {
        for (name, value) in query_pairs(text) {
            if name.trim().eq_ignore_ascii_case("batch") {
                found.push(serde_json::Value::String(value));
            }
        }
    };
    if let Some(query) = query.filter(|q| contains_ignore_case(q, "batch")) {
        from_form(query, &mut found);
    }
    if contains_ignore_case(&String::from_utf8_lossy(body), "batch") {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(members)) => {
                for (name, value) in members {
                    if name.trim().eq_ignore_ascii_case("batch") {
                        found.push(value);
                    }
                }
            }
            Ok(_) => {}
            Err(_) => match std::str::from_utf8(body) {
                Ok(text) if !text.contains(['\r', '\n']) => from_form(text, &mut found),
                // Multipart or anything else that names a batch: unreadable.
                _ => {
                    return Err(UnreadableBatch(
                        "a batch in a body that is neither JSON nor form-encoded".into(),
                    ));
                }
            },
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => parse_batch(found.remove(0)).map(Some),
        _ => Err(UnreadableBatch("`batch` is given more than once".into())),
    }
}

fn parse_batch(value: serde_json::Value) -> Result<Vec<BatchEntry>, UnreadableBatch> {
    let value = match value {
        serde_json::Value::String(text) => serde_json::from_str(&text)
            .map_err(|err| UnreadableBatch(format!("`batch` is not a JSON array: {err}")))?,
        other => other,
    };
    let serde_json::Value::Array(items) = value else {
        return Err(UnreadableBatch("`batch` is not a JSON array".into()));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let text = |key: &str| match item.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
                Some(serde_json::Value::Object(_)) if key == "body" => {
                    Ok(Some(item[key].to_string()))
                }
                Some(_) => Err(UnreadableBatch(format!(
                    "batch entry {index}: `{key}` is not a string"
                ))),
            };
            if !item.is_object() {
                return Err(UnreadableBatch(format!(
                    "batch entry {index} is not an object"
                )));
            }
            Ok(BatchEntry {
                method: text("method")?.unwrap_or_else(|| "GET".to_owned()),
                relative_url: text("relative_url")?.ok_or_else(|| {
                    UnreadableBatch(format!("batch entry {index} has no relative_url"))
                })?,
                body: text("body")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(path: &str) -> Route<'_> {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        recognize(&Method::POST, path, query, true)
    }

    fn with<'a>(method: &str, path: &'a str, has_body: bool) -> Route<'a> {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        recognize(
            &Method::from_bytes(method.as_bytes()).unwrap(),
            path,
            query,
            has_body,
        )
    }

    const CANONICAL: &str = "/v21.0/106540352242922/messages";

    #[test]
    fn canonical_sends_take_the_fast_path() {
        for path in [
            CANONICAL,
            "/106540352242922/messages",
            "/v23.0/1/marketing_messages",
        ] {
            assert_eq!(post(path), Route::Send(send_route(path).unwrap()), "{path}");
        }
        assert_eq!(
            send_route(CANONICAL),
            Some(SendRoute {
                version: Some("v21.0"),
                phone_number_id: "106540352242922",
                endpoint: Endpoint::Messages
            })
        );
    }

    /// Every spelling of a send the issue lists, and a few more: each is
    /// inspected under the canonical path, never passed through.
    #[test]
    fn every_spelling_of_a_send_is_recognised() {
        let canonical = |path: &str| Route::SendAt(path.to_owned());
        let table: &[(&str, &str, Route)] = &[
            (
                "POST",
                "/v21.0/106540352242922/messages/",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "//v21.0//106540352242922//messages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/./106540352242922/messages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/x/../106540352242922/messages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922/messages/.",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922/%6Dessages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922/%256Dessages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922%2Fmessages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0%2F106540352242922%2fmessages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/%31%30%36540352242922/messages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0\\106540352242922\\messages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/V21.0/106540352242922/messages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922/MESSAGES",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922/Messages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922/messages;x=1",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0;a/106540352242922;b/messages;c",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922/messages.json",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922/messages%00",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922/messages%20",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/0106540352242922/messages",
                canonical(CANONICAL),
            ),
            (
                "POST",
                "/v21.0/106540352242922 /messages",
                canonical(CANONICAL),
            ),
            ("post", CANONICAL, canonical(CANONICAL)),
            ("Post", CANONICAL, canonical(CANONICAL)),
            (
                "POST",
                "/v21.0/1/Marketing_Messages",
                canonical("/v21.0/1/marketing_messages"),
            ),
            (
                "POST",
                "/106540352242922/messages/",
                canonical("/106540352242922/messages"),
            ),
        ];
        for (method, path, expected) in table {
            assert_eq!(&with(method, path, true), expected, "{method} {path}");
        }
    }

    #[test]
    fn method_overrides_never_hide_a_send() {
        let refuse = Route::Refuse(Unsendable::MethodOverride);
        for (method, path) in [
            ("GET", "/v21.0/1/messages?method=post"),
            ("GET", "/v21.0/1/messages?%6Dethod=post"),
            ("GET", "/v21.0/1/messages?METHOD=POST"),
            ("GET", "/v21.0/1/messages?method=%50OST"),
            ("DELETE", "/v21.0/1/messages?method=post"),
            ("POST", "/v21.0/1/messages?method=get"),
            ("POST", "/v21.0/1/messages?method=delete"),
            ("POST", "/v21.0/1/messages?method=post&method=get"),
            ("GET", "/v21.0/1/%6Dessages?method=post"),
        ] {
            assert_eq!(with(method, path, false), refuse, "{method} {path}");
        }
        assert!(
            matches!(
                with("POST", "/v21.0/1/messages?method=post", true),
                Route::Send(_)
            ),
            "an override that agrees is a send"
        );
    }

    #[test]
    fn a_send_carries_only_credentials_and_output_switches_in_its_query() {
        assert!(matches!(
            post("/v21.0/1/messages?access_token=t&pretty=1"),
            Route::Send(_)
        ));
        for query in [
            "to=pablomorales",
            "recipient=US.1",
            "access_token=t&Type=text",
            "x",
        ] {
            assert_eq!(
                post(&format!("/v21.0/1/messages?{query}")),
                Route::Refuse(Unsendable::QueryParameters),
                "{query}"
            );
        }
        assert_eq!(
            post("/v21.0/1/MESSAGES?to=x"),
            Route::Refuse(Unsendable::QueryParameters)
        );
        assert_eq!(post("/v21.0/1/media?to=x"), Route::Other);
    }

    #[test]
    fn other_methods_on_a_send_path_are_reads_or_refused() {
        assert_eq!(with("GET", CANONICAL, false), Route::Other);
        assert_eq!(with("HEAD", CANONICAL, false), Route::Other);
        assert_eq!(
            with("GET", CANONICAL, true),
            Route::Refuse(Unsendable::BodyOnRead)
        );
        for method in ["PUT", "PATCH", "POSTX", "CONNECT", "send"] {
            assert_eq!(
                with(method, CANONICAL, true),
                Route::Refuse(Unsendable::UnsupportedMethod),
                "{method}"
            );
        }
    }

    #[test]
    fn non_sends_are_left_alone() {
        for path in [
            "/v21.0/106540352242922/media",
            "/v21.0/106540352242922",
            "/v21.0/106540352242922/message",
            "/v21.0/106540352242922/messagesx",
            "/v21.0/106540352242922/messages/x",
            "/v21.0/abc/messages",
            "/v21.0/1a/messages",
            "/x/v21.0/1/messages",
            "/latest/1/messages",
            "/messages",
            "/v21.0/messages",
            "/v21.0/1/2/messages",
            "/v21.0/102290129340398/message_templates",
        ] {
            assert_eq!(post(path), Route::Other, "{path}");
            assert_eq!(canonical_send_path(path), None, "{path}");
        }
    }

    #[test]
    fn the_root_in_any_spelling_may_hold_a_batch() {
        for path in [
            "/", "//", "/v21.0", "/v21.0/", "/V21.0", "/./", "/%2F", "/x/..",
        ] {
            assert_eq!(post(path), Route::Root, "{path}");
        }
        assert_eq!(with("GET", "/", false), Route::Other);
        assert_eq!(with("GET", "/?method=post", false), Route::Root);
        assert_eq!(post("/v21.0/me"), Route::Other);
    }

    #[test]
    fn a_canonical_path_is_recognised_as_itself() {
        // The last two: found by fuzzing, an id of zeros reads as `0`, which
        // must then be an id of the canonical path too.
        for path in [
            "/v21.0/1/messages/",
            "/v221.1/0/messages(",
            "/v21.0/000/messages",
            "/V2/0001/MESSAGES",
            "/1/marketing_messages;x",
        ] {
            let canonical = canonical_send_path(path).unwrap();
            assert!(matches!(post(&canonical), Route::Send(_)), "{canonical}");
            assert_eq!(canonical_send_path(&canonical), Some(canonical.clone()));
        }
    }

    #[test]
    fn batches_are_found_in_the_query_a_form_or_json() {
        let entries = r#"[{"method":"POST","relative_url":"v21.0/1/messages","body":"to=pablomorales&type=text"},{"relative_url":"me"}]"#;
        let form = format!("access_token=t&batch={}", urlencode(entries));
        let json = format!(r#"{{"access_token":"t","batch":{entries}}}"#);
        let json_string = serde_json::json!({ "batch": entries }).to_string();
        for (query, body) in [
            (Some(form.as_str()), ""),
            (None, form.as_str()),
            (None, json.as_str()),
            (None, json_string.as_str()),
        ] {
            let found = batch_entries(query, body.as_bytes()).unwrap().unwrap();
            assert_eq!(found.len(), 2);
            assert_eq!(found[0].route(), Route::SendAt("/v21.0/1/messages".into()));
            assert_eq!(found[1].method, "GET");
            assert_eq!(found[1].route(), Route::Other);
        }
        assert_eq!(batch_entries(None, b"{\"a\":1}").unwrap(), None);
        assert_eq!(batch_entries(Some("x=1"), b"").unwrap(), None);
        assert!(batch_entries(None, b"batch=[1]").is_err());
        assert!(batch_entries(None, b"batch=nope").is_err());
        assert!(
            batch_entries(Some("batch=[]"), b"batch=[]").is_err(),
            "twice"
        );
        let multipart = b"--x\r\nContent-Disposition: form-data; name=\"batch\"\r\n\r\n[]\r\n--x--";
        assert!(batch_entries(None, multipart).is_err());
    }

    fn urlencode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
}
