//! Fleet mode: replicas of sendgate share identities, limits and Meta's
//! back-offs through Redis (or Valkey, which speaks the same protocol).
//!
//! [`Redis`] is the one way in: every call has a deadline
//! (`fleet.timeout_ms`), and every answer tells [`Health`] whether Redis is
//! reachable, which `/readyz` and the metrics report. The connection comes
//! back by itself after an outage (redis-rs' connection manager, or a
//! reconnect loop for a cluster), with a back-off bounded at
//! [`RECONNECT_MAX`]. Nothing waits for Redis at start: a replica that
//! starts while Redis is down serves degraded until it can connect.
//!
//! Keys all begin with `sg:`; a `{…}` part is the Redis Cluster hash tag,
//! so the keys one script touches live in one slot.

mod health;
pub(crate) mod invalidation;
pub(crate) mod limits;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, TlsCertificates, Value};

use crate::config::FleetConfig;

pub use health::Health;

/// Longest pause between two attempts to reach Redis again.
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// First pause after a failed attempt; doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(100);

/// Why a Redis call did not answer. The text never holds the URL (it may
/// carry a password).
#[derive(Debug, Clone)]
pub struct FleetError(pub(crate) String);

impl std::fmt::Display for FleetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis: {}", self.0)
    }
}

impl std::error::Error for FleetError {}

impl From<redis::RedisError> for FleetError {
    fn from(err: redis::RedisError) -> Self {
        // A RedisError's text names the failing command and the server's
        // message, never the connection URL.
        FleetError(err.to_string())
    }
}

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
    /// [`Redis::connect`]: nothing waits for Redis).
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
                let connected = runtime.block_on(async { Redis::connect(&config) });
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

/// A connection to Redis, shared by every task of the process; cloning is
/// cheap (both kinds multiplex one socket per node).
#[derive(Clone)]
pub struct Redis {
    connection: Connection,
    timeout: Duration,
    health: Arc<Health>,
    /// What the invalidation subscriber connects with.
    client: SubscribeTo,
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    /// Set once the cluster's topology was read; until then calls fail fast.
    Cluster(Arc<ArcSwapOption<ClusterConnection>>),
}

/// Where the invalidation subscriber connects: one node is enough, since
/// Redis Cluster broadcasts `PUBLISH` to every node.
#[derive(Clone)]
pub(crate) struct SubscribeTo(redis::Client);

impl Redis {
    /// Prepares the connection without waiting for Redis: a bad URL fails
    /// here, an unreachable server only makes calls fail until it answers.
    /// Needs a tokio runtime (the connection's tasks run on it).
    pub fn connect(config: &FleetConfig) -> Result<Self, FleetError> {
        // rediss:// uses rustls with the process's default crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_millis(config.timeout_ms);
        let certs = match config.ca_file.as_str() {
            "" => None,
            path => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(
                    std::fs::read(path)
                        .map_err(|err| FleetError(format!("fleet.ca_file: {path}: {err}")))?,
                ),
            }),
        };
        let url = config.redis_url.as_str();
        let client = match &certs {
            Some(certs) => redis::Client::build_with_tls(url, certs.clone()),
            None => redis::Client::open(url),
        }
        .map_err(|err| FleetError(format!("fleet.redis_url: {err}")))?;
        let health = Arc::new(Health::default());
        let connection = if config.cluster {
            let mut builder = ClusterClient::builder([url])
                .connection_timeout(timeout)
                .response_timeout(timeout);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            let cluster = builder
                .build()
                .map_err(|err| FleetError(format!("fleet.redis_url: {err}")))?;
            let slot = Arc::new(ArcSwapOption::empty());
            tokio::spawn(join_cluster(cluster, slot.clone(), health.clone()));
            Connection::Cluster(slot)
        } else {
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_min_delay(RECONNECT_MIN)
                .set_max_delay(RECONNECT_MAX)
                .set_number_of_retries(1);
            let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
            Connection::Single(manager)
        };
        Ok(Redis {
            connection,
            timeout,
            health,
            client: SubscribeTo(client),
        })
    }

    /// Whether Redis answered the last call, and why not.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub(crate) fn subscribe_to(&self) -> &SubscribeTo {
        &self.client
    }

    /// The longest one call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one command (or a script invocation's EVALSHA) within the
    /// deadline, and records whether Redis answered.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, FleetError> {
        let mut connection = self.live()?;
        let answer = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut connection));
        self.settle(answer.await)
    }

    /// Runs a script (EVALSHA, loading it on a cache miss) within the deadline.
    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, FleetError> {
        let mut connection = self.live()?;
        let answer = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection));
        self.settle(answer.await)
    }

    /// Runs a pipeline within the deadline (single node: one round trip).
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, FleetError> {
        let mut connection = self.live()?;
        let answer = tokio::time::timeout(self.timeout, pipe.query_async::<T>(&mut connection));
        self.settle(answer.await)
    }

    fn live(&self) -> Result<Live, FleetError> {
        if !self.health.may_call() {
            return Err(FleetError(
                "unreachable: not asked until the next probe".into(),
            ));
        }
        match &self.connection {
            Connection::Single(manager) => Ok(Live::Single(manager.clone())),
            Connection::Cluster(slot) => match slot.load_full() {
                Some(cluster) => Ok(Live::Cluster((*cluster).clone())),
                None => {
                    let err = FleetError("cluster not reached yet".into());
                    self.health.failed(&err);
                    Err(err)
                }
            },
        }
    }

    fn settle<T>(
        &self,
        answer: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, FleetError> {
        match answer {
            Ok(Ok(value)) => {
                self.health.answered();
                Ok(value)
            }
            Ok(Err(err)) if is_answer(&err) => {
                // Redis answered (a script's own error): it is reachable.
                self.health.answered();
                Err(err.into())
            }
            Ok(Err(err)) => {
                // The connection's own response timeout (set to the same
                // deadline) may fire first.
                let timed_out = err.is_timeout();
                let err = FleetError::from(err);
                match timed_out {
                    true => self.health.timed_out(&err),
                    false => self.health.failed(&err),
                }
                Err(err)
            }
            Err(_) => {
                let err = FleetError(format!("no answer within {} ms", self.timeout.as_millis()));
                self.health.timed_out(&err);
                Err(err)
            }
        }
    }
}

/// An error Redis itself sent back, as opposed to a dead connection.
fn is_answer(err: &redis::RedisError) -> bool {
    !(err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
        || err.is_cluster_error())
}

/// Reads the cluster's topology, retrying with a bounded back-off until it
/// can; the cluster connection then follows slot moves and failovers itself.
async fn join_cluster(
    client: ClusterClient,
    slot: Arc<ArcSwapOption<ClusterConnection>>,
    health: Arc<Health>,
) {
    let mut pause = RECONNECT_MIN;
    loop {
        match client.get_async_connection().await {
            Ok(connection) => {
                slot.store(Some(Arc::new(connection)));
                health.answered();
                return;
            }
            Err(err) => health.failed(&FleetError::from(err)),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

/// One call's connection, either kind.
enum Live {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Live {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Live::Single(c) => c.req_packed_command(cmd),
            Live::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Live::Single(c) => c.req_packed_commands(cmd, offset, count),
            Live::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Live::Single(c) => c.get_db(),
            Live::Cluster(c) => c.get_db(),
        }
    }
}
