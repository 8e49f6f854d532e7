//! The connection every Redis call goes through: a deadline on each call,
//! its outcome told to [`Health`], a connection that comes back by itself.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, TlsCertificates, Value};

use super::error::FleetError;
use super::health::Health;
use super::settings::FleetConfig;

/// Longest pause between two attempts to reach Redis again.
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// First pause after a failed attempt; doubles up to [`RECONNECT_MAX`].
pub(super) const RECONNECT_MIN: Duration = Duration::from_millis(100);

/// A connection to Redis, shared by every task of the process; cloning is
/// cheap (both kinds multiplex one socket per node).
#[derive(Clone)]
pub struct Redis {
    connection: Connection,
    /// Where calls are counted, once metrics exist (`count_calls_in`).
    calls: Arc<OnceLock<Counter>>,
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
pub(crate) struct SubscribeTo(pub(super) redis::Client);

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
            calls: Arc::default(),
            timeout,
            health,
            client: SubscribeTo(client),
        })
    }

    /// Waits (at most the deadline) for the first connection, so that a
    /// replica starting beside a live Redis serves shared state from its
    /// first request; a Redis that is not there leaves it degraded.
    pub(crate) async fn first_contact(&self) {
        let started = tokio::time::Instant::now();
        match &self.connection {
            Connection::Single(_) => {
                let _ = self.ping().await;
            }
            Connection::Cluster(slot) => {
                while slot.load().is_none() && started.elapsed() < self.timeout {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// One round trip, for readiness.
    pub(crate) async fn ping(&self) -> Result<(), FleetError> {
        self.query(&redis::cmd("PING")).await
    }

    /// Whether Redis answered the last call, and why not.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub(crate) fn subscribe_to(&self) -> &SubscribeTo {
        &self.client
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

    /// Counts every call made (not those the health gate skips) in this
    /// metric from now on.
    pub(crate) fn count_calls_in(&self, counter: Counter) {
        let _ = self.calls.set(counter);
    }

    fn live(&self) -> Result<Live, FleetError> {
        if !self.health.may_call() {
            return Err(FleetError(
                "unreachable: not asked until the next probe".into(),
            ));
        }
        if let Some(calls) = self.calls.get() {
            calls.inc();
        }
        match &self.connection {
            Connection::Single(manager) => Ok(Live::Single(manager.clone())),
            Connection::Cluster(slot) => match slot.load_full() {
                Some(cluster) => Ok(Live::Cluster((*cluster).clone())),
                // The join loop records its own failures.
                None => Err(FleetError("cluster not reached yet".into())),
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
                let err = FleetError::from(err);
                self.health.failed(&err);
                Err(err)
            }
            Err(_) => {
                let err = FleetError(format!("no answer within {} ms", self.timeout.as_millis()));
                self.health.failed(&err);
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
