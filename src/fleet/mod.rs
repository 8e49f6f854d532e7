//! Fleet mode: replicas of sendgate share identities, limits and Meta's
//! back-offs through Redis (or Valkey, which speaks the same protocol).
//!
//! [`Redis`] is the one way in: every call has a deadline
//! (`fleet.timeout_ms`), and every answer tells [`Health`] whether Redis is
//! reachable, which `/readyz` and the metrics report. The connection comes
//! back by itself after an outage (redis-rs' connection manager, or a
//! reconnect loop for a cluster), with a back-off bounded at
//! `connection::RECONNECT_MAX`. At start a replica waits at most one deadline
//! for Redis: one that starts while Redis is down serves degraded until it
//! can connect.
//!
//! Keys all begin with `sg:`; a `{…}` part is the Redis Cluster hash tag,
//! so the keys one script touches live in one slot.

mod connection;
mod error;
mod health;
pub(crate) mod invalidation;
pub(crate) mod limits;
mod settings;

use std::future::Future;
use std::sync::Arc;

pub use connection::Redis;
pub use error::FleetError;
pub use health::Health;
pub use settings::FleetConfig;

/// Fleet mode's own thread: a small runtime that owns the Redis connection's
/// tasks (so they run whatever the proxy's workers are doing) and runs the
/// calls of blocking code (operator commands, the webhook relay's durable
/// write), which cannot await.
pub struct Fleet {
    redis: Redis,
    runtime: tokio::runtime::Handle,
    /// Dropping it ends the thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fleet {
    /// Starts the fleet thread and prepares the connection (see
    /// [`Redis::connect`]), waiting at most one deadline for a first answer.
    pub fn start(config: &FleetConfig) -> Result<Arc<Fleet>, FleetError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel();
        let config = config.clone();
        std::thread::Builder::new()
            .name("sendgate-fleet".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready.send(Err(FleetError(format!("fleet runtime: {err}"))));
                        return;
                    }
                };
                let connected = runtime.block_on(async {
                    let redis = Redis::connect(&config)?;
                    redis.first_contact().await;
                    Ok(redis)
                });
                let ok = connected.is_ok();
                let _ = ready.send(connected.map(|redis| (redis, runtime.handle().clone())));
                if ok {
                    let _ = runtime.block_on(stopped);
                }
            })
            .map_err(|err| FleetError(format!("fleet thread: {err}")))?;
        let (redis, runtime) = started
            .recv()
            .map_err(|_| FleetError("fleet thread died".into()))??;
        Ok(Arc::new(Fleet {
            redis,
            runtime,
            _stop: stop,
        }))
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Runs a future to completion on the calling thread, with the fleet
    /// runtime's timers and connections (driven by the fleet thread). For
    /// blocking code only (an operator command, `spawn_blocking`): it panics
    /// on an async worker, as tokio's `block_on` does.
    pub fn block<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    /// Runs a task on the fleet thread for as long as the process lives.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(future);
    }
}
