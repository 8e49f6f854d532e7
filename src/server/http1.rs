//! sendgate's own HTTP/1.1 server loop, for the plain requests that are
//! nearly all of its traffic.
//!
//! hyper's server connection costs more per request than everything nginx
//! does for one (BENCHMARKS.md, "Design choices"), so a connection starts
//! here: one task reads a request head with `httparse` into a buffer it
//! borrows from its thread while bytes come in (`http1::buffers`), takes
//! the body from the same buffer, calls the handler and writes the response
//! head and a small body in one write.
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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{
    CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HeaderName, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::registry::{Activity, Entry, Phase, Signal};
use super::shared::{CLIENT_WRITE_STALL, Handler, Shared};
use crate::body::{ProxyBody, full_body};
use crate::http1::buffers;
use crate::http1::encode::Encoder;
use crate::http1::{
    ConnectionToken, append_field, connection_closes, connection_tokens, decimal_length,
    field_name, place, status_has_no_body,
};
use crate::stall::Stall;
use crate::tls::PeerNames;

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
const READ_CHUNK: usize = buffers::SIZE;
/// A request up to this size is copied out of the read buffer, so that the
/// buffer goes back to the thread's spares while the request is in flight
/// (a send waits on Meta for 100 ms to seconds); a larger one keeps it.
const COPY_REQUEST: usize = READ_CHUNK / 2;
/// Spare buffers and maps a worker thread keeps for its next requests.
/// Few: under load they are taken back at once, and an idle thread holds
/// their memory for nobody.
const SPARES_KEPT: usize = 16;
/// Response data up to this size is copied behind the head (or the chunk
/// size line) so that it goes out in the same write.
const COPY_LIMIT: usize = 16 * 1024;

/// Serves one client connection until it closes, its client stops, or
/// the registry closes it.
// Not an async fn: that would keep its arguments beside the connection
// made of them for the connection's whole life (rustc gives an async fn's
// arguments slots of their own); the block uses the connection in place.
pub(super) fn serve<H: Handler>(
    stream: TcpStream,
    shared: Arc<Shared<H>>,
    entry: Entry,
) -> impl Future<Output = ()> + Send {
    let mut connection = Connection {
        stream: ClientStream::new(stream),
        buffer: BytesMut::new(),
        entry,
    };
    async move {
        loop {
            // Waiting costs this small task only: no buffer, and none of the
            // state requests are answered with.
            match connection.wait_for_bytes().await {
                Waited::Bytes => {}
                Waited::Park => continue,
                Waited::Closed => return,
            }
            // The state that answers requests (the handler's future is
            // kilobytes) is allocated once per busy spell rather than once per
            // request, and freed when the connection goes idle.
            match Box::pin(serve_busy(&shared, &mut connection)).await {
                Spell::Parked => {
                    if !connection.entry.activity().continue_as(Phase::Parked) {
                        return;
                    }
                }
                Spell::Ended => return,
                Spell::HandOver => {
                    let Connection {
                        mut stream,
                        buffer,
                        entry,
                    } = connection;
                    stream.unread = buffer.freeze();
                    // Boxed for the same reason: hyper's connection is large.
                    Box::pin(shared.serve_with_hyper(stream, entry, None)).await;
                    return;
                }
            }
        }
    }
}

/// Serves one TLS connection: the handshake, then hyper. The handshake is
/// the connection's opening: the head timeout, eviction at the cap and
/// shutdown close it as they close a client that has sent nothing.
pub(super) async fn serve_tls<H: Handler>(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    shared: Arc<Shared<H>>,
    entry: Entry,
) {
    let handshake = acceptor.accept(ClientStream::new(stream));
    tokio::pin!(handshake);
    let stream = match entry.activity().until_close(handshake).await {
        Some(Ok(stream)) => stream,
        Some(Err(err)) => {
            tracing::debug!(error = %err, "TLS handshake failed");
            return;
        }
        None => return,
    };
    let peer = PeerNames::of(stream.get_ref().1);
    Box::pin(shared.serve_with_hyper(stream, entry, peer)).await;
}

/// How a busy spell ended.
enum Spell {
    /// Idle long enough that its state is put away.
    Parked,
    /// Give the connection, from the unread request on, to hyper.
    HandOver,
    Ended,
}

/// Serves requests until the connection ends, is handed over, or has
/// been idle long enough to park. The first request's bytes are in the
/// buffer.
async fn serve_busy<H: Handler>(shared: &Shared<H>, connection: &mut Connection) -> Spell {
    loop {
        // Taken out of the match before the handler runs: a scrutinee
        // would stay in the future beside the handler's, request and all.
        let (request, keep_alive) = match connection.read_request().await {
            Next::Request {
                request,
                keep_alive,
            } => (request, keep_alive),
            Next::BadRequest => {
                let _ = connection.stream.write_all(BAD_REQUEST).await;
                return Spell::Ended;
            }
            Next::HandOver => return Spell::HandOver,
            Next::Closed => return Spell::Ended,
        };
        let response = shared.handler.call(request).await;
        // Shutdown, or a timeout decided while this was read.
        let keep_alive = keep_alive && !connection.entry.activity().closing();
        if !matches!(
            connection.write_response(response, keep_alive).await,
            Ok(true)
        ) || !connection.entry.enter(Phase::Idle)
        {
            return Spell::Ended;
        }
        if connection.buffer.is_empty() {
            // The next request is waited for here, so that it finds this
            // spell's state ready, by the few connections a worker lets
            // hold theirs while idle; the others put it away at once.
            let Some(_hold) = shared.registry.hold() else {
                return Spell::Parked;
            };
            match connection.wait_for_bytes().await {
                Waited::Bytes => {}
                Waited::Park => return Spell::Parked,
                Waited::Closed => return Spell::Ended,
            }
        }
    }
}

/// A worker thread's spare response buffers and header maps (read buffers
/// are `http1::buffers`'): a connection takes them when bytes arrive and
/// gives them back when its request is done, so that an idle keep-alive
/// connection holds none.
#[derive(Default)]
struct Spares {
    outs: Vec<Vec<u8>>,
    maps: Vec<HeaderMap>,
    /// The header fields of the head being parsed: names, and where their
    /// values are in the buffer. Used only while a head is parsed and taken.
    fields: Vec<(HeaderName, Range<usize>)>,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

fn take_out() -> Vec<u8> {
    SPARES
        .with_borrow_mut(|spares| spares.outs.pop())
        .unwrap_or_default()
}

fn give_out(mut out: Vec<u8>) {
    out.clear();
    if out.capacity() <= 2 * COPY_LIMIT {
        SPARES.with_borrow_mut(|spares| {
            if spares.outs.len() < SPARES_KEPT {
                spares.outs.push(out);
            }
        });
    }
}

/// Gives a response's header map back, emptied, for a next request: with
/// the upstream client filling each request's map with its response, a
/// request and its response allocate no map at all.
fn give_map(mut map: HeaderMap) {
    if map.capacity() <= SPARE_HEADERS {
        map.clear();
        SPARES.with_borrow_mut(|spares| {
            if spares.maps.len() < SPARES_KEPT {
                spares.maps.push(map);
            }
        });
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

/// What waiting for a request's first bytes came to.
enum Waited {
    /// They are in the buffer.
    Bytes,
    /// Idle long enough to park.
    Park,
    Closed,
}

/// hyper's answer to a request it cannot parse.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A request head this loop takes, with its parts as places in the buffer
/// (they stay valid while the body is read, whereas the bytes may move).
#[derive(Debug, PartialEq)]
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
    /// after it. No allocation while the connection is idle.
    buffer: BytesMut,
    /// Its place in the registry, which applies the timeouts.
    entry: Entry,
}

impl Connection {
    /// Reads the request whose first bytes are in the buffer. Its head
    /// (and body) must come within the header timeout, from the accept for
    /// a connection's first request and from the first byte for a later
    /// one; the registry's sweeper closes the connection otherwise.
    async fn read_request(&mut self) -> Next {
        // Nearly always the first read brought the whole request.
        let next = match self.take_if_complete() {
            Some(next) => next,
            None => {
                let activity = self.entry.activity();
                // A connection's first request keeps the time of its accept.
                if activity.phase() != Phase::Opening && !self.entry.enter(Phase::Reading) {
                    return Next::Closed;
                }
                self.read_rest().await
            }
        };
        match next {
            Next::Request { .. } if !self.entry.enter(Phase::Busy) => Next::Closed,
            next => next,
        }
    }

    /// Waits for the first bytes of a request without a buffer, then reads
    /// them into a spare one.
    async fn wait_for_bytes(&mut self) -> Waited {
        loop {
            let socket = self.stream.socket();
            match readable(socket, self.entry.activity()).await {
                Ok(()) => {}
                Err(Some(Signal::Park)) => return Waited::Park,
                Err(_) => return Waited::Closed,
            }
            let mut buffer = buffers::take();
            match socket.try_read_buf(&mut buffer) {
                Ok(read) if read > 0 => {
                    self.buffer = buffer;
                    return Waited::Bytes;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => buffers::give(buffer),
                _ => {
                    buffers::give(buffer);
                    return Waited::Closed;
                }
            }
        }
    }

    /// Takes the request out of the buffer if it is all there.
    fn take_if_complete(&mut self) -> Option<Next> {
        SPARES.with_borrow_mut(|spares| {
            let Parsed::Complete(head) = parse_head(&self.buffer, &mut spares.fields) else {
                return None;
            };
            let total = head.head_len + head.body_len;
            (self.buffer.len() >= total).then(|| self.take_request(head, total, spares))
        })
    }

    /// Reads until the buffer holds a whole request, and takes it out.
    async fn read_rest(&mut self) -> Next {
        let total = loop {
            let parsed =
                SPARES.with_borrow_mut(|spares| parse_head(&self.buffer, &mut spares.fields));
            match parsed {
                Parsed::Complete(head) => break head.head_len + head.body_len,
                Parsed::Partial if self.buffer.len() < MAX_HEAD => {}
                Parsed::Partial | Parsed::HandOver => return Next::HandOver,
            }
            if !self.read_more(READ_CHUNK).await {
                return Next::Closed;
            }
        };
        while self.buffer.len() < total {
            if !self.read_more(total - self.buffer.len()).await {
                return Next::Closed;
            }
        }
        // Parsed again now that it is all in: the places of its fields are
        // kept only between a parse and the take that follows it.
        self.take_if_complete().unwrap_or(Next::Closed)
    }

    /// Between requests: the read buffer goes back to the thread's spares
    /// unless pipelined bytes wait in it.
    fn rest(&mut self) {
        if self.buffer.is_empty() {
            buffers::give(std::mem::take(&mut self.buffer));
        }
    }

    /// Reads at least one more byte into the buffer, with room for
    /// `at_least`; false if the connection ended or is to close.
    async fn read_more(&mut self, at_least: usize) -> bool {
        self.buffer.reserve(at_least);
        loop {
            let socket = self.stream.socket();
            match readable(socket, self.entry.activity()).await {
                Ok(()) => {}
                // A park request that raced this read: not idle now.
                Err(Some(Signal::Park)) => continue,
                Err(_) => return false,
            }
            match socket.try_read_buf(&mut self.buffer) {
                Ok(read) => return read > 0,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
    }

    /// Takes the first `total` bytes of the buffer as the request `head`
    /// describes (its fields' places in `spares.fields`). Header values and
    /// the body share those bytes: a copy of them for a small request, so
    /// that the read buffer is free again while the request is in flight;
    /// the buffer's own for a large one.
    fn take_request(&mut self, head: Head, total: usize, spares: &mut Spares) -> Next {
        let message = if total <= COPY_REQUEST {
            let message = Bytes::copy_from_slice(&self.buffer[..total]);
            self.buffer.advance(total);
            message
        } else {
            self.buffer.split_to(total).freeze()
        };
        // Nothing pipelined: the buffer goes back now, not when the answer
        // comes (a send waits on Meta for 100 ms to seconds).
        self.rest();
        let Ok(uri) = Uri::from_maybe_shared(message.slice(head.target)) else {
            return Next::BadRequest;
        };
        let mut headers = spares.maps.pop().unwrap_or_default();
        headers.reserve(spares.fields.len());
        for (name, value) in spares.fields.drain(..) {
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
        keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let mut out = take_out();
        let written = self
            .write_head_and_body(parts, &mut body, &mut out, keep_alive)
            .await;
        give_out(out);
        written
    }

    async fn write_head_and_body(
        &mut self,
        mut parts: http::response::Parts,
        body: &mut ProxyBody,
        out: &mut Vec<u8>,
        mut keep_alive: bool,
    ) -> io::Result<bool> {
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
        give_map(std::mem::take(&mut parts.headers));
        let Some(encoder) = framing else {
            self.stream.write_all(out).await?;
            return Ok(keep_alive);
        };
        let complete = write_body(&mut self.stream, out, body, encoder).await?;
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

/// The request-head parser's invariants (the `request_head` fuzz target):
/// a head it takes lies within the bytes it was given, with an
/// origin-form target, a bounded body and a method this loop serves; it
/// depends on its own bytes only, and is not taken before its last byte.
#[cfg(any(test, fuzzing))]
pub(crate) fn check_request_head(data: &[u8]) {
    let mut fields = Vec::new();
    let Parsed::Complete(head) = parse_head(data, &mut fields) else {
        return;
    };
    let within = |range: &Range<usize>| range.start <= range.end && range.end <= head.head_len;
    assert!(head.head_len <= data.len());
    assert!(within(&head.target) && data[head.target.clone()].starts_with(b"/"));
    assert!(fields.iter().all(|(_, value)| within(value)));
    assert!(head.body_len <= MAX_BODY);
    assert!(head.method != Method::HEAD && head.method != Method::CONNECT);
    let mut alone = Vec::new();
    let Parsed::Complete(same) = parse_head(&data[..head.head_len], &mut alone) else {
        panic!("a head is taken without the bytes after it");
    };
    assert_eq!(same, head);
    assert_eq!(alone, fields);
    assert!(!matches!(
        parse_head(&data[..head.head_len - 1], &mut alone),
        Parsed::Complete(_)
    ));
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

/// Waits until `socket` has bytes to read, or until the registry signals
/// the connection (`Err(Some(..))`); `Err(None)` if the socket failed.
async fn readable(socket: &TcpStream, activity: &Activity) -> Result<(), Option<Signal>> {
    poll_fn(|cx| match socket.poll_read_ready(cx) {
        Poll::Ready(ready) => Poll::Ready(ready.map_err(|_| None)),
        Poll::Pending => activity.poll_signal(cx).map(|signal| Err(Some(signal))),
    })
    .await
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

    use tokio::io::AsyncReadExt;

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
