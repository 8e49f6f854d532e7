//! The body type that flows through the proxy in both directions, and the
//! helpers every module uses with it: bodies held in memory, a body with
//! its first frame put back, reading a whole body within a limit, and a
//! response sendgate makes itself. It depends on nothing else in the crate,
//! so the server loop, the upstream client, the handlers and the error
//! mapping all stand on it without depending on each other.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Errors of a body, boxed because bodies come from hyper and from memory.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type flowing through the proxy in both directions.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body held in memory, as a [`ProxyBody`].
pub fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with a frame taken from it put back in front: a request sent
/// again on another connection, a response whose first frame was awaited
/// before its head went out.
pub struct Prepended<B> {
    first: Option<Frame<Bytes>>,
    rest: B,
    /// `rest` has already said it has no more frames.
    ended: bool,
}

impl<B> Prepended<B> {
    pub fn new(first: Frame<Bytes>, rest: B, ended: bool) -> Self {
        Prepended {
            first: Some(first),
            rest,
            ended,
        }
    }
}

impl<B> http_body::Body for Prepended<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.rest).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        let rest = if self.ended {
            SizeHint::with_exact(0)
        } else {
            self.rest.size_hint()
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(first));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint
    }
}

/// The client's request body failed (it broke off, or sent bad chunks):
/// the client's fault, answered 400, never blamed on the upstream.
#[derive(Debug)]
pub struct ClientBodyError(pub BoxError);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the client's request body: {}", self.0)
    }
}

impl Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// Why [`read_whole`] got no body.
#[derive(Debug)]
pub enum ReadBodyError {
    /// More than the limit.
    TooLarge,
    /// The client's body failed (reset, bad framing).
    Broken,
}

/// Reads a whole body of at most `limit` bytes. A body in one piece (as
/// sendgate's own HTTP/1.1 loop gives them) is returned without a copy.
pub async fn read_whole(mut body: ProxyBody, limit: usize) -> Result<Bytes, ReadBodyError> {
    // The body so far while it is one piece; `joined` once it is more.
    let mut only: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut length = 0;
    while let Some(frame) = body.frame().await {
        let data = match frame.map_err(|_| ReadBodyError::Broken)?.into_data() {
            Ok(data) if !data.is_empty() => data,
            _ => continue,
        };
        length += data.len();
        if length > limit {
            return Err(ReadBodyError::TooLarge);
        }
        match only.take() {
            None if joined.is_empty() => only = Some(data),
            earlier => {
                joined.extend_from_slice(earlier.as_deref().unwrap_or_default());
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(only.unwrap_or_else(|| joined.freeze()))
}

/// A response sendgate makes itself (errors, admin answers, the sandbox).
pub fn local_response(
    status: http::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::StreamBody;

    use super::*;

    /// A body that arrives in `pieces`, as a streamed upload does.
    fn in_pieces(pieces: &[&'static str]) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = pieces
            .iter()
            .map(|piece| Ok(Frame::data(Bytes::from_static(piece.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn a_body_in_pieces_is_read_whole_up_to_its_limit() {
        let body = read_whole(in_pieces(&["abc", "", "def", "gh"]), 8).await;
        assert_eq!(body.unwrap(), "abcdefgh", "exactly the limit is fine");
        let over = read_whole(in_pieces(&["abc", "def", "ghi"]), 8).await;
        assert!(matches!(over, Err(ReadBodyError::TooLarge)));
    }

    #[tokio::test]
    async fn a_body_in_one_piece_is_returned_as_it_is() {
        let piece = Bytes::from_static(b"{\"to\":\"1\"}");
        let body = read_whole(full_body(piece.clone()), 64).await.unwrap();
        assert_eq!(body.as_ptr(), piece.as_ptr(), "not copied");
        let over = read_whole(full_body(piece), 9).await;
        assert!(matches!(over, Err(ReadBodyError::TooLarge)));
    }
}
