//! An upstream answer on its way back to the client, and the Graph-shaped
//! 502 for one whose body failed before its head went out.

use std::fmt;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;

use crate::body::{BoxError, Prepended, ProxyBody, full_body};
use crate::graph_error::GraphError;
use crate::headers;
use crate::upstream::UpstreamBody;

/// An upstream response on its way back: hop-by-hop headers go, the body
/// streams. Its first frame is awaited before the head goes out, so that a
/// body that fails at once (a bad chunk, an upstream gone after its head)
/// is still answered with a Graph-shaped 502, not an empty reply; a body
/// that is whole in that frame goes out as it is, its length exact.
pub(crate) async fn relay(
    response: Response<UpstreamBody>,
) -> Result<Response<ProxyBody>, BoxError> {
    let (mut parts, mut body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if http_body::Body::is_end_stream(&body) {
        return Ok(Response::from_parts(parts, body.boxed()));
    }
    let body = match body.frame().await {
        None => full_body(Bytes::new()),
        Some(Ok(frame)) if http_body::Body::is_end_stream(&body) => match frame.into_data() {
            Ok(data) => full_body(data),
            Err(trailers) => Prepended::new(trailers, body, true).boxed(),
        },
        Some(Ok(frame)) => Prepended::new(frame, body, false).boxed(),
        Some(Err(error)) => return Err(error),
    };
    Ok(Response::from_parts(parts, body))
}

/// The Graph-shaped 502 of an upstream whose response body failed before
/// its head went out.
pub(crate) fn body_failed(
    error: &BoxError,
    request_id: &(dyn fmt::Display + Sync),
) -> Response<ProxyBody> {
    tracing::warn!(request_id = %request_id, error = %error, "upstream response body failed before its head went out");
    GraphError::upstream_unavailable().into_response(request_id)
}
