//! Whether Redis answers: set by every call, read by `/readyz` and the
//! metrics, and a gate in front of every call. A change is logged once, not
//! once per failing call.
//!
//! While Redis does not answer, calls fail at once and one call per
//! [`PROBE_EVERY`] is let through to find out whether it is back: a hung or
//! partitioned Redis would otherwise cost every call its deadline, and
//! even a refused connection costs a reconnect attempt each (about 150 ms
//! measured, with the connection manager's retry).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::FleetError;

/// How long calls are not tried after a failure, before one probes again.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Redis reachability as the last call found it.
pub struct Health {
    /// Fast path: read on every call.
    down: AtomicBool,
    /// Why, while down.
    reason: Mutex<Option<String>>,
    /// Milliseconds since `epoch` before which no call is tried; 0 while
    /// Redis answers (the one load a call pays).
    closed_until: AtomicU64,
    epoch: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            down: AtomicBool::new(false),
            reason: Mutex::new(None),
            closed_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Health {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn reopen_at(&self) -> u64 {
        let probe = u64::try_from(PROBE_EVERY.as_millis()).unwrap_or(u64::MAX);
        self.now_ms().saturating_add(probe).max(1)
    }

    /// Whether a call should go to Redis: always while it answers; after a
    /// failure, the first call once [`PROBE_EVERY`] has passed (the probe).
    pub(crate) fn may_call(&self) -> bool {
        let until = self.closed_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if self.now_ms() < until {
            return false;
        }
        // This call is the probe; the others fail at once until it answers
        // or another interval passes.
        self.closed_until
            .compare_exchange(
                until,
                self.reopen_at(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Redis answered.
    pub(crate) fn answered(&self) {
        if self.closed_until.load(Ordering::Relaxed) != 0 {
            self.closed_until.store(0, Ordering::Relaxed);
        }
        if self.down.swap(false, Ordering::AcqRel) {
            self.reason.lock().unwrap_or_else(|e| e.into_inner()).take();
            tracing::info!("redis answers again: fleet state shared");
        }
    }

    /// A call found Redis unreachable, or got no answer in time.
    pub(crate) fn failed(&self, err: &FleetError) {
        self.closed_until.store(self.reopen_at(), Ordering::Relaxed);
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = %err,
                "degraded: redis unreachable; lookups answer from the local cache, limits \
                 fall back to local limiters, webhooks get 503 until it answers"
            );
        }
    }

    /// `None` while Redis answers, else why it does not.
    pub fn degraded(&self) -> Option<String> {
        if !self.down.load(Ordering::Acquire) {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// True while Redis answers.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }
}
