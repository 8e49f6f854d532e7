//! A hand-written HTTP/1.1 upstream on loopback for the upstream client's
//! unit tests (the connection's and the pool's): it records each request's
//! bytes exactly and answers with scripted bytes, split and paused at will,
//! so that framing the client must survive can be written out as it is.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::http1::Connection;

/// A test that goes wrong fails instead of hanging.
pub(super) const PATIENCE: Duration = Duration::from_secs(5);

/// What the test upstream answers one request with: bytes written in
/// parts (a pause between them, so that they arrive in separate reads),
/// then the connection closed or kept for the next request.
pub(super) struct Answer {
    pub(super) parts: Vec<Vec<u8>>,
    pub(super) close: bool,
}

pub(super) fn answer(bytes: &str) -> Answer {
    Answer {
        parts: vec![bytes.as_bytes().to_vec()],
        close: false,
    }
}

/// An answer written in `parts`, each in its own write after a pause.
pub(super) fn answer_in_parts(parts: &[&str]) -> Answer {
    Answer {
        parts: parts.iter().map(|part| part.as_bytes().to_vec()).collect(),
        close: false,
    }
}

pub(super) fn answer_then_close(bytes: &str) -> Answer {
    Answer {
        close: true,
        ..answer(bytes)
    }
}

/// A request as the upstream read it: on which accepted connection
/// (counted from 0), and its bytes exactly.
pub(super) struct Received {
    pub(super) connection: usize,
    pub(super) bytes: Vec<u8>,
}

/// A hand-written upstream on loopback: reads whole requests, answers
/// each with the next of its answers.
pub(super) struct Upstream {
    pub(super) addr: SocketAddr,
    received: mpsc::UnboundedReceiver<Received>,
}

impl Upstream {
    pub(super) async fn start(answers: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received, received_rx) = mpsc::unbounded_channel();
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                let connection = accepted;
                accepted += 1;
                let (received, answers) = (received.clone(), answers.clone());
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    while let Some(bytes) = read_request(&mut stream, &mut pending).await {
                        let _ = received.send(Received { connection, bytes });
                        let Some(answer) = answers.lock().unwrap().pop_front() else {
                            return;
                        };
                        for (i, part) in answer.parts.iter().enumerate() {
                            if i > 0 {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            stream.write_all(part).await.unwrap();
                        }
                        if answer.close {
                            return;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            received: received_rx,
        }
    }

    /// A client connection to it.
    pub(super) async fn connect(&self) -> Connection {
        Connection::plain(TcpStream::connect(self.addr).await.unwrap())
    }

    /// Whether no further request has reached the upstream (after a
    /// moment for one in flight to arrive).
    pub(super) async fn got_nothing_more(&mut self) -> bool {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.received.try_recv().is_err()
    }

    pub(super) async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .expect("a request reaches the upstream")
            .expect("the upstream runs")
    }
}

/// Reads one whole request (head, then a content-length or chunked
/// body) off the stream; `None` once the client closed it.
async fn read_request(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(len) = request_len(pending) {
            return Some(pending.drain(..len).collect());
        }
        let mut chunk = vec![0u8; 64 << 10];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..read]);
    }
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The length of the complete request at the front of `bytes`, if it
/// is all there.
fn request_len(bytes: &[u8]) -> Option<usize> {
    let head_len = find(bytes, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..head_len]).to_ascii_lowercase();
    if head.contains("\r\ntransfer-encoding: chunked\r\n") {
        let (_, body_len) = dechunk(&bytes[head_len..])?;
        return Some(head_len + body_len);
    }
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .map_or(0, |length| length.trim().parse::<usize>().unwrap());
    (bytes.len() >= head_len + length).then_some(head_len + length)
}

/// The test's own reading of a chunked body: its data and its length on
/// the wire, once complete.
pub(super) fn dechunk(mut wire: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = wire.len();
    let mut data = Vec::new();
    loop {
        let line = find(wire, b"\r\n")?;
        let size = std::str::from_utf8(&wire[..line]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
        wire = &wire[line + 2..];
        if size == 0 {
            assert!(wire.starts_with(b"\r\n") || wire.len() < 2, "no trailers");
            wire = wire.get(2..)?;
            return Some((data, total - wire.len()));
        }
        let chunk = wire.get(..size + 2)?;
        assert_eq!(&chunk[size..], b"\r\n");
        data.extend_from_slice(&chunk[..size]);
        wire = &wire[size + 2..];
    }
}
