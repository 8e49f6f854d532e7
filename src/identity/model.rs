//! The plain values the identity store speaks: what was observed about a
//! person, what a stored record holds, and where it was learned.

use serde::{Deserialize, Serialize};

/// Where a mapping was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A successful send that named both a phone and a BSUID.
    Send,
    /// A webhook relayed through sendgate.
    Webhook,
    /// An operator import (CLI or admin API).
    Import,
}

/// What one payload says about one person in one portfolio. Every field but
/// the BSUID is optional: a username user's phone is often withheld.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// The BSUID, exactly as Meta gave it.
    pub bsuid: String,
    pub parent_bsuid: Option<String>,
    /// Digits only, as Meta writes a `wa_id`.
    pub phone: Option<String>,
    /// For display and erasure only; never used to route.
    pub username: Option<String>,
}

/// A change to what is known, as a webhook or a send reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityEvent {
    /// A person was seen with these identifiers.
    Seen(Observation),
    /// A BSUID is dead (`user_changed_number`, `user_changed_user_id`): its
    /// mapping must stop answering. The new identifiers, when the event names
    /// them, arrive as a separate `Seen`.
    Retired { bsuid: String },
}

/// One person as the store keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub portfolio: String,
    pub bsuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_bsuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Unix seconds.
    pub first_seen: u64,
    /// Unix seconds.
    pub last_seen: u64,
    /// What taught the latest change.
    pub source: Source,
}
