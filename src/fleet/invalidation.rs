//! Caches that cannot lie: every write to the shared identity store
//! publishes, from inside the same Lua script (so atomically with the
//! write), which cached answers it made stale; every replica subscribes and
//! drops them.
//!
//! Pub/sub rather than Redis' server-assisted client caching (`CLIENT
//! TRACKING`): the cache holds answers derived from several keys (a parent
//! BSUID's phone goes through an index), which key tracking would have to
//! map back to cache entries, and tracking needs RESP3 or a redirect
//! connection per node in a cluster. A message that names the entries is
//! simpler and works the same on one node or a cluster (cluster `PUBLISH`
//! reaches every node).
//!
//! Messages can be missed only while the subscriber is disconnected, so
//! each (re)subscription tells the owner to drop its whole cache; while
//! Redis is away the cache keeps answering, as the fleet's fallback. A lookup that read
//! Redis just before a write caches nothing if an invalidation arrived
//! meanwhile (the version check in `identity`).

use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;

use super::connection::{RECONNECT_MAX, RECONNECT_MIN, SubscribeTo};

/// The channel every identity write publishes on.
pub(crate) const CHANNEL: &str = "sg:invalidate";

/// How often the subscriber checks its connection: a silently dead socket
/// is found within this, and the cache emptied.
const PING_EVERY: Duration = Duration::from_secs(1);

/// What one write made stale in one scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Stale {
    /// The scope key.
    pub(crate) s: String,
    /// BSUIDs (or parent BSUIDs) whose cached phone is stale.
    #[serde(default)]
    pub(crate) r: Vec<String>,
    /// (business number, BSUID) claims that went or changed.
    #[serde(default)]
    pub(crate) c: Vec<(String, String)>,
}

/// What the subscriber tells the cache's owner.
pub(crate) enum Notice {
    Stale(Stale),
    /// Messages may have been missed: forget everything.
    Resubscribed,
}

/// Subscribes on `to`, forever, handing each notice to `deliver`;
/// reconnects with a bounded back-off.
pub(crate) async fn subscribe(to: SubscribeTo, deliver: impl Fn(Notice) + Send + 'static) {
    let mut pause = RECONNECT_MIN;
    loop {
        match listen(&to, &deliver).await {
            Ok(()) => pause = RECONNECT_MIN,
            Err(err) => tracing::debug!(error = %err, "invalidation subscriber disconnected"),
        }
        // The cache stays while Redis is away (lookups answer from it);
        // what was published meanwhile is lost, so the next subscription
        // empties it.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RECONNECT_MAX);
    }
}

async fn listen(to: &SubscribeTo, deliver: &impl Fn(Notice)) -> redis::RedisResult<()> {
    let pubsub = tokio::time::timeout(RECONNECT_MAX, to.0.get_async_pubsub())
        .await
        .map_err(|_| io_timeout())??;
    let (mut sink, mut stream) = pubsub.split();
    sink.subscribe(CHANNEL).await?;
    // Subscribed: anything cached before may have missed a message.
    deliver(Notice::Resubscribed);
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { return Ok(()) };
                match serde_json::from_slice::<Stale>(message.get_payload_bytes()) {
                    Ok(stale) => deliver(Notice::Stale(stale)),
                    Err(err) => tracing::warn!(error = %err, "unreadable invalidation message"),
                }
            }
            _ = ping.tick() => {
                tokio::time::timeout(PING_EVERY, sink.ping::<()>())
                    .await
                    .map_err(|_| io_timeout())??;
            }
        }
    }
}

fn io_timeout() -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer").into()
}
