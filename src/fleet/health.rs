//! Whether Redis answers: set by every call, read by `/readyz` and the
//! metrics. A change is logged once, not once per failing call.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::FleetError;

/// Redis reachability as the last call found it.
#[derive(Default)]
pub struct Health {
    /// Fast path: read on every call.
    down: AtomicBool,
    /// Why, while down.
    reason: Mutex<Option<String>>,
}

impl Health {
    /// Redis answered.
    pub(crate) fn answered(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            self.reason.lock().unwrap_or_else(|e| e.into_inner()).take();
            tracing::info!("redis answers again: fleet state shared");
        }
    }

    /// A call found Redis unreachable (or too slow).
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
