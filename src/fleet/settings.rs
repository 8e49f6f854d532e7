//! The `[fleet]` section of the config (validated with the rest of it in
//! `config`).

use std::fmt;

use serde::Deserialize;

/// Fleet mode: replicas sharing identities and limits through Redis.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `redis://` or `rediss://`; empty for single-machine mode.
    pub redis_url: String,
    /// The URL names a node of a Redis Cluster.
    pub cluster: bool,
    /// Replicas sharing the fleet's quotas when Redis cannot be reached.
    pub expected_replicas: u32,
    /// Longest one Redis call may take.
    pub timeout_ms: u64,
    /// PEM CA certificates that sign Redis' certificate (`rediss://`);
    /// empty for the system's roots.
    pub ca_file: String,
}

impl FleetConfig {
    /// True when replicas share state through Redis.
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }
}

/// The URL may carry a password: it is never printed.
impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("redis_url", &if self.enabled() { "<set>" } else { "" })
            .field("cluster", &self.cluster)
            .field("expected_replicas", &self.expected_replicas)
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}
