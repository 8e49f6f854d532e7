//! sendgate's own HTTP/1.1 server loop, for the plain requests that are
//! nearly all of its traffic.
//!
//! hyper's server connection costs more per request than everything nginx
//! does for one (see BENCHMARKS.md), so a connection starts here: one task
//! reads a request head with `httparse` into a buffer the connection keeps,
//! takes the body from the same buffer, calls the handler and writes the
//! response head and a small body in one write.
//!
//! It takes only the simple case: an HTTP/1.1 request in origin form, any
//! method but `HEAD` and `CONNECT`, a body given by one `Content-Length` of
//! at most [`MAX_BODY`] bytes (or none), and no `Transfer-Encoding`,
//! `Expect` or `Upgrade`. The first request that is anything else (a
//! malformed or very large head, HTTP/1.0, the HTTP/2 preface, a chunked or
//! large body) goes to hyper with the bytes already read, and so does the
//! rest of that connection: hyper sees it exactly as if it had served it
//! from that request on. The subtle parts of HTTP/1.1 (request framing
//! beyond `Content-Length`, error answers to malformed requests, upgrades)
//! so stay in hyper.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{
    CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HeaderName, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{CLIENT_WRITE_STALL, HEADER_READ_TIMEOUT, Handler, Shared};
use crate::http1::encode::Encoder;
use crate::http1::{
    ConnectionToken, append_field, connection_closes, connection_tokens, decimal_length,
    field_name, place, status_has_no_body,
};
use crate::stall::Stall;
use crate::upstream::{ProxyBody, full_body};

/// Longest request head taken here; hyper takes longer ones.
const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in a request taken here; hyper takes more.
const MAX_HEADERS: usize = 64;
/// Largest request body taken here (read whole before the handler runs);
/// larger ones stream through hyper.
pub(super) const MAX_BODY: usize = 64 * 1024;
/// The most fields a response's emptied header map may have room for to
/// be kept for the next request (the upstream client fills a request's map
/// with the response): room for a usual request or Graph answer, not a
/// connection's largest.
const SPARE_HEADERS: usize = 24;
/// How much the read buffer grows by when it is full.
const READ_CHUNK: usize = 8 * 1024;
/// Response data up to this size is copied behind the head (or the chunk
/// size line) so that it goes out in the same write.
const COPY_LIMIT: usize = 16 * 1024;

/// Serves one client connection until it closes, its client stops, or
/// shutdown begins.
pub(super) async fn serve<H: Handler>(
    stream: TcpStream,
    shared: Arc<Shared<H>>,
    stop: watch::Receiver<bool>,
) {
    // Waiting for shutdown is registered once for the connection instead
    // of once per request (each registration locks the channel's waiters).
    let mut stop_signal = stop.clone();
    let changed = stop_signal.changed();
    tokio::pin!(changed);
    let mut stopping = Stopping {
        changed,
        signal: &stop,
        registered: false,
    };
    let mut connection = Connection {
        stream: ClientStream::new(stream),
        buffer: BytesMut::with_capacity(READ_CHUNK),
        header_ranges: Vec::new(),
        spare_headers: HeaderMap::new(),
        out: Vec::new(),
    };
    loop {
        match connection.read_request(&mut stopping).await {
            Next::Request {
                request,
                keep_alive,
            } => {
                let response = shared.handler.call(request).await;
                let keep_alive = keep_alive && !*stop.borrow();
                match connection.write_response(response, keep_alive).await {
                    Ok(true) => {}
                    Ok(false) | Err(_) => return,
                }
            }
            Next::BadRequest => {
                let _ = connection.stream.write_all(BAD_REQUEST).await;
                return;
            }
            Next::HandOver => {
                let Connection {
                    mut stream, buffer, ..
                } = connection;
                stream.unread = buffer.freeze();
                shared.serve_with_hyper(stream, stop).await;
                return;
            }
            Next::Closed => return,
        }
    }
}

/// Shutdown, as an idle connection waits for it.
struct Stopping<'a, S> {
    /// Completes when shutdown begins (the connection's own receiver).
    changed: Pin<&'a mut S>,
    /// Another receiver of the same signal, to look at without waiting.
    signal: &'a watch::Receiver<bool>,
    /// Whether `changed` has been polled, so that shutdown wakes this task.
    registered: bool,
}

impl<S: Future> Stopping<'_, S> {
    /// Ready once shutdown has begun. `changed` is polled on the first wait
    /// only (which registers the task to be woken) and again once the signal
    /// has changed: each poll takes the channel's lock, about 180
    /// instructions a request when it was polled on every wait.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered && !self.signal.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        self.registered = true;
        self.changed.as_mut().poll(cx).map(|_| ())
    }
}

/// What a connection does next.
// Returned once per request and moved straight into the handler: boxing
// the request would cost an allocation per request instead.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request {
        request: Request<ProxyBody>,
        keep_alive: bool,
    },
    /// Give the connection, from the unread request on, to hyper.
    HandOver,
    /// A head `httparse` accepts but `http` does not: answer 400 and close,
    /// as hyper does.
    BadRequest,
    Closed,
}

/// hyper's answer to a request it cannot parse.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A request head this loop takes, with its parts as places in the buffer
/// (they stay valid while the body is read, whereas the bytes may move).
struct Head {
    method: Method,
    target: Range<usize>,
    head_len: usize,
    body_len: usize,
    keep_alive: bool,
}

enum Parsed {
    Complete(Head),
    Partial,
    HandOver,
}

struct Connection {
    stream: ClientStream,
    /// Bytes read and not yet used: the next request, and any pipelined
    /// after it.
    buffer: BytesMut,
    /// The header fields of the head being read: names, and where their
    /// values are in `buffer`. Kept to reuse its allocation.
    header_ranges: Vec<(HeaderName, Range<usize>)>,
    /// The last response's header map, emptied, for the next request: with
    /// the upstream client filling each request's map with its response,
    /// a request and its response allocate no map at all.
    spare_headers: HeaderMap,
    /// The response being written. Kept to reuse its allocation.
    out: Vec<u8>,
}

impl Connection {
    /// Reads the next request. Waiting for its first byte has no time
    /// limit (an idle keep-alive connection may stay open; shutdown closes
    /// it); from there the head and body must come within the header read
    /// timeout, as in hyper.
    ///
    /// `stopping` is polled only while the connection waits for a request.
    async fn read_request<S: Future>(&mut self, stopping: &mut Stopping<'_, S>) -> Next {
        if self.buffer.is_empty() {
            self.buffer.reserve(READ_CHUNK);
            let mut read = pin!(self.stream.socket().read_buf(&mut self.buffer));
            let read = poll_fn(|cx| match read.as_mut().poll(cx) {
                Poll::Ready(read) => Poll::Ready(Some(read)),
                Poll::Pending => stopping.poll(cx).map(|()| None),
            })
            .await;
            if !matches!(read, Some(Ok(n)) if n > 0) {
                return Next::Closed;
            }
        }
        // Nearly always the first read brought the whole request: take it
        // without arming (and then disarming) the timer.
        if let Parsed::Complete(head) = parse_head(&self.buffer, &mut self.header_ranges) {
            let total = head.head_len + head.body_len;
            if self.buffer.len() >= total {
                return self.take_request(head, total);
            }
        }
        tokio::time::timeout(HEADER_READ_TIMEOUT, self.read_rest())
            .await
            .unwrap_or(Next::Closed)
    }

    /// Reads until the buffer holds a whole request, and takes it out.
    async fn read_rest(&mut self) -> Next {
        let head = loop {
            match parse_head(&self.buffer, &mut self.header_ranges) {
                Parsed::Complete(head) => break head,
                Parsed::Partial if self.buffer.len() < MAX_HEAD => {}
                Parsed::Partial | Parsed::HandOver => return Next::HandOver,
            }
            if !self.read_more(READ_CHUNK).await {
                return Next::Closed;
            }
        };
        let total = head.head_len + head.body_len;
        while self.buffer.len() < total {
            if !self.read_more(total - self.buffer.len()).await {
                return Next::Closed;
            }
        }
        self.take_request(head, total)
    }

    async fn read_more(&mut self, at_least: usize) -> bool {
        self.buffer.reserve(at_least);
        matches!(self.stream.socket().read_buf(&mut self.buffer).await, Ok(n) if n > 0)
    }

    /// Takes the first `total` bytes of the buffer as the request `head`
    /// describes. Header values and the body share those bytes.
    fn take_request(&mut self, head: Head, total: usize) -> Next {
        let message = self.buffer.split_to(total).freeze();
        if total > 2 * READ_CHUNK && self.buffer.is_empty() {
            // Let the large allocation go with this request, so that an
            // idle connection keeps a few KiB and not its largest request.
            self.buffer = BytesMut::new();
        }
        let Ok(uri) = Uri::from_maybe_shared(message.slice(head.target)) else {
            return Next::BadRequest;
        };
        let mut headers = std::mem::take(&mut self.spare_headers);
        headers.reserve(self.header_ranges.len());
        for (name, value) in self.header_ranges.drain(..) {
            if append_field(&mut headers, name, &message, value).is_err() {
                return Next::BadRequest;
            }
        }
        let mut request = Request::new(full_body(message.slice(head.head_len..)));
        *request.method_mut() = head.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Next::Request {
            request,
            keep_alive: head.keep_alive,
        }
    }

    /// Writes `response`, its body streamed. Ok(true) if the connection can
    /// carry another request.
    async fn write_response(
        &mut self,
        response: Response<ProxyBody>,
        mut keep_alive: bool,
    ) -> io::Result<bool> {
        let (mut parts, mut body) = response.into_parts();
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut declared = None;
        let mut dated = false;
        let mut says_close = false;
        for (name, value) in &parts.headers {
            // The framing headers are this loop's to write.
            if name == CONTENT_LENGTH {
                declared = decimal_length(value.as_bytes());
                continue;
            }
            if name == TRANSFER_ENCODING {
                continue;
            }
            if name == CONNECTION && connection_closes(value.as_bytes()) {
                says_close = true;
            }
            dated |= name == DATE;
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !dated {
            write_date(out);
        }
        let framing = if status_has_no_body(parts.status) {
            None
        } else {
            let encoder = match body.size_hint().exact().or(declared) {
                Some(length) => Encoder::Length(length),
                None => Encoder::Chunked,
            };
            encoder.write_field(out);
            Some(encoder)
        };
        keep_alive &= !says_close;
        if !keep_alive && !says_close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if parts.headers.capacity() <= SPARE_HEADERS {
            parts.headers.clear();
            self.spare_headers = parts.headers;
        }
        let Some(encoder) = framing else {
            self.stream.write_all(&self.out).await?;
            return Ok(keep_alive);
        };
        let complete = write_body(&mut self.stream, &mut self.out, &mut body, encoder).await?;
        if self.out.capacity() > 2 * COPY_LIMIT {
            // Grown by a large head; not kept for the idle connection.
            self.out = Vec::new();
        }
        Ok(keep_alive && complete)
    }
}

/// Parses the request head at the start of `buffer` and says whether this
/// loop takes the request; the header fields it takes go to `fields_out`.
fn parse_head(buffer: &[u8], fields_out: &mut Vec<(HeaderName, Range<usize>)>) -> Parsed {
    // Uninitialised: zeroing room for 64 fields cost more than parsing the
    // half dozen a request has.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_len = match parsed.parse_with_uninit_headers(buffer, &mut fields) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // hyper answers it (400, 431, or HTTP/2 for its preface).
        Err(_) => return Parsed::HandOver,
    };
    let (Some(method), Some(target), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Parsed::HandOver;
    };
    if !target.starts_with('/') {
        return Parsed::HandOver;
    }
    let method = match method {
        "HEAD" | "CONNECT" => return Parsed::HandOver,
        other => match Method::from_bytes(other.as_bytes()) {
            Ok(method) => method,
            Err(_) => return Parsed::HandOver,
        },
    };
    // httparse hands out slices of `buffer`: always within it.
    let place = |part: &[u8]| place(buffer, part).unwrap_or(0..0);
    let mut body_len = None;
    let mut keep_alive = true;
    fields_out.clear();
    for field in parsed.headers.iter() {
        let Ok(name) = field_name(field.name.as_bytes()) else {
            return Parsed::HandOver;
        };
        if name == TRANSFER_ENCODING || name == EXPECT || name == UPGRADE {
            return Parsed::HandOver;
        }
        if name == CONTENT_LENGTH {
            match (body_len, decimal_length(field.value)) {
                (None, Some(length)) if length <= MAX_BODY as u64 => {
                    body_len = Some(length as usize)
                }
                _ => return Parsed::HandOver,
            }
        }
        if name == CONNECTION {
            for token in connection_tokens(field.value) {
                match token {
                    ConnectionToken::Close => keep_alive = false,
                    ConnectionToken::Name(listed) if listed.eq_ignore_ascii_case(b"upgrade") => {
                        return Parsed::HandOver;
                    }
                    ConnectionToken::KeepAlive | ConnectionToken::Name(_) => {}
                }
            }
        }
        fields_out.push((name, place(field.value)));
    }
    Parsed::Complete(Head {
        method,
        target: place(target.as_bytes()),
        head_len,
        body_len: body_len.unwrap_or(0),
        keep_alive,
    })
}

/// Writes `body` after the head already in `out`, coalescing what is ready
/// at once into one write. Ok(false) if the body ended short of its
/// declared length (the connection must then close, so the client sees it).
async fn write_body(
    stream: &mut ClientStream,
    out: &mut Vec<u8>,
    body: &mut ProxyBody,
    mut encoder: Encoder,
) -> io::Result<bool> {
    let mut body = Pin::new(body);
    loop {
        // A frame that is ready now joins what is waiting in `out`; only
        // when the body has to wait does `out` go out first.
        let frame = match std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await
        {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                stream.write_all(out).await?;
                out.clear();
                std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(err)) => return Err(io::Error::other(err)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers have no place in a response this loop frames.
                _ => continue,
            },
        };
        encoder
            .begin(data.len(), out)
            .map_err(|_| io::Error::other("response body longer than its length"))?;
        if data.len() <= COPY_LIMIT {
            out.extend_from_slice(&data);
        } else {
            stream.write_all(out).await?;
            out.clear();
            stream.write_all(&data).await?;
        }
        encoder.end(out);
    }
    let complete = encoder.finish(out).is_ok();
    if !out.is_empty() {
        stream.write_all(out).await?;
    }
    Ok(complete)
}

/// Appends a `date` header. The text changes once a second, so each thread
/// formats it once a second.
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    DATE.with_borrow_mut(|(cached_second, text)| {
        if *cached_second != second {
            *text = httpdate::fmt_http_date(now);
            *cached_second = second;
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// A client connection as both this loop and hyper read and write it.
///
/// Its writes give up once the client has taken nothing for
/// [`CLIENT_WRITE_STALL`]: a client that stops reading would otherwise hold
/// its connection, the response and the upstream connection behind it for
/// ever. No timer is made until a write has to wait.
struct ClientStream {
    stream: TcpStream,
    /// Bytes this loop read and did not use, read again first: the start
    /// of a connection handed to hyper.
    unread: Bytes,
    write_stall: Stall,
}

impl ClientStream {
    fn new(stream: TcpStream) -> Self {
        ClientStream {
            stream,
            unread: Bytes::new(),
            write_stall: Stall::new(CLIENT_WRITE_STALL),
        }
    }

    /// The socket, for this loop's reads: nothing is unread until the loop
    /// hands the connection over, and reads have no stall limit to keep.
    fn socket(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// What a polled write comes to: one that went on (or failed) as it
    /// is; one that could not go on stays Pending while the client may still
    /// take data, and fails once it has taken nothing for the limit.
    fn checked(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.write_stall
            .check(cx, polled, "the client took nothing of its response", Err)
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.unread.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.unread.len().min(buf.remaining());
        buf.put_slice(&self.unread[..n]);
        self.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.checked(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.checked(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    fn parse(raw: &[u8]) -> (Parsed, Vec<(HeaderName, Range<usize>)>) {
        let mut fields = Vec::new();
        let parsed = parse_head(raw, &mut fields);
        (parsed, fields)
    }

    #[test]
    fn takes_a_plain_request_and_says_where_its_parts_are() {
        let raw = b"POST /v21.0/1/messages?x=1 HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\nX-A: b c\r\n\r\nabc";
        let (Parsed::Complete(head), fields) = parse(raw) else {
            panic!("taken");
        };
        assert_eq!(head.method, Method::POST);
        assert_eq!(&raw[head.target.clone()], b"/v21.0/1/messages?x=1");
        assert_eq!(head.head_len, raw.len() - 3);
        assert_eq!(head.body_len, 3);
        assert!(head.keep_alive);
        let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["host", "content-length", "x-a"]);
        assert_eq!(&raw[fields[2].1.clone()], b"b c");
    }

    #[test]
    fn connection_close_in_any_spelling_ends_keep_alive() {
        for value in ["close", "Close", "keep-alive, CLOSE", " close "] {
            let raw = format!("GET / HTTP/1.1\r\nConnection: {value}\r\n\r\n");
            let (Parsed::Complete(head), _) = parse(raw.as_bytes()) else {
                panic!("taken");
            };
            assert!(!head.keep_alive, "{value}");
        }
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        let raw = b"POST / HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\n";
        for end in 0..raw.len() {
            assert!(matches!(parse(&raw[..end]).0, Parsed::Partial), "{end}");
        }
    }

    #[test]
    fn everything_but_the_simple_case_goes_to_hyper() {
        let over = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        let cases: [&[u8]; 16] = [
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: keep-alive, upgrade\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"HEAD / HTTP/1.1\r\n\r\n",
            b"CONNECT graph.facebook.com:443 HTTP/1.1\r\n\r\n",
            b"GET http://graph.facebook.com/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3,3\r\n\r\n",
            over.as_bytes(),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ];
        for raw in cases {
            assert!(
                matches!(parse(raw).0, Parsed::HandOver),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    /// Bytes flipped, dropped, doubled and cut in valid heads: a head that is
    /// taken must have its parts inside itself, one length at most, no
    /// framing or upgrade field, and a body within the limit.
    #[test]
    fn mangled_heads_are_refused_or_taken_whole() {
        let seeds: [&[u8]; 3] = [
            b"POST /v21.0/1/messages HTTP/1.1\r\nHost: p\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n",
            b"GET /v21.0/1?fields=a,b HTTP/1.1\r\nHost: p\r\nAccept: */*\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        ];
        let special = b"\r\n: \t\0\x7f\xff,0123456789aAzZ-";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: usize| {
            // xorshift64: deterministic, so a failure reproduces.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let mut taken = 0;
        for round in 0..20_000 {
            let mut raw = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next(3) {
                if raw.len() < 2 {
                    break;
                }
                let at = next(raw.len());
                match next(4) {
                    0 => raw[at] = special[next(special.len())],
                    1 => {
                        raw.remove(at);
                    }
                    2 => raw.insert(at, special[next(special.len())]),
                    _ => raw.truncate(at.max(1)),
                }
            }
            let (Parsed::Complete(head), fields) = parse(&raw) else {
                continue;
            };
            taken += 1;
            let shown = String::from_utf8_lossy(&raw).into_owned();
            assert!(head.head_len <= raw.len(), "{shown:?}");
            assert!(head.target.end <= head.head_len, "{shown:?}");
            assert!(head.body_len <= MAX_BODY, "{shown:?}");
            let mut lengths = 0;
            for (name, value) in &fields {
                assert!(value.end <= head.head_len, "{shown:?}");
                assert!(
                    name != TRANSFER_ENCODING && name != EXPECT && name != UPGRADE,
                    "{shown:?}"
                );
                if name == CONTENT_LENGTH {
                    lengths += 1;
                    assert_eq!(
                        decimal_length(&raw[value.clone()]),
                        Some(head.body_len as u64),
                        "{shown:?}"
                    );
                }
            }
            assert!(lengths <= 1, "{shown:?}");
        }
        assert!(
            taken > 1_000,
            "the mutations still leave valid heads: {taken}"
        );
    }

    /// Answers every request with `size` bytes.
    struct Sized {
        size: usize,
    }

    impl Handler for Sized {
        fn call(
            &self,
            _request: Request<ProxyBody>,
        ) -> impl Future<Output = Response<ProxyBody>> + Send + '_ {
            std::future::ready(Response::new(full_body(vec![b'x'; self.size])))
        }
    }

    /// A client connected to a server that answers with `handler`, its
    /// `requests` sent.
    async fn client_of(handler: impl Handler, requests: &[&[u8]]) -> TcpStream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(super::super::serve(
            listener,
            Arc::new(handler),
            std::future::pending(),
        ));
        let mut client = TcpStream::connect(address).await.unwrap();
        for request in requests {
            client.write_all(request).await.unwrap();
        }
        client
    }

    /// A client connected to a server that answers with `size` bytes, its
    /// `request` sent.
    async fn asked_for(size: usize, request: &[u8]) -> TcpStream {
        client_of(Sized { size }, &[request]).await
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: sendgate.test\r\n\r\n";
    /// Served by hyper, which writes through the same stream.
    const GET_HTTP_1_0: &[u8] = b"GET / HTTP/1.0\r\nhost: sendgate.test\r\n\r\n";

    /// Answers with the names of the request's fields, and a field of its own.
    struct Names;

    impl Handler for Names {
        fn call(
            &self,
            request: Request<ProxyBody>,
        ) -> impl Future<Output = Response<ProxyBody>> + Send + '_ {
            let names: Vec<&str> = request.headers().keys().map(|name| name.as_str()).collect();
            let mut response = Response::new(full_body(names.join(",")));
            response
                .headers_mut()
                .insert("x-answer", HeaderValue::from_static("1"));
            std::future::ready(response)
        }
    }

    /// The bodies of the first two responses in `received`, once both are
    /// whole (each has a `content-length`).
    fn two_bodies(received: &[u8]) -> Option<[String; 2]> {
        let text = String::from_utf8_lossy(received);
        let mut rest = text.as_ref();
        let mut bodies = Vec::new();
        while bodies.len() < 2 {
            let (head, after) = rest.split_once("\r\n\r\n")?;
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))?
                .parse()
                .ok()?;
            bodies.push(after.get(..length)?.to_owned());
            rest = &after[length..];
        }
        bodies.try_into().ok()
    }

    #[tokio::test]
    async fn a_request_has_only_its_own_fields() {
        // Each request's map is the last response's, emptied.
        let mut client = client_of(
            Names,
            &[
                b"GET /1 HTTP/1.1\r\nhost: a\r\nx-first: 1\r\n\r\n",
                b"GET /2 HTTP/1.1\r\nhost: a\r\n\r\n",
            ],
        )
        .await;
        let mut received = Vec::new();
        let mut buf = [0; 4096];
        let bodies = loop {
            if let Some(bodies) = two_bodies(&received) {
                break bodies;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("both answers in time")
                .unwrap();
            assert!(n > 0, "closed after {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buf[..n]);
        };
        assert_eq!(bodies, ["host,x-first", "host"]);
    }

    /// Far more than the sockets between server and client can hold.
    const FLOOD: usize = 64 << 20;

    // The clock is paused: it jumps to the next timer whenever every task
    // waits, so the minute-long limit costs no time.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_disconnected_after_the_write_stall_limit() {
        for request in [GET, GET_HTTP_1_0] {
            let mut client = asked_for(FLOOD, request).await;
            tokio::time::sleep(CLIENT_WRITE_STALL + Duration::from_secs(1)).await;
            // What was already on its way still arrives, then the connection
            // ends; without the limit the whole response would follow.
            let mut received = 0;
            let mut buf = vec![0; 1 << 16];
            let ended = tokio::time::timeout(Duration::from_secs(10), async {
                while let Ok(n @ 1..) = client.read(&mut buf).await {
                    received += n;
                }
            })
            .await;
            assert!(ended.is_ok(), "the server left the connection open");
            assert!(received < FLOOD, "not cut short: {received} bytes came");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_slowly_gets_its_whole_response() {
        const SIZE: usize = 32 << 20;
        let started = tokio::time::Instant::now();
        let client = asked_for(SIZE, GET).await;
        let mut received = Vec::new();
        let mut buf = vec![0; 1 << 16];
        let mut head_len = None;
        for _ in 0..10_000 {
            // Half the limit between reads, each taking all that has come:
            // the server waits long and often, never a whole minute.
            tokio::time::sleep(CLIENT_WRITE_STALL / 2).await;
            loop {
                match client.try_read(&mut buf) {
                    Ok(0) => panic!("cut off after {} bytes", received.len()),
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) => panic!("cut off after {} bytes: {err}", received.len()),
                }
            }
            head_len = head_len.or_else(|| {
                let end = received.windows(4).position(|w| w == b"\r\n\r\n")?;
                Some(end + 4)
            });
            if head_len.is_some_and(|head_len| received.len() >= head_len + SIZE) {
                break;
            }
        }
        let head_len = head_len.expect("a response head");
        assert_eq!(received.len() - head_len, SIZE);
        assert!(received.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(
            started.elapsed() > 2 * CLIENT_WRITE_STALL,
            "the response took longer than the limit in all: {:?}",
            started.elapsed()
        );
    }
}
