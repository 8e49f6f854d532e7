//! A limit on how long a transfer may make no progress: for the waits that
//! no request deadline covers once a response has begun, an upstream that
//! stops sending its body and a client that stops reading its response.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;

/// How long a transfer has been waiting, against its limit.
pub(crate) struct Stall {
    limit: Duration,
    /// Made the first time the transfer has to wait: most responses go
    /// through whole and never need one.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` is set for the wait in progress.
    waiting: bool,
}

impl Stall {
    pub(crate) fn new(limit: Duration) -> Self {
        Stall {
            limit,
            timer: None,
            waiting: false,
        }
    }

    /// What a polled transfer comes to: as it is if it went on (or ended
    /// or failed); Pending while it waits within the limit; once it has
    /// waited the limit, a `TimedOut` error ("`what` for <limit>"), made
    /// into the transfer's own result by `fail`.
    pub(crate) fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<T>,
        what: &str,
        fail: impl FnOnce(io::Error) -> T,
    ) -> Poll<T> {
        if polled.is_ready() {
            // The next wait is a new one.
            self.waiting = false;
            return polled;
        }
        ready!(self.poll_expired(cx));
        let limit = self.limit;
        Poll::Ready(fail(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} for {limit:?}"),
        )))
    }

    /// Ready once the wait in progress (or starting now) has lasted the
    /// limit.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.waiting {
            // A new wait: the clock is read once for it, not on every poll.
            timer.as_mut().reset(tokio::time::Instant::now() + limit);
            self.waiting = true;
        }
        timer.as_mut().poll(cx)
    }
}
