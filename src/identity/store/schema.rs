//! The store file's layout: its tables and how their keys are made, the
//! values they hold, the errors and the reports of the store's operations.
//! See the parent module for what each table maps.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, TableDefinition};

use super::super::model::{Claim, ClaimKey, Record};

pub(super) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
pub(super) const PHONES: TableDefinition<&str, &str> = TableDefinition::new("phones");
pub(super) const PARENTS: TableDefinition<&str, &str> = TableDefinition::new("parents");
/// Retired BSUIDs (`bsuid \0 scope` → unix seconds), so that a late or
/// retried webhook that still names a dead BSUID cannot bring it back and
/// take its old phone from the person's new BSUID.
pub(super) const RETIRED: TableDefinition<&str, u64> = TableDefinition::new("retired");
pub(super) const CLAIMS: TableDefinition<&str, &[u8]> = TableDefinition::new("claims");
pub(super) const CLAIM_PHONES: TableDefinition<&str, &str> = TableDefinition::new("claim_phones");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The layout this code writes. Version 1 (no `meta` table) kept pairs
/// learned from sends in the records and called scopes portfolios.
pub(super) const SCHEMA: u64 = 2;
/// `meta` keys.
pub(super) const SCHEMA_KEY: &str = "schema";
pub(super) const LEGACY_DEFAULT_KEY: &str = "legacy_default_records";

/// Where numbers without a configured portfolio shared identities before
/// scopes existed (schema 1).
pub const LEGACY_DEFAULT_SCOPE: &str = "default";

/// The two secondary indexes, and the record field each one mirrors.
#[derive(Clone, Copy)]
pub(super) enum Index {
    Phones,
    Parents,
}

impl Index {
    pub(super) fn table(self) -> TableDefinition<'static, &'static str, &'static str> {
        match self {
            Index::Phones => PHONES,
            Index::Parents => PARENTS,
        }
    }

    pub(super) fn field(self, record: &mut Record) -> &mut Option<String> {
        match self {
            Index::Phones => &mut record.phone,
            Index::Parents => &mut record.parent_bsuid,
        }
    }
}

/// Separates the parts of a key; appears in none of them (identifiers are
/// validated, scope names too).
pub(super) const SEP: char = '\0';

/// A failure of the store itself (disk, corruption), never of the input.
#[derive(Debug)]
pub struct StoreError(pub(super) String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "identity store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    pub(crate) fn new(why: impl Into<String>) -> Self {
        StoreError(why.into())
    }
}

impl From<crate::fleet::FleetError> for StoreError {
    fn from(err: crate::fleet::FleetError) -> Self {
        StoreError(err.to_string())
    }
}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(err: $error) -> Self {
                StoreError(err.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What applying events changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// People seen for the first time.
    pub inserted: u64,
    /// Known people whose record changed.
    pub updated: u64,
    /// Observations that told nothing new (only `last_seen` moved), or that
    /// named a retired BSUID.
    pub unchanged: u64,
    /// BSUIDs retired.
    pub retired: u64,
    /// (scope, BSUID) of other people whose phone or parent this write
    /// took away (a recycled number): caches must forget them too.
    pub touched: Vec<(String, String)>,
    /// Claims this write attested or contradicted, and so dropped.
    pub claims_dropped: Vec<ClaimKey>,
}

/// What became of a pair a send claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Kept for the sending number; `displaced` is a BSUID this number had
    /// claimed the same phone for before.
    Kept { displaced: Option<String> },
    /// Not kept: a trusted record already says what this BSUID's phone is,
    /// or whose this phone is, or the BSUID is retired. Trusted wins.
    Overruled,
}

/// What opening a store written by an older sendgate found and changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migration {
    /// Records whose phone a send had taught: the pair became a claim of no
    /// number (kept, shown by lookups, answering for nobody).
    pub send_pairs_to_claims: u64,
    /// Records under the shared scope `default`, which numbers without a
    /// portfolio used; counted once, when the store was migrated.
    pub legacy_default_records: u64,
}

/// What erasing a person removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    pub records: Vec<Record>,
    pub claims: Vec<Claim>,
}

/// Everything an embedded store holds (`migrate-store`).
#[derive(Debug, Clone, Default)]
pub struct Export {
    pub records: Vec<Record>,
    /// Retired BSUIDs as (scope, BSUID).
    pub retired: Vec<(String, String)>,
    pub claims: Vec<Claim>,
    /// Entries that could not be decoded (counted, never dropped silently).
    pub unreadable: u64,
}

/// What moving one scope's identities into another did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Moved {
    /// Records now in the target scope that were not there.
    pub records: u64,
    /// Records merged into one the target already had for the BSUID.
    pub merged: u64,
    /// Phones or parents left behind because the target scope already
    /// gives them to another BSUID (the target's knowledge wins).
    pub conflicts: u64,
    pub retired: u64,
    pub claims: u64,
}

pub(super) fn key(id: &str, scope: &str) -> String {
    let mut key = String::with_capacity(id.len() + 1 + scope.len());
    key.push_str(id);
    key.push(SEP);
    key.push_str(scope);
    key
}

pub(super) fn claim_key(id: &str, scope: &str, number: &str) -> String {
    let mut key = key(id, scope);
    key.push(SEP);
    key.push_str(number);
    key
}

/// The `[start, end)` range of keys that begin with `parts`, each followed
/// by the separator.
pub(super) fn prefix_range(parts: &[&str]) -> (String, String) {
    let joined = parts.join("\0");
    (format!("{joined}{SEP}"), format!("{joined}\u{1}"))
}

/// The parts of a key.
pub(super) fn split_key(key: &str) -> Vec<&str> {
    key.split(SEP).collect()
}

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

pub(super) fn encode(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("a record always serialises")
}

/// The keys of an identifier in one scope (at most one) or in every scope.
pub(super) fn keys_of<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    id: &str,
    scope: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let Some(scope) = scope else {
        return keys_with_range(table, &[id]);
    };
    let exact = key(id, scope);
    Ok(match table.get(exact.as_str())? {
        Some(_) => vec![exact],
        None => Vec::new(),
    })
}

/// Every key of a table that `keep` accepts: a full scan, for the rare
/// operator commands that work on a whole scope.
pub(super) fn matching_keys<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    for entry in table.iter()? {
        let entry = entry?;
        let key = entry.0.value();
        if keep(key) {
            keys.push(key.to_owned());
        }
    }
    Ok(keys)
}

/// Keys that begin with `prefix`'s parts.
pub(super) fn keys_with_range<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    prefix: &[&str],
) -> Result<Vec<String>, StoreError> {
    let (start, end) = prefix_range(prefix);
    let mut keys = Vec::new();
    for entry in table.range(start.as_str()..end.as_str())? {
        keys.push(entry?.0.value().to_owned());
    }
    Ok(keys)
}
