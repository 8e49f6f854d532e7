//! A limit on how long a transfer may make no progress: for the waits that
//! no request deadline covers once a response has begun, an upstream that
//! stops sending its body and a client that stops reading its response.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
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

    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// The transfer went on: its next wait is a new one.
    pub(crate) fn progressed(&mut self) {
        self.waiting = false;
    }

    /// Called when the transfer could not go on: Ready once it has not for
    /// the limit.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
