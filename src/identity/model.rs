//! The plain values the identity store speaks: what was observed about a
//! person, what a stored record holds, where it was learned, and the
//! unattested pairs that sends claim.

use serde::{Deserialize, Serialize};

/// Where a mapping was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A successful send that named both a phone and a BSUID. Meta delivers
    /// to `to` and ignores `recipient` when both are present, so a send
    /// proves nothing about the pair: what it teaches is a [`Claim`], never
    /// a record's phone (records written by sendgate before it knew this
    /// are turned into claims when the store is opened).
    Send,
    /// A signed webhook relayed through sendgate: Meta attested it.
    Webhook,
    /// An operator import from the command line.
    Import,
    /// An operator write through the admin API.
    Admin,
}

impl Source {
    /// The metric and log label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Send => "send",
            Source::Webhook => "webhook",
            Source::Import => "import",
            Source::Admin => "admin",
        }
    }
}

/// What one payload says about one person in one scope. Every field but
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

/// A change to what is known, as a webhook or an operator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityEvent {
    /// A person was seen with these identifiers.
    Seen(Observation),
    /// A BSUID is dead (`user_changed_number`, `user_changed_user_id`): its
    /// mapping must stop answering. The new identifiers, when the event names
    /// them, arrive as a separate `Seen`.
    Retired { bsuid: String },
}

/// One person as the store keeps them. Everything in a record came from a
/// trusted source (a signed webhook or an operator), so its phone may
/// answer for every business number of its scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The portfolio the business number belongs to, or the number itself
    /// (`number:<id>`) when config puts it in none. Stores written before
    /// scopes existed call it `portfolio`.
    #[serde(alias = "portfolio")]
    pub scope: String,
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
    /// When a signed webhook last named this BSUID with the record's phone
    /// (unix seconds); `None` when Meta never did (an operator's pair).
    #[serde(default)]
    pub attested_at: Option<u64>,
}

/// A pair a successful send named, kept apart from the records: it answers
/// only for the business number that sent it (and only while
/// `identity.learn_from_sends` is on), until a webhook attests or
/// contradicts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub scope: String,
    /// The business phone number id that sent it; empty for a pair learned
    /// before sendgate recorded the sender, which answers for no number.
    pub number: String,
    pub bsuid: String,
    /// Digits only.
    pub phone: String,
    /// Unix seconds.
    pub first_seen: u64,
    /// Unix seconds.
    pub last_seen: u64,
    /// Always [`Source::Send`]; shown so that an operator reading a lookup
    /// sees where each answer came from.
    pub source: Source,
}

/// A claim by its key: which business number's view of which BSUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimKey {
    pub scope: String,
    pub number: String,
    pub bsuid: String,
}

impl Claim {
    pub fn key(&self) -> ClaimKey {
        ClaimKey {
            scope: self.scope.clone(),
            number: self.number.clone(),
            bsuid: self.bsuid.clone(),
        }
    }
}
