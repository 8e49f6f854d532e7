//! sendgate's own HTTP/1.1 client: one upstream connection, driven by the
//! task that makes the request.
//!
//! hyper's `client::conn::http1` runs every connection in a task of its own
//! and hands each request and response across a channel to it; that task
//! and the hand-off were a large share of what the proxy spent on a send
//! (BENCHMARKS.md, "Design choices"). Here, as nginx does with its upstreams, the task
//! that makes the request writes it on a pooled socket and reads the answer
//! itself: the response body reads the socket when it is polled, and the
//! connection goes back to the pool (`pool`) once the body has been read to
//! its end.
//!
//! A [`Connection`] owns the socket and a read buffer that lives as long as
//! the connection, so that a request in the steady state allocates nothing
//! for reading. What sendgate never needs is left out: upgrades,
//! pipelining, sending HTTP/1.0, request trailers. Everything read from the
//! upstream is bounded (head, chunk-size lines, trailers), and bytes that do
//! not frame as RFC 9112 says fail the request or the body and discard the
//! connection instead of guessing.

use std::fmt;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::either::Either;

use crate::body::{BoxError, Prepended, ProxyBody};
use crate::headers::NOT_FORWARDED;
use crate::http1::decode::{ChunkedDecoder, Decoded};
use crate::http1::encode::Encoder;
use crate::http1::{connection_closes, status_has_no_body};

mod head;

use head::{Head, MAX_HEAD, parse_head};

/// A first body frame up to this size is copied behind the head so that the
/// whole request goes out in one write; a larger one is written apart.
const INLINE_BODY: usize = 16 << 10;
/// A read is made with at least this much room.
const READ_SIZE: usize = 16 << 10;
/// The first read of an answer goes onto the stack, this much of it: a
/// connection waiting for its answer (a send waits on Meta for 100 ms to
/// seconds) then holds no buffer, and a Graph answer fits whole.
const FIRST_READ: usize = 2 << 10;

/// A connection's byte stream: plain TCP read and written directly, or
/// TLS as the connector hands it over. (Through the connector's
/// `MaybeHttpsStream` a plain stream crossed two adapters, tokio's traits
/// to hyper's and back, on every call; BENCHMARKS.md, "Design choices".)
/// The TLS variant is boxed apart: a TLS stream is over half a kilobyte,
/// which every plain connection would otherwise hold too.
type Io = Either<TcpStream, Box<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>>;

/// One HTTP/1.1 connection to the upstream, idle between requests.
pub(super) struct Connection {
    /// Boxed: the connection moves between the pool, the request and the
    /// response body, and a pointer moves for less (held inline, a plain
    /// connection cost more to move: BENCHMARKS.md, "Design choices").
    io: Box<Io>,
    /// Bytes read and not yet used. Empty whenever the connection is
    /// idle, and then without an allocation.
    buf: BytesMut,
    /// The deadline of the request in progress, made for the first request
    /// and moved on for each next one: a registered timer pushed later is
    /// one atomic update, where a new timer per request was put in the
    /// runtime's timer wheel and taken out again (BENCHMARKS.md, "Design
    /// choices"). Between requests it may fire once for the last
    /// deadline and wake the task that set it, which then finds nothing.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// Why a request on a connection got no response head.
pub(super) enum Failure {
    /// The first write of the request failed: the upstream cannot have
    /// seen a whole request (over TLS a record or two may have left before
    /// the error), so it may go on another connection. The request comes
    /// back whole, any body frame already taken put back in front.
    Unsent(Box<Request<ProxyBody>>, Error),
    /// The request may have reached the upstream; sending it again could
    /// duplicate it.
    Failed(Error),
}

/// What went wrong on an upstream connection.
#[derive(Debug)]
pub(super) enum Error {
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// The upstream closed the connection early; says before what.
    Closed(&'static str),
    /// The upstream sent bytes that are not a valid HTTP/1.1 response here.
    Invalid(&'static str),
    /// The request body (from the client) failed.
    RequestBody(BoxError),
    /// The request body did not keep to the length it announced.
    RequestLength,
}

// By hand: the request's headers (tokens among them) stay out of any log.
impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unsent(_, err) => f.debug_tuple("Unsent").field(err).finish(),
            Failure::Failed(err) => f.debug_tuple("Failed").field(err).finish(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(err) => write!(f, "upstream connection: {err}"),
            Error::Closed(before) => write!(f, "upstream closed the connection {before}"),
            Error::Invalid(what) => write!(f, "invalid response from the upstream: {what}"),
            Error::RequestBody(err) => write!(f, "request body: {err}"),
            Error::RequestLength => {
                f.write_str("request body length differs from its content-length")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The caller looks for an I/O `TimedOut` down this chain.
            Error::Io(err) => Some(err),
            Error::RequestBody(err) => Some(&**err),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}

impl Connection {
    /// Takes over a connection the connector opened (and did not pick
    /// HTTP/2 on).
    pub(super) fn new(io: MaybeHttpsStream<TokioIo<TcpStream>>) -> Self {
        let io = match io {
            MaybeHttpsStream::Http(tcp) => Either::Left(tcp.into_inner()),
            tls => Either::Right(Box::new(TokioIo::new(tls))),
        };
        Connection {
            io: Box::new(io),
            buf: BytesMut::new(),
            deadline: None,
        }
    }

    /// Takes over a plain TCP connection the pool opened itself.
    pub(super) fn plain(tcp: TcpStream) -> Self {
        Connection {
            io: Box::new(Either::Left(tcp)),
            buf: BytesMut::new(),
            deadline: None,
        }
    }

    /// Whether an idle connection can take a request: the upstream has
    /// neither closed it nor sent anything unasked. Never waits; a socket
    /// with nothing to read is not even read when the runtime already knows
    /// that.
    pub(super) fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        self.buf.is_empty()
            && Pin::new(&mut *self.io)
                .poll_read(&mut cx, &mut probe)
                .is_pending()
    }

    /// Sends `request` (origin form, `host` as its Host) and reads the
    /// response head, failing with `TimedOut` if that is not done by
    /// `deadline`. The body is read by the returned [`Body`], which owns
    /// the connection from then on.
    pub(super) async fn send(
        mut self,
        request: Box<Request<ProxyBody>>,
        host: &HeaderValue,
        deadline: Instant,
    ) -> Result<Response<Body>, Failure> {
        let mut timer = match self.deadline.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        let mut exchange = pin!(self.exchange(request, host));
        let mut response = poll_fn(|cx| match exchange.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => timer
                .as_mut()
                .poll(cx)
                .map(|()| Err(Failure::Failed(Error::Io(timed_out())))),
        })
        .await?;
        if let Some(connection) = &mut response.body_mut().conn {
            connection.deadline = Some(timer);
        }
        Ok(response)
    }

    /// [`send`](Self::send) without its deadline.
    async fn exchange(
        mut self,
        request: Box<Request<ProxyBody>>,
        host: &HeaderValue,
    ) -> Result<Response<Body>, Failure> {
        let (mut parts, mut body) = request.into_parts();
        let (mut outgoing, announce) = request_framing(&parts.method, &parts.headers, &body);
        let mut ended = body.is_end_stream();
        // A body held in memory has its first frame ready at once: taken
        // now, it goes out in the same write as the head. It is kept until
        // that write has succeeded, so that a request this connection never
        // took can be sent again whole.
        let mut first = None;
        if !ended {
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(Some(Ok(frame))) => {
                    first = Some(frame);
                    ended = body.is_end_stream();
                }
                Poll::Ready(Some(Err(err))) => {
                    return Err(Failure::Failed(Error::RequestBody(err)));
                }
                Poll::Ready(None) => ended = true,
                Poll::Pending => {}
            }
        }
        let inline = first
            .as_ref()
            .and_then(Frame::data_ref)
            .filter(|data| data.len() <= INLINE_BODY);
        let inlined = inline.is_some();
        let mut head = encode_head(
            &parts,
            host,
            outgoing,
            announce,
            inline.map_or(0, Bytes::len),
        );
        if let Some(data) = inline {
            outgoing
                .encode(data, &mut head)
                .map_err(|_| Failure::Failed(Error::RequestLength))?;
        }
        let complete = ended && (inlined || first.is_none());
        if complete {
            outgoing
                .finish(&mut head)
                .map_err(|_| Failure::Failed(Error::RequestLength))?;
        }

        if let Err(failed) = write_slices(&mut self.io, &mut [IoSlice::new(&head)]).await {
            return Err(if failed.nothing_written {
                // A request sent again on another connection.
                let body = match first {
                    Some(first) => Prepended::new(first, body, ended).boxed(),
                    None => body,
                };
                Failure::Unsent(
                    Box::new(Request::from_parts(parts, body)),
                    Error::Io(failed.error),
                )
            } else {
                Failure::Failed(Error::Io(failed.error))
            });
        }
        drop(head);
        if !complete {
            let first = if inlined { None } else { first };
            self.write_body(outgoing, first, body, ended)
                .await
                .map_err(Failure::Failed)?;
        }

        let request_closes = parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .any(|value| connection_closes(value.as_bytes()));
        // The request's map is done with: the response's fields go into it.
        let head = self
            .read_head(&mut parts.headers)
            .await
            .map_err(Failure::Failed)?;
        let (state, framing_reusable) =
            response_framing(&parts.method, &head).map_err(Failure::Failed)?;
        let persistent = match head.version {
            Version::HTTP_11 => !head.hop.close,
            _ => head.hop.keep_alive,
        };
        let reusable = framing_reusable && persistent && !request_closes;
        let mut response = Response::new(());
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        Ok(response.map(|()| Body::new(self, state, reusable)))
    }

    /// Writes what is left of a request body after the head: `first` (a
    /// frame taken but not written yet), then the rest of `body` frame by
    /// frame, each written before the next is asked for, so that a large
    /// upload streams at the upstream's pace instead of piling up here.
    async fn write_body(
        &mut self,
        mut outgoing: Encoder,
        first: Option<Frame<Bytes>>,
        mut body: ProxyBody,
        mut ended: bool,
    ) -> Result<(), Error> {
        if let Some(frame) = first {
            self.write_frame(&mut outgoing, frame, ended).await?;
            if ended {
                return Ok(());
            }
        }
        while !ended {
            match body.frame().await {
                Some(Ok(frame)) => {
                    ended = body.is_end_stream();
                    self.write_frame(&mut outgoing, frame, ended).await?;
                    if ended {
                        return Ok(());
                    }
                }
                Some(Err(err)) => return Err(Error::RequestBody(err)),
                None => ended = true,
            }
        }
        let mut end = Vec::new();
        outgoing
            .finish(&mut end)
            .map_err(|_| Error::RequestLength)?;
        write_slices(&mut self.io, &mut [IoSlice::new(&end)])
            .await
            .map_err(|failed| Error::Io(failed.error))
    }

    /// Writes one body frame as `outgoing` frames it, and the end of the
    /// body with it if `last`. Trailers are dropped.
    async fn write_frame(
        &mut self,
        outgoing: &mut Encoder,
        frame: Frame<Bytes>,
        last: bool,
    ) -> Result<(), Error> {
        let data = frame.into_data().unwrap_or_default();
        let mut framing = Vec::new();
        let mut after = Vec::new();
        if !data.is_empty() {
            outgoing
                .begin(data.len(), &mut framing)
                .map_err(|_| Error::RequestLength)?;
            outgoing.end(&mut after);
        }
        if last {
            outgoing
                .finish(&mut after)
                .map_err(|_| Error::RequestLength)?;
        }
        let mut slices = [
            IoSlice::new(&framing),
            IoSlice::new(&data),
            IoSlice::new(&after),
        ];
        write_slices(&mut self.io, &mut slices)
            .await
            .map_err(|failed| Error::Io(failed.error))
    }

    /// Reads until a final (not 1xx) response head is in, and parses it;
    /// its fields go into `spare`'s allocation.
    async fn read_head(&mut self, spare: &mut HeaderMap) -> Result<Head, Error> {
        loop {
            if let Some(head) = parse_head(&mut self.buf, spare).map_err(Error::Invalid)? {
                return Ok(head);
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(Error::Invalid("response head larger than 64 KiB"));
            }
            if poll_fn(|cx| self.poll_read_more(cx)).await? == 0 {
                return Err(Error::Closed("before the response head"));
            }
        }
    }

    /// Lets the read buffer go between requests: an idle pooled
    /// connection holds none.
    pub(super) fn rest(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` is the end.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            // No buffer while nothing has come: read onto the stack, and
            // take one only for what arrives.
            let mut first = [MaybeUninit::<u8>::uninit(); FIRST_READ];
            let mut read = ReadBuf::uninit(&mut first);
            ready!(Pin::new(&mut *self.io).poll_read(cx, &mut read))?;
            let filled = read.filled();
            // Exactly what came: a Graph answer is whole in it, and its
            // head and body (which share this allocation) are held until
            // the client has them. A longer answer grows it as it comes.
            self.buf = BytesMut::from(filled);
            return Poll::Ready(Ok(filled.len()));
        }
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            // Takes the allocation back once the bytes handed out from it
            // are gone, so the steady state allocates nothing.
            self.buf.reserve(READ_SIZE);
        }
        pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }
}

/// The error of a request that ran out of time, as the client's caller
/// recognises a timeout: an I/O `TimedOut` in the error's chain.
pub(super) fn timed_out() -> io::Error {
    io::ErrorKind::TimedOut.into()
}

/// Writes all of `bufs` and flushes them (which TLS needs, so that nothing
/// waits in its buffer while the body's next frame is awaited); on failure
/// says whether nothing at all went out.
async fn write_slices(io: &mut Io, mut bufs: &mut [IoSlice<'_>]) -> Result<(), WriteFailed> {
    let mut nothing_written = true;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match io.write_vectored(bufs).await {
            Ok(0) => {
                return Err(WriteFailed {
                    error: io::ErrorKind::WriteZero.into(),
                    nothing_written,
                });
            }
            Ok(written) => {
                nothing_written = false;
                IoSlice::advance_slices(&mut bufs, written);
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(WriteFailed {
                    error,
                    nothing_written,
                });
            }
        }
    }
    io.flush().await.map_err(|error| WriteFailed {
        error,
        nothing_written,
    })
}

struct WriteFailed {
    error: io::Error,
    nothing_written: bool,
}

/// The framing of a request body, and whether its field is written. A
/// body that knows its size gets `content-length` (replacing the
/// client's), any other is chunked.
fn request_framing(method: &Method, headers: &HeaderMap, body: &ProxyBody) -> (Encoder, bool) {
    match body.size_hint().exact() {
        // No `content-length: 0` on methods whose requests have no body,
        // unless the client sent one. (hyper sends none for any empty body;
        // but some servers refuse a POST without a length.)
        Some(0)
            if !headers.contains_key(CONTENT_LENGTH)
                && matches!(
                    *method,
                    Method::GET
                        | Method::HEAD
                        | Method::DELETE
                        | Method::OPTIONS
                        | Method::TRACE
                        | Method::CONNECT
                ) =>
        {
            (Encoder::Length(0), false)
        }
        Some(length) => (Encoder::Length(length), true),
        None => (Encoder::Chunked, true),
    }
}

/// The request line and header section, with room for `body` bytes more.
/// The client's headers go out as they are, in their order, except those
/// [`NOT_FORWARDED`]: Host is the upstream's, the framing is written from
/// `outgoing`.
fn encode_head(
    parts: &http::request::Parts,
    host: &HeaderValue,
    outgoing: Encoder,
    announce: bool,
    body: usize,
) -> Vec<u8> {
    let path = parts.uri.path();
    let query = parts.uri.query();
    let fields: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(
        parts.method.as_str().len()
            + path.len()
            + query.map_or(0, |query| query.len() + 1)
            + host.len()
            + fields
            + 64
            + body,
    );
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(path.as_bytes());
    if let Some(query) = query {
        head.push(b'?');
        head.extend_from_slice(query.as_bytes());
    }
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if NOT_FORWARDED.contains(name) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if announce {
        outgoing.write_field(&mut head);
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// How the response body is delimited (RFC 9112 §6.3), and whether that
/// framing leaves the connection fit for another request.
fn response_framing(method: &Method, head: &Head) -> Result<(State, bool), Error> {
    if method == Method::HEAD || status_has_no_body(head.status) {
        return Ok((State::Done, true));
    }
    let hop = &head.hop;
    if let Some(chunked_last) = hop.chunked_last {
        // With both, Transfer-Encoding wins, but the message was framed
        // ambiguously: whoever else read it may disagree, so the connection
        // is not trusted further. HTTP/1.0 has no Transfer-Encoding at all.
        let trusted = hop.content_length == Ok(None) && head.version == Version::HTTP_11;
        return Ok(match chunked_last {
            true => (State::Chunked(ChunkedDecoder::new()), trusted),
            false => (State::UntilClose, false),
        });
    }
    match hop.content_length.map_err(Error::Invalid)? {
        Some(0) => Ok((State::Done, true)),
        Some(length) => Ok((State::Length(length), true)),
        None => Ok((State::UntilClose, false)),
    }
}

/// The response-head parser's invariants (the `response_head` fuzz
/// target): it takes the head and nothing after it, never stops at an
/// interim one, never relays a length beside chunked framing, gives the
/// same head for the head's bytes alone and none for them cut short; and
/// the body framing it leads to is decided without a panic.
#[cfg(any(test, fuzzing))]
pub(crate) fn check_response_head(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let Ok(Some(head)) = parse_head(&mut buf, &mut HeaderMap::new()) else {
        return;
    };
    let used = data.len() - buf.len();
    assert_eq!(&data[used..], &buf[..]);
    assert!(!head.status.is_informational());
    if head.hop.chunked_last.is_some() {
        assert!(!head.headers.contains_key(CONTENT_LENGTH));
    }
    for method in [http::Method::GET, http::Method::HEAD] {
        let _ = response_framing(&method, &head);
    }
    let mut alone = BytesMut::from(&data[..used]);
    let same = parse_head(&mut alone, &mut HeaderMap::new())
        .ok()
        .flatten()
        .expect("a head is taken without the bytes after it");
    assert!(alone.is_empty());
    assert_eq!(
        (same.status, same.version, same.headers),
        (head.status, head.version, head.headers)
    );
    let mut cut = BytesMut::from(&data[..used - 1]);
    assert!(!matches!(
        parse_head(&mut cut, &mut HeaderMap::new()),
        Ok(Some(_))
    ));
}

/// Where the reading of a response body is.
enum State {
    /// This many bytes are still to come (never 0: that is `Done`).
    Length(u64),
    Chunked(ChunkedDecoder),
    /// The body is whatever comes until the upstream closes.
    UntilClose,
    /// Read to its end.
    Done,
    /// A read failed or the upstream broke the framing.
    Failed,
}

/// A response body from an HTTP/1.1 upstream. It owns the connection and
/// reads from it when polled; once read to its end, a connection fit for
/// another request can be taken back with [`Body::take_reusable`].
pub(super) struct Body {
    /// None once dropped (an error, or a connection not to reuse) or
    /// taken back.
    conn: Option<Connection>,
    state: State,
    /// Whether the connection may carry another request after this body.
    reusable: bool,
}

impl Body {
    fn new(conn: Connection, state: State, reusable: bool) -> Self {
        let mut body = Body {
            conn: Some(conn),
            state,
            reusable,
        };
        if let State::Done = body.state {
            body.end();
        }
        body
    }

    /// The connection, if the body has been read to its end and the
    /// connection can carry another request.
    pub(super) fn take_reusable(&mut self) -> Option<Connection> {
        match self.state {
            State::Done if self.reusable => self.conn.take(),
            _ => None,
        }
    }

    /// The body has been read to its end. Bytes beyond it mean the upstream
    /// and this client disagree on the framing: that connection is closed.
    fn end(&mut self) {
        self.state = State::Done;
        if !self.reusable || self.conn.as_ref().is_some_and(|conn| !conn.buf.is_empty()) {
            self.conn = None;
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(Ok(None));
            };
            // What is already buffered (such as what came in with the head)
            // goes out before the socket is read again.
            match &mut self.state {
                State::Done | State::Failed => return Poll::Ready(Ok(None)),
                State::Length(left) => {
                    if !conn.buf.is_empty() {
                        let take = usize::try_from(*left)
                            .map_or(conn.buf.len(), |left| left.min(conn.buf.len()));
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            self.end();
                        }
                        return Poll::Ready(Ok(Some(data)));
                    }
                    if ready!(conn.poll_read_more(cx))? == 0 {
                        return Poll::Ready(Err(Error::Closed("before the end of the body")));
                    }
                }
                State::UntilClose => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Ok(Some(conn.buf.split().freeze())));
                    }
                    if ready!(conn.poll_read_more(cx))? == 0 {
                        self.end();
                        return Poll::Ready(Ok(None));
                    }
                }
                State::Chunked(decoder) => match decoder
                    .decode(&mut conn.buf)
                    .map_err(Error::Invalid)?
                {
                    Decoded::Data(data) => return Poll::Ready(Ok(Some(data))),
                    Decoded::End => {
                        self.end();
                        return Poll::Ready(Ok(None));
                    }
                    Decoded::NeedMore => {
                        if ready!(conn.poll_read_more(cx))? == 0 {
                            return Poll::Ready(Err(Error::Closed("before the end of the body")));
                        }
                    }
                },
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match ready!(self.poll_data(cx)) {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => Poll::Ready(None),
            Err(err) => {
                // What is left of the response cannot be found any more.
                self.state = State::Failed;
                self.conn = None;
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(left) => SizeHint::with_exact(left),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use http::StatusCode;
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use super::*;
    use crate::body::full_body;
    use crate::upstream::test_upstream::{
        Answer, PATIENCE, Upstream, answer, answer_then_close, dechunk, find,
    };

    fn host() -> HeaderValue {
        HeaderValue::from_static("upstream.test")
    }

    fn get(path: &str) -> Request<ProxyBody> {
        Request::get(path).body(full_body(Bytes::new())).unwrap()
    }

    /// A request deadline the tests' own patience runs out before.
    pub(crate) fn far() -> Instant {
        Instant::now() + 2 * PATIENCE
    }

    async fn send(connection: Connection, request: Request<ProxyBody>) -> Response<Body> {
        match tokio::time::timeout(PATIENCE, connection.send(Box::new(request), &host(), far()))
            .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(failure)) => panic!("request failed: {failure:?}"),
            Err(_) => panic!("no response head in time"),
        }
    }

    async fn try_send(
        connection: Connection,
        request: Request<ProxyBody>,
    ) -> Result<Response<Body>, Failure> {
        tokio::time::timeout(PATIENCE, connection.send(Box::new(request), &host(), far()))
            .await
            .expect("an answer or an error in time")
    }

    /// The body's data, and in how many frames it came.
    async fn read_all(body: &mut Body) -> Result<(Vec<u8>, usize), Error> {
        let (mut data, mut frames) = (Vec::new(), 0);
        while let Some(frame) = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("the body goes on or ends in time")
        {
            data.extend_from_slice(frame?.data_ref().expect("only data frames"));
            frames += 1;
        }
        Ok((data, frames))
    }

    #[tokio::test]
    async fn content_length_response_and_the_request_on_the_wire() {
        let mut upstream = Upstream::start(vec![answer(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello",
        )])
        .await;
        let request = Request::get("http://client.example/a/b?c=1&d")
            .header("host", "client.example")
            .header("accept", "*/*")
            .header("x-sendgate-client", "crm")
            .header("x-two", "1")
            .header("x-two", "2")
            .body(full_body(Bytes::new()))
            .unwrap();
        let response = send(upstream.connect().await, request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_11);
        assert_eq!(response.headers()["content-type"], "text/plain");
        let mut body = response.into_body();
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(read_all(&mut body).await.unwrap().0, b"hello");
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_some());
        let received = upstream.next().await;
        assert_eq!(
            String::from_utf8(received.bytes).unwrap(),
            "GET /a/b?c=1&d HTTP/1.1\r\nhost: upstream.test\r\naccept: */*\r\n\
             x-two: 1\r\nx-two: 2\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn chunked_response_with_extensions_and_trailers_then_reuse() {
        // Split where a reader is most easily caught out: inside a size
        // line, between a chunk and its CRLF, inside the trailers.
        let chunked = Answer {
            parts: [
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;name=value\r\nhel",
                "lo\r",
                "\n7 ; quoted=\"a b\"\r\n, world\r\n0\r\nx-check",
                "sum: abc\r\n\r\n",
            ]
            .map(|part| part.as_bytes().to_vec())
            .to_vec(),
            close: false,
        };
        let mut upstream = Upstream::start(vec![
            chunked,
            answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        ])
        .await;
        let response = send(upstream.connect().await, get("/first")).await;
        let mut body = response.into_body();
        assert_eq!(body.size_hint().exact(), None);
        assert_eq!(read_all(&mut body).await.unwrap().0, b"hello, world");
        let connection = body.take_reusable().expect("reusable after the trailers");

        let response = send(connection, get("/second")).await;
        let mut body = response.into_body();
        assert_eq!(read_all(&mut body).await.unwrap().0, b"ok");
        assert_eq!(upstream.next().await.connection, 0);
        assert_eq!(
            upstream.next().await.connection,
            0,
            "the second request came on the same connection"
        );
    }

    #[tokio::test]
    async fn close_delimited_response_reads_to_the_end_and_is_not_reused() {
        let upstream = Upstream::start(vec![answer_then_close(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it, until the close",
        )])
        .await;
        let mut body = send(upstream.connect().await, get("/")).await.into_body();
        assert_eq!(body.size_hint().exact(), None);
        assert_eq!(
            read_all(&mut body).await.unwrap().0,
            b"all of it, until the close"
        );
        assert!(body.is_end_stream());
        assert!(body.take_reusable().is_none());
    }

    #[tokio::test]
    async fn bodyless_responses_end_at_once_and_are_reused() {
        let mut upstream = Upstream::start(vec![
            answer("HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"),
            answer("HTTP/1.1 204 No Content\r\n\r\n"),
            answer("HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n"),
        ])
        .await;
        let head = Request::head("/").body(full_body(Bytes::new())).unwrap();
        let response = send(upstream.connect().await, head).await;
        assert_eq!(
            response.headers()["content-length"],
            "1234",
            "kept: it describes what a GET would get"
        );
        let mut body = response.into_body();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        let connection = body.take_reusable().expect("HEAD: reusable");

        let response = send(connection, get("/")).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let mut body = response.into_body();
        assert!(body.is_end_stream());
        let connection = body.take_reusable().expect("204: reusable");

        let response = send(connection, get("/")).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let mut body = response.into_body();
        assert!(read_all(&mut body).await.unwrap().0.is_empty());
        assert!(body.take_reusable().is_some(), "304: reusable");
        for _ in 0..3 {
            assert_eq!(upstream.next().await.connection, 0);
        }
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let upstream = Upstream::start(vec![answer(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
             HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        )])
        .await;
        let response = send(upstream.connect().await, get("/")).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(!response.headers().contains_key("link"));
        let mut body = response.into_body();
        assert_eq!(read_all(&mut body).await.unwrap().0, b"ok");
        assert!(body.take_reusable().is_some());
    }

    #[tokio::test]
    async fn bad_response_heads_fail_the_request() {
        let big = format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
            "a".repeat(70 << 10)
        );
        for (head, why) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
                "conflicting content-lengths",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello",
                "conflicting content-lengths in one field",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
                "a content-length that is not digits",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
                "a content-length past u64",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
                "an upgrade never asked for",
            ),
            ("HTTP/1.1 2OO OK\r\n\r\n", "a malformed status line"),
            (big.as_str(), "a head over 64 KiB"),
        ] {
            let upstream = Upstream::start(vec![answer(head)]).await;
            match try_send(upstream.connect().await, get("/")).await {
                Err(Failure::Failed(Error::Invalid(_))) => {}
                Err(other) => panic!("{why}: {other:?}"),
                Ok(_) => panic!("{why}: accepted"),
            }
        }
    }

    #[tokio::test]
    async fn identical_content_lengths_are_one_length() {
        let upstream = Upstream::start(vec![answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
        )])
        .await;
        let mut body = send(upstream.connect().await, get("/")).await.into_body();
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(read_all(&mut body).await.unwrap().0, b"ok");
    }

    #[tokio::test]
    async fn malformed_chunks_fail_the_body_and_the_connection() {
        for (chunks, why) in [
            ("zz\r\nhello\r\n0\r\n\r\n", "a size that is not hex"),
            ("\r\nhello\r\n0\r\n\r\n", "no size"),
            ("5\nhello\r\n0\r\n\r\n", "a bare LF"),
            ("5\r\nhelloXX0\r\n\r\n", "no CRLF after the data"),
            ("1ffffffffffffffff\r\nhello", "a size past u64"),
            ("5;a=\u{7}\r\nhello\r\n0\r\n\r\n", "a control character"),
        ] {
            let upstream = Upstream::start(vec![answer_then_close(&format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{chunks}"
            ))])
            .await;
            let mut body = send(upstream.connect().await, get("/")).await.into_body();
            match read_all(&mut body).await {
                Err(Error::Invalid(_)) => {}
                other => panic!("{why}: {other:?}"),
            }
            assert!(body.take_reusable().is_none(), "{why}");
        }
        // A chunk-size line without end is refused, not buffered on.
        let endless = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;{}",
            "x".repeat(64 << 10)
        );
        let upstream = Upstream::start(vec![answer(&endless)]).await;
        let mut body = send(upstream.connect().await, get("/")).await.into_body();
        assert!(matches!(read_all(&mut body).await, Err(Error::Invalid(_))));
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        for body in [
            "content-length: 10\r\n\r\nhello",
            "transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ] {
            let upstream = Upstream::start(vec![answer_then_close(&format!(
                "HTTP/1.1 200 OK\r\n{body}"
            ))])
            .await;
            let mut body = send(upstream.connect().await, get("/")).await.into_body();
            assert!(matches!(read_all(&mut body).await, Err(Error::Closed(_))));
            assert!(body.take_reusable().is_none());
        }
    }

    #[tokio::test]
    async fn a_response_has_only_its_own_fields() {
        // The response's fields go into the request's emptied map.
        let upstream = Upstream::start(vec![answer(
            "HTTP/1.1 200 OK\r\nx-answer: 1\r\ncontent-length: 2\r\n\r\nok",
        )])
        .await;
        let request = Request::get("/")
            .header("x-asked", "1")
            .header("authorization", "Bearer secret")
            .body(full_body(Bytes::new()))
            .unwrap();
        let response = send(upstream.connect().await, request).await;
        let names: Vec<&str> = response
            .headers()
            .keys()
            .map(|name| name.as_str())
            .collect();
        assert_eq!(names, ["x-answer", "content-length"]);
    }

    #[tokio::test]
    async fn what_the_response_says_decides_reuse() {
        for (head, reused, why) in [
            ("HTTP/1.1 200 OK\r\nconnection: close\r\n", false, "close"),
            (
                "HTTP/1.1 200 OK\r\nconnection: upgrade, Close\r\n",
                false,
                "close in a list",
            ),
            ("HTTP/1.0 200 OK\r\n", false, "HTTP/1.0"),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n",
                true,
                "HTTP/1.0 keep-alive",
            ),
            ("HTTP/1.1 200 OK\r\n", true, "HTTP/1.1"),
        ] {
            let upstream =
                Upstream::start(vec![answer(&format!("{head}content-length: 2\r\n\r\nok"))]).await;
            let mut body = send(upstream.connect().await, get("/")).await.into_body();
            assert_eq!(read_all(&mut body).await.unwrap().0, b"ok", "{why}");
            assert_eq!(body.take_reusable().is_some(), reused, "{why}");
        }
        // A request that asked to close leaves the connection unused too.
        let upstream = Upstream::start(vec![answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )])
        .await;
        let closing = Request::get("/")
            .header("connection", "Close")
            .body(full_body(Bytes::new()))
            .unwrap();
        let mut body = send(upstream.connect().await, closing).await.into_body();
        assert_eq!(read_all(&mut body).await.unwrap().0, b"ok");
        assert!(body.take_reusable().is_none(), "the request said close");
        // Framing that leaves doubt leaves the connection unused.
        for (answer_bytes, why) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
                "bytes past the end",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n\
                 2\r\nok\r\n0\r\n\r\n",
                "content-length beside chunked",
            ),
        ] {
            let upstream = Upstream::start(vec![answer(answer_bytes)]).await;
            let mut body = send(upstream.connect().await, get("/")).await.into_body();
            assert_eq!(read_all(&mut body).await.unwrap().0, b"ok", "{why}");
            assert!(body.take_reusable().is_none(), "{why}");
        }
    }

    #[tokio::test]
    async fn connection_options_are_consumed_and_named_fields_left_to_strip() {
        for (connection, kept) in [
            ("keep-alive", false),
            ("Close, keep-alive", false),
            ("keep-alive, x-hop", true),
        ] {
            let upstream = Upstream::start(vec![answer(&format!(
                "HTTP/1.1 200 OK\r\nconnection: {connection}\r\nx-hop: 1\r\n\
                 content-length: 2\r\n\r\nok"
            ))])
            .await;
            let response = send(upstream.connect().await, get("/")).await;
            let held: Vec<_> = response.headers().get_all(CONNECTION).iter().collect();
            match kept {
                true => assert_eq!(held, [connection], "{connection}"),
                false => assert!(held.is_empty(), "{connection}"),
            }
            assert_eq!(response.headers()["x-hop"], "1");
            let mut body = response.into_body();
            assert_eq!(read_all(&mut body).await.unwrap().0, b"ok");
            let closes = connection.to_ascii_lowercase().contains("close");
            assert_eq!(body.take_reusable().is_some(), !closes, "{connection}");
        }
    }

    #[tokio::test]
    async fn a_body_in_memory_goes_out_with_its_exact_length() {
        let mut upstream =
            Upstream::start(vec![answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")]).await;
        let request = Request::post("/p?q")
            .header("content-type", "application/json")
            .header("content-length", "999")
            .body(full_body(r#"{"a":1}"#))
            .unwrap();
        let mut body = send(upstream.connect().await, request).await.into_body();
        assert!(body.take_reusable().is_some());
        assert_eq!(
            String::from_utf8(upstream.next().await.bytes).unwrap(),
            "POST /p?q HTTP/1.1\r\nhost: upstream.test\r\ncontent-type: application/json\r\n\
             content-length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[tokio::test]
    async fn empty_bodies_announce_a_zero_length_where_one_is_expected() {
        let mut upstream = Upstream::start(vec![
            answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        ])
        .await;
        let empty = |method: Method, length: Option<&str>| {
            let mut request = Request::builder().method(method).uri("/x");
            if let Some(length) = length {
                request = request.header("content-length", length);
            }
            request.body(full_body(Bytes::new())).unwrap()
        };
        let mut connection = upstream.connect().await;
        for (request, wire) in [
            (
                empty(Method::POST, None),
                "POST /x HTTP/1.1\r\nhost: upstream.test\r\ncontent-length: 0\r\n\r\n",
            ),
            (
                empty(Method::DELETE, None),
                "DELETE /x HTTP/1.1\r\nhost: upstream.test\r\n\r\n",
            ),
            (
                empty(Method::DELETE, Some("0")),
                "DELETE /x HTTP/1.1\r\nhost: upstream.test\r\ncontent-length: 0\r\n\r\n",
            ),
        ] {
            let mut body = send(connection, request).await.into_body();
            connection = body.take_reusable().unwrap();
            assert_eq!(
                String::from_utf8(upstream.next().await.bytes).unwrap(),
                wire
            );
        }
    }

    /// A request body fed from a channel, of a length given or unknown.
    struct Channel {
        frames: mpsc::Receiver<Bytes>,
        exact: Option<u64>,
    }

    impl http_body::Body for Channel {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.frames
                .poll_recv(cx)
                .map(|data| data.map(|data| Ok(Frame::data(data))))
        }

        fn size_hint(&self) -> SizeHint {
            self.exact.map_or_else(SizeHint::new, SizeHint::with_exact)
        }
    }

    /// A request whose body streams `parts`, with a pause before each.
    fn streaming(parts: Vec<Bytes>, exact: Option<u64>) -> Request<ProxyBody> {
        let (tx, frames) = mpsc::channel(1);
        tokio::spawn(async move {
            for part in parts {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if tx.send(part).await.is_err() {
                    return;
                }
            }
        });
        Request::put("/upload")
            .body(Channel { frames, exact }.boxed())
            .unwrap()
    }

    #[tokio::test]
    async fn a_streamed_body_of_unknown_length_goes_chunked() {
        let mut upstream =
            Upstream::start(vec![answer("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")]).await;
        let big = Bytes::from(vec![b'x'; INLINE_BODY + 1]);
        let parts = vec![
            Bytes::from_static(b"first,"),
            Bytes::new(),
            big.clone(),
            Bytes::from_static(b",last"),
        ];
        let request = streaming(parts, None);
        let mut body = send(upstream.connect().await, request).await.into_body();
        assert!(body.take_reusable().is_some());
        let received = upstream.next().await.bytes;
        let head_len = find(&received, b"\r\n\r\n").unwrap() + 4;
        assert_eq!(
            String::from_utf8_lossy(&received[..head_len]),
            "PUT /upload HTTP/1.1\r\nhost: upstream.test\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let (data, wire_len) = dechunk(&received[head_len..]).unwrap();
        assert_eq!(wire_len, received.len() - head_len);
        assert_eq!(data, [&b"first,"[..], &big, b",last"].concat());
    }

    #[tokio::test]
    async fn a_body_that_breaks_its_length_fails_the_request() {
        for (parts, why) in [
            (vec![Bytes::from_static(b"12345")], "short"),
            (vec![Bytes::from_static(b"1234567890AB")], "long"),
        ] {
            let mut upstream = Upstream::start(vec![]).await;
            match try_send(upstream.connect().await, streaming(parts, Some(10))).await {
                Err(Failure::Failed(Error::RequestLength)) => {}
                Err(other) => panic!("{why}: {other:?}"),
                Ok(_) => panic!("{why}: sent"),
            }
            if why == "long" {
                // The bytes past the announced length never went out, so
                // the upstream never got a request it could answer.
                assert!(upstream.got_nothing_more().await, "{why}");
            }
        }
    }

    #[tokio::test]
    async fn a_large_response_streams_in_frames() {
        let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut bytes = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&payload);
        let upstream = Upstream::start(vec![Answer {
            parts: vec![bytes],
            close: false,
        }])
        .await;
        let mut body = send(upstream.connect().await, get("/big"))
            .await
            .into_body();
        assert_eq!(body.size_hint().exact(), Some(1 << 20));
        let (data, frames) = read_all(&mut body).await.unwrap();
        assert!(data == payload, "the body arrives intact");
        assert!(
            frames > 1,
            "streamed, not buffered whole: {frames} frame(s)"
        );
        assert!(body.take_reusable().is_some());
    }

    /// A connection whose peer has reset it, once the reset has arrived.
    async fn reset_connection() -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        server.set_zero_linger().unwrap();
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Connection::new(MaybeHttpsStream::Http(TokioIo::new(client)))
    }

    #[tokio::test]
    async fn a_request_the_connection_never_took_comes_back_whole() {
        let request = Request::post("/p")
            .header("content-type", "application/json")
            .body(full_body("payload"))
            .unwrap();
        match try_send(reset_connection().await, request).await {
            Err(Failure::Unsent(request, Error::Io(_))) => {
                assert_eq!(request.uri(), "/p");
                assert_eq!(request.headers()["content-type"], "application/json");
                let body = request.into_body();
                assert_eq!(body.size_hint().exact(), Some(7));
                let data = body.collect().await.unwrap().to_bytes();
                assert_eq!(data, "payload", "the frame already taken is sent again");
            }
            Err(other) => panic!("expected unsent, got {other:?}"),
            Ok(_) => panic!("a reset connection answered"),
        }
    }

    #[tokio::test]
    async fn the_probe_tells_closed_and_chatty_connections_from_idle_ones() {
        assert!(!reset_connection().await.is_open(), "reset");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = |tcp| Connection::new(MaybeHttpsStream::Http(TokioIo::new(tcp)));
        let mut idle = open(TcpStream::connect(addr).await.unwrap());
        let (_idle_peer, _) = listener.accept().await.unwrap();
        let mut closed = open(TcpStream::connect(addr).await.unwrap());
        drop(listener.accept().await.unwrap());
        let mut chatty = open(TcpStream::connect(addr).await.unwrap());
        let (mut chatty_peer, _) = listener.accept().await.unwrap();
        chatty_peer.write_all(b"HTTP/1.1 408 ").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(idle.is_open(), "idle");
        assert!(idle.is_open(), "probing again leaves it open");
        assert!(!closed.is_open(), "closed by the upstream");
        assert!(!chatty.is_open(), "the upstream wrote unasked");
    }
}
