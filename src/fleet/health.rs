//! Whether Redis answers: set by every call, read by `/readyz` and the
//! metrics. A change is logged once, not once per failing call.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::FleetError;

/// While Redis is silent (calls time out), one call this long after the
/// last timeout is let through to find out whether it is back; the others
/// fail at once instead of each waiting out `fleet.timeout_ms` (a hung or
/// partitioned Redis would otherwise slow every send). A refused
/// connection fails fast by itself and gates nothing.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Redis reachability as the last call found it.
pub struct Health {
    /// Fast path: read on every call.
    down: AtomicBool,
    /// The last failure was a timeout: calls are gated by [`PROBE_EVERY`].
    silent: AtomicBool,
    /// Why, while down.
    reason: Mutex<Option<String>>,
    /// When the last call failed or was let through while down (ms since
    /// `epoch`).
    probed_at: AtomicU64,
    epoch: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            down: AtomicBool::new(false),
            silent: AtomicBool::new(false),
            reason: Mutex::new(None),
            probed_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Health {
    /// Whether a call should go to Redis: always while it answers; while
    /// it does not, one call per [`PROBE_EVERY`].
    pub(crate) fn may_call(&self) -> bool {
        if !self.silent.load(Ordering::Acquire) {
            return true;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.probed_at.load(Ordering::Acquire);
        now.saturating_sub(last) >= PROBE_EVERY.as_millis() as u64
            && self
                .probed_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Redis answered.
    pub(crate) fn answered(&self) {
        self.silent.store(false, Ordering::Release);
        if self.down.swap(false, Ordering::AcqRel) {
            self.reason.lock().unwrap_or_else(|e| e.into_inner()).take();
            tracing::info!("redis answers again: fleet state shared");
        }
    }

    /// A call got no answer within the deadline.
    pub(crate) fn timed_out(&self, err: &FleetError) {
        self.probed_at
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Release);
        self.silent.store(true, Ordering::Release);
        self.failed(err);
    }

    /// A call found Redis unreachable.
    pub(crate) fn failed(&self, err: &FleetError) {
        let first = !self.down.swap(true, Ordering::AcqRel);
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
        if first {
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
