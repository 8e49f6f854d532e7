//! Why a Redis call did not answer.

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
