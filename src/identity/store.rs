//! The durable identity store: an embedded redb file.
//!
//! redb is a pure-Rust, single-file, ACID key-value store: a committed write
//! transaction survives a crash or `kill -9` (copy-on-write B-trees, fsync on
//! commit), it needs nothing installed, and readers never block the writer.
//!
//! Layout: keys put the identifier first and the portfolio second
//! (`id \0 portfolio`), so a lookup in one portfolio is one `get` and "every
//! portfolio this phone appears in" (erasure) is one prefix range.
//!
//! - `records`: `bsuid \0 portfolio` → the [`Record`] as JSON;
//! - `phones`: `phone \0 portfolio` → bsuid;
//! - `parents`: `parent bsuid \0 portfolio` → bsuid;
//! - `retired`: `bsuid \0 portfolio` → when it was retired.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::backends::InMemoryBackend;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::model::{IdentityEvent, Observation, Record, Source};
use crate::send::identifier::{IdClass, classify, phone_digits};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const PHONES: TableDefinition<&str, &str> = TableDefinition::new("phones");
const PARENTS: TableDefinition<&str, &str> = TableDefinition::new("parents");
/// Retired BSUIDs (`bsuid \0 portfolio` → unix seconds), so that a late or
/// retried webhook that still names a dead BSUID cannot bring it back and
/// take its old phone from the person's new BSUID.
const RETIRED: TableDefinition<&str, u64> = TableDefinition::new("retired");

/// The two secondary indexes, and the record field each one mirrors.
#[derive(Clone, Copy)]
enum Index {
    Phones,
    Parents,
}

impl Index {
    fn table(self) -> TableDefinition<'static, &'static str, &'static str> {
        match self {
            Index::Phones => PHONES,
            Index::Parents => PARENTS,
        }
    }

    fn field(self, record: &mut Record) -> &mut Option<String> {
        match self {
            Index::Phones => &mut record.phone,
            Index::Parents => &mut record.parent_bsuid,
        }
    }
}

/// Separates the identifier from the portfolio in a key; appears in neither.
const SEP: char = '\0';

/// A failure of the store itself (disk, corruption), never of the input.
#[derive(Debug)]
pub struct StoreError(String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "identity store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

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
    /// (portfolio, BSUID) of other people whose phone or parent this write
    /// took away (a recycled number): caches must forget them too.
    pub touched: Vec<(String, String)>,
}

/// The embedded store.
pub struct RedbStore {
    db: Database,
}

fn key(id: &str, portfolio: &str) -> String {
    let mut key = String::with_capacity(id.len() + 1 + portfolio.len());
    key.push_str(id);
    key.push(SEP);
    key.push_str(portfolio);
    key
}

/// The `[start, end)` range of keys for one identifier in every portfolio.
fn id_range(id: &str) -> (String, String) {
    (format!("{id}{SEP}"), format!("{id}\u{1}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl RedbStore {
    /// Opens (creating on first use) the store file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|err| StoreError(format!("{}: {err}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|err| match err {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError(format!(
                "{} is in use by another sendgate process (stop it, or use the admin API)",
                path.display()
            )),
            other => StoreError(format!("{}: {other}", path.display())),
        })?;
        Self::init(db)
    }

    /// A store that lives in memory only (nothing survives a restart).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Database::builder().create_with_backend(InMemoryBackend::new())?)
    }

    fn init(db: Database) -> Result<Self, StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(PHONES)?;
        txn.open_table(PARENTS)?;
        txn.open_table(RETIRED)?;
        txn.commit()?;
        Ok(RedbStore { db })
    }

    /// Applies events of one source in one durable transaction: when this
    /// returns `Ok`, they survive a crash.
    pub fn apply<'a>(
        &self,
        events: impl IntoIterator<Item = (&'a str, &'a IdentityEvent)>,
        source: Source,
    ) -> Result<Applied, StoreError> {
        let at = now();
        let txn = self.db.begin_write()?;
        let mut applied = Applied::default();
        for (portfolio, event) in events {
            match event {
                IdentityEvent::Seen(observation) => {
                    match upsert(
                        &txn,
                        portfolio,
                        observation,
                        source,
                        at,
                        &mut applied.touched,
                    )? {
                        Upsert::Inserted => applied.inserted += 1,
                        Upsert::Updated => applied.updated += 1,
                        Upsert::Unchanged => applied.unchanged += 1,
                    }
                }
                IdentityEvent::Retired { bsuid } => {
                    let record_key = key(bsuid, portfolio);
                    txn.open_table(RETIRED)?.insert(record_key.as_str(), at)?;
                    if remove_record(&txn, &record_key)?.is_some() {
                        applied.retired += 1;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(applied)
    }

    /// The record of a BSUID in a portfolio.
    pub fn by_bsuid(&self, portfolio: &str, bsuid: &str) -> Result<Option<Record>, StoreError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let found = records.get(key(bsuid, portfolio).as_str())?;
        Ok(found.and_then(|guard| decode(guard.value())))
    }

    /// The record of a phone (any spelling) in a portfolio.
    pub fn by_phone(&self, portfolio: &str, phone: &str) -> Result<Option<Record>, StoreError> {
        self.by_index(PHONES, portfolio, &phone_digits(phone))
    }

    /// The record of a parent BSUID in a portfolio.
    pub fn by_parent(&self, portfolio: &str, parent: &str) -> Result<Option<Record>, StoreError> {
        self.by_index(PARENTS, portfolio, parent)
    }

    fn by_index(
        &self,
        index: TableDefinition<&str, &str>,
        portfolio: &str,
        id: &str,
    ) -> Result<Option<Record>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(bsuid) = txn.open_table(index)?.get(key(id, portfolio).as_str())? else {
            return Ok(None);
        };
        let records = txn.open_table(RECORDS)?;
        let found = records.get(key(bsuid.value(), portfolio).as_str())?;
        Ok(found.and_then(|guard| decode(guard.value())))
    }

    /// Every record an identifier (phone, BSUID or parent BSUID) names, in
    /// one portfolio or in all of them.
    pub fn find(&self, id: &str, portfolio: Option<&str>) -> Result<Vec<Record>, StoreError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let keys = match classify(id) {
            IdClass::Bsuid => record_keys_for_bsuid(&records, id, portfolio)?,
            IdClass::ParentBsuid => indexed_record_keys(&txn.open_table(PARENTS)?, id, portfolio)?,
            IdClass::Phone => {
                indexed_record_keys(&txn.open_table(PHONES)?, &phone_digits(id), portfolio)?
            }
            IdClass::Username | IdClass::Invalid => Vec::new(),
        };
        let mut found = Vec::with_capacity(keys.len());
        for record_key in keys {
            if let Some(record) = records
                .get(record_key.as_str())?
                .and_then(|g| decode(g.value()))
            {
                found.push(record);
            }
        }
        Ok(found)
    }

    /// Removes every record an identifier names (in one portfolio or all)
    /// with all of its index entries, durably. Returns what was removed.
    pub fn erase(&self, id: &str, portfolio: Option<&str>) -> Result<Vec<Record>, StoreError> {
        let doomed = self.find(id, portfolio)?;
        let txn = self.db.begin_write()?;
        let mut removed = Vec::with_capacity(doomed.len());
        for record in doomed {
            if let Some(record) = remove_record(&txn, &key(&record.bsuid, &record.portfolio))? {
                removed.push(record);
            }
        }
        // A retired BSUID is personal data too.
        if classify(id).is_bsuid() {
            let mut retired = txn.open_table(RETIRED)?;
            let keys = record_keys_for_bsuid(&retired, id, portfolio)?;
            for retired_key in keys {
                retired.remove(retired_key.as_str())?;
            }
        }
        txn.commit()?;
        Ok(removed)
    }

    /// How many people the store knows.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(RECORDS)?.len()?)
    }

    /// True when the store knows nobody.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

fn decode(bytes: &[u8]) -> Option<Record> {
    serde_json::from_slice(bytes).ok()
}

fn encode(record: &Record) -> Vec<u8> {
    serde_json::to_vec(record).expect("a record always serialises")
}

fn record_keys_for_bsuid<V: redb::Value + 'static>(
    records: &impl ReadableTable<&'static str, V>,
    bsuid: &str,
    portfolio: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    if let Some(portfolio) = portfolio {
        return Ok(vec![key(bsuid, portfolio)]);
    }
    let (start, end) = id_range(bsuid);
    let mut keys = Vec::new();
    for entry in records.range(start.as_str()..end.as_str())? {
        keys.push(entry?.0.value().to_owned());
    }
    Ok(keys)
}

fn indexed_record_keys(
    index: &impl ReadableTable<&'static str, &'static str>,
    id: &str,
    portfolio: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    if let Some(portfolio) = portfolio {
        if let Some(bsuid) = index.get(key(id, portfolio).as_str())? {
            keys.push(key(bsuid.value(), portfolio));
        }
        return Ok(keys);
    }
    let (start, end) = id_range(id);
    for entry in index.range(start.as_str()..end.as_str())? {
        let (index_key, bsuid) = entry?;
        let portfolio = index_key.value().split_once(SEP).map_or("", |(_, p)| p);
        keys.push(key(bsuid.value(), portfolio));
    }
    Ok(keys)
}

enum Upsert {
    Inserted,
    Updated,
    Unchanged,
}

/// Merges one observation into the person's record and keeps the indexes
/// true: one phone and one parent belong to one BSUID per portfolio.
fn upsert(
    txn: &WriteTransaction,
    portfolio: &str,
    seen: &Observation,
    source: Source,
    at: u64,
    touched: &mut Vec<(String, String)>,
) -> Result<Upsert, StoreError> {
    let record_key = key(&seen.bsuid, portfolio);
    if txn.open_table(RETIRED)?.get(record_key.as_str())?.is_some() {
        return Ok(Upsert::Unchanged);
    }
    let existing = {
        let records = txn.open_table(RECORDS)?;
        let found = records.get(record_key.as_str())?;
        found.and_then(|guard| decode(guard.value()))
    };
    let mut record = existing.clone().unwrap_or_else(|| Record {
        portfolio: portfolio.to_owned(),
        bsuid: seen.bsuid.clone(),
        parent_bsuid: None,
        phone: None,
        username: None,
        first_seen: at,
        last_seen: at,
        source,
    });
    let old_phone = record.phone.clone();
    let old_parent = record.parent_bsuid.clone();
    record.phone = seen.phone.clone().or(record.phone);
    record.parent_bsuid = seen.parent_bsuid.clone().or(record.parent_bsuid);
    record.username = seen.username.clone().or(record.username);
    record.last_seen = at;

    let changed = match &existing {
        None => true,
        Some(before) => {
            before.phone != record.phone
                || before.parent_bsuid != record.parent_bsuid
                || before.username != record.username
        }
    };
    if changed {
        record.source = source;
    }
    let bsuid = seen.bsuid.as_str();
    let phone = record.phone.as_deref();
    touched.extend(reindex(
        txn,
        Index::Phones,
        portfolio,
        bsuid,
        old_phone.as_deref(),
        phone,
    )?);
    let parent = record.parent_bsuid.as_deref();
    touched.extend(reindex(
        txn,
        Index::Parents,
        portfolio,
        bsuid,
        old_parent.as_deref(),
        parent,
    )?);
    txn.open_table(RECORDS)?
        .insert(record_key.as_str(), encode(&record).as_slice())?;
    Ok(match (existing, changed) {
        (None, _) => Upsert::Inserted,
        (Some(_), true) => Upsert::Updated,
        (Some(_), false) => Upsert::Unchanged,
    })
}

/// Points `index[new]` at `bsuid`, drops `index[old]` if it pointed here, and
/// takes `new` away from another person who held it (a recycled number),
/// returning that person.
fn reindex(
    txn: &WriteTransaction,
    index: Index,
    portfolio: &str,
    bsuid: &str,
    old: Option<&str>,
    new: Option<&str>,
) -> Result<Option<(String, String)>, StoreError> {
    if old == new {
        return Ok(None);
    }
    let mut table = txn.open_table(index.table())?;
    if let Some(old) = old {
        let old_key = key(old, portfolio);
        let points_here = table
            .get(old_key.as_str())?
            .is_some_and(|b| b.value() == bsuid);
        if points_here {
            table.remove(old_key.as_str())?;
        }
    }
    let Some(new) = new else { return Ok(None) };
    let previous = table
        .insert(key(new, portfolio).as_str(), bsuid)?
        .map(|b| b.value().to_owned())
        .filter(|holder| holder != bsuid);
    drop(table);
    let Some(holder) = previous else {
        return Ok(None);
    };
    let holder_key = key(&holder, portfolio);
    let mut records = txn.open_table(RECORDS)?;
    let stale = records
        .get(holder_key.as_str())?
        .and_then(|g| decode(g.value()));
    if let Some(mut stale) = stale {
        *index.field(&mut stale) = None;
        records.insert(holder_key.as_str(), encode(&stale).as_slice())?;
    }
    Ok(Some((portfolio.to_owned(), holder)))
}

/// Deletes a record and the index entries that point at it.
fn remove_record(txn: &WriteTransaction, record_key: &str) -> Result<Option<Record>, StoreError> {
    let removed = txn
        .open_table(RECORDS)?
        .remove(record_key)?
        .and_then(|g| decode(g.value()));
    if let Some(record) = &removed {
        for (index, id) in [(PHONES, &record.phone), (PARENTS, &record.parent_bsuid)] {
            if let Some(id) = id {
                let mut table = txn.open_table(index)?;
                let index_key = key(id, &record.portfolio);
                let points_here = table
                    .get(index_key.as_str())?
                    .is_some_and(|b| b.value() == record.bsuid);
                if points_here {
                    table.remove(index_key.as_str())?;
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BSUID: &str = "US.13491208655302741918";
    const PARENT: &str = "US.ENT.11815799212886844830";
    const PHONE: &str = "16315551234";

    fn seen(bsuid: &str, phone: Option<&str>) -> IdentityEvent {
        IdentityEvent::Seen(Observation {
            bsuid: bsuid.into(),
            phone: phone.map(Into::into),
            ..Observation::default()
        })
    }

    fn apply(store: &RedbStore, portfolio: &str, events: &[IdentityEvent]) -> Applied {
        store
            .apply(events.iter().map(|e| (portfolio, e)), Source::Webhook)
            .unwrap()
    }

    /// Every key of every table, to prove erasure leaves nothing behind.
    fn all_keys(store: &RedbStore) -> Vec<String> {
        let txn = store.db.begin_read().unwrap();
        let mut keys = Vec::new();
        for entry in txn.open_table(RECORDS).unwrap().iter().unwrap() {
            keys.push(format!("records:{}", entry.unwrap().0.value()));
        }
        for table in [PHONES, PARENTS] {
            for entry in txn.open_table(table).unwrap().iter().unwrap() {
                keys.push(format!("index:{}", entry.unwrap().0.value()));
            }
        }
        for entry in txn.open_table(RETIRED).unwrap().iter().unwrap() {
            keys.push(format!("retired:{}", entry.unwrap().0.value()));
        }
        keys
    }

    #[test]
    fn round_trip_merges_what_each_observation_adds() {
        let store = RedbStore::in_memory().unwrap();
        let username_only = IdentityEvent::Seen(Observation {
            bsuid: BSUID.into(),
            username: Some("pablo.m".into()),
            parent_bsuid: Some(PARENT.into()),
            ..Observation::default()
        });
        let applied = apply(&store, "a", &[username_only, seen(BSUID, Some(PHONE))]);
        assert_eq!((applied.inserted, applied.updated), (1, 1));
        let record = store.by_bsuid("a", BSUID).unwrap().unwrap();
        assert_eq!(record.phone.as_deref(), Some(PHONE));
        assert_eq!(
            record.username.as_deref(),
            Some("pablo.m"),
            "kept from the first sighting"
        );
        assert_eq!(record.parent_bsuid.as_deref(), Some(PARENT));
        assert_eq!(
            store
                .by_phone("a", "+1 (631) 555-1234")
                .unwrap()
                .unwrap()
                .bsuid,
            BSUID
        );
        assert_eq!(store.by_parent("a", PARENT).unwrap().unwrap().bsuid, BSUID);
        assert_eq!(apply(&store, "a", &[seen(BSUID, Some(PHONE))]).unchanged, 1);
        assert_eq!(store.len().unwrap(), 1);
    }

    #[test]
    fn portfolios_never_answer_for_each_other() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        assert!(store.by_bsuid("b", BSUID).unwrap().is_none());
        assert!(store.by_phone("b", PHONE).unwrap().is_none());
        assert_eq!(store.find(PHONE, Some("b")).unwrap(), vec![]);
        assert_eq!(store.find(PHONE, None).unwrap().len(), 1);
    }

    #[test]
    fn erase_removes_every_trace_in_every_portfolio() {
        let store = RedbStore::in_memory().unwrap();
        let full = IdentityEvent::Seen(Observation {
            bsuid: BSUID.into(),
            parent_bsuid: Some(PARENT.into()),
            phone: Some(PHONE.into()),
            username: Some("pablo.m".into()),
        });
        apply(&store, "a", &[full]);
        apply(&store, "b", &[seen("US.777", Some(PHONE))]);
        apply(&store, "a", &[seen("US.999", Some("16505550000"))]);
        let removed = store.erase("+1 631 555 1234", None).unwrap();
        assert_eq!(removed.len(), 2, "both portfolios: {removed:?}");
        assert_eq!(
            all_keys(&store),
            vec!["records:US.999\0a", "index:16505550000\0a"]
        );
        assert!(store.erase(PHONE, None).unwrap().is_empty(), "idempotent");
    }

    #[test]
    fn erase_by_bsuid_in_one_portfolio() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        apply(&store, "b", &[seen(BSUID, Some(PHONE))]);
        assert_eq!(store.erase(BSUID, Some("a")).unwrap().len(), 1);
        assert!(store.by_phone("a", PHONE).unwrap().is_none());
        assert!(store.by_phone("b", PHONE).unwrap().is_some());
    }

    #[test]
    fn retiring_a_bsuid_frees_its_phone_for_the_new_one() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        let applied = apply(
            &store,
            "a",
            &[
                IdentityEvent::Retired {
                    bsuid: BSUID.into(),
                },
                seen("US.42", Some(PHONE)),
            ],
        );
        assert_eq!((applied.retired, applied.inserted), (1, 1));
        assert!(store.by_bsuid("a", BSUID).unwrap().is_none());
        assert_eq!(store.by_phone("a", PHONE).unwrap().unwrap().bsuid, "US.42");
    }

    #[test]
    fn a_late_webhook_cannot_bring_a_retired_bsuid_back() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        apply(
            &store,
            "a",
            &[
                IdentityEvent::Retired {
                    bsuid: BSUID.into(),
                },
                seen("US.42", Some(PHONE)),
            ],
        );
        let late = apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        assert_eq!(late.unchanged, 1);
        assert!(store.by_bsuid("a", BSUID).unwrap().is_none());
        assert_eq!(store.by_phone("a", PHONE).unwrap().unwrap().bsuid, "US.42");
        store.erase(BSUID, None).unwrap();
        assert!(!all_keys(&store).iter().any(|k| k.contains(BSUID)));
    }

    #[test]
    fn a_recycled_phone_leaves_its_previous_holder() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        let applied = apply(&store, "a", &[seen("US.42", Some(PHONE))]);
        assert_eq!(applied.touched, vec![("a".to_owned(), BSUID.to_owned())]);
        assert_eq!(store.by_bsuid("a", BSUID).unwrap().unwrap().phone, None);
        assert_eq!(store.by_phone("a", PHONE).unwrap().unwrap().bsuid, "US.42");
    }

    #[test]
    fn a_new_phone_for_a_bsuid_drops_the_old_index_entry() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        apply(&store, "a", &[seen(BSUID, Some("16505550000"))]);
        assert!(store.by_phone("a", PHONE).unwrap().is_none());
        assert_eq!(
            store.by_phone("a", "16505550000").unwrap().unwrap().bsuid,
            BSUID
        );
    }

    #[test]
    fn what_is_committed_survives_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("sendgate-store-{}", std::process::id()));
        let path = dir.join("nested").join("identities.redb");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = RedbStore::open(&path).unwrap();
            apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
            assert!(RedbStore::open(&path).is_err(), "one process at a time");
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(
            store
                .by_bsuid("a", BSUID)
                .unwrap()
                .unwrap()
                .phone
                .as_deref(),
            Some(PHONE)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
