//! The durable identity store: an embedded redb file.
//!
//! redb is a pure-Rust, single-file, ACID key-value store: a committed write
//! transaction survives a crash or `kill -9` (copy-on-write B-trees, fsync on
//! commit), it needs nothing installed, and readers never block the writer.
//!
//! Layout: keys put the identifier first and the scope second
//! (`id \0 scope`), so a lookup in one scope is one `get` and "every scope
//! this phone appears in" (erasure) is one prefix range.
//!
//! - `records`: `bsuid \0 scope` → the [`Record`] as JSON (trusted pairs);
//! - `phones`: `phone \0 scope` → bsuid;
//! - `parents`: `parent bsuid \0 scope` → bsuid;
//! - `retired`: `bsuid \0 scope` → when it was retired;
//! - `claims`: `bsuid \0 scope \0 number` → the [`Claim`] a send made;
//! - `claim_phones`: `phone \0 scope \0 number` → bsuid;
//! - `meta`: the schema version and what opening an older store found.
//!
//! Records hold only what a trusted source taught (a signed webhook, an
//! operator). What a send claims is kept apart, per business number, and
//! never changes a record or an index: a trusted pair that names the same
//! BSUID or phone drops the claim (README, "Who is trusted").
//!
//! Here the store's operations, each one transaction; `schema` holds the
//! tables, keys and reports, `write` the steps a write transaction takes.

use std::path::Path;

use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::model::{Claim, IdentityEvent, Record, Source};
use crate::identifier::{IdClass, classify, phone_digits};

mod schema;
mod write;

// The tables and key helpers are used throughout, as the module's own.
use schema::*;
pub use schema::{
    Applied, Claimed, Erased, Export, LEGACY_DEFAULT_SCOPE, Migration, Moved, StoreError,
};
use write::*;

/// The embedded store.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (creating on first use) the store file, migrating one that an
    /// older sendgate wrote.
    pub fn open(path: &Path) -> Result<(Self, Migration), StoreError> {
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
        let db = Database::builder().create_with_backend(InMemoryBackend::new())?;
        Ok(Self::init(db)?.0)
    }

    fn init(db: Database) -> Result<(Self, Migration), StoreError> {
        let txn = db.begin_write()?;
        txn.open_table(RECORDS)?;
        txn.open_table(PHONES)?;
        txn.open_table(PARENTS)?;
        txn.open_table(RETIRED)?;
        txn.open_table(CLAIMS)?;
        txn.open_table(CLAIM_PHONES)?;
        let schema = txn.open_table(META)?.get(SCHEMA_KEY)?.map(|v| v.value());
        let migration = match schema {
            Some(SCHEMA) => Migration {
                legacy_default_records: txn
                    .open_table(META)?
                    .get(LEGACY_DEFAULT_KEY)?
                    .map_or(0, |v| v.value()),
                ..Migration::default()
            },
            Some(newer) if newer > SCHEMA => {
                return Err(StoreError(format!(
                    "written by a newer sendgate (schema {newer}; this one reads up to {SCHEMA})"
                )));
            }
            _ => migrate_from_v1(&txn)?,
        };
        let mut meta = txn.open_table(META)?;
        meta.insert(SCHEMA_KEY, SCHEMA)?;
        meta.insert(LEGACY_DEFAULT_KEY, migration.legacy_default_records)?;
        drop(meta);
        txn.commit()?;
        Ok((RedbStore { db }, migration))
    }

    /// Applies events of one trusted source in one durable transaction:
    /// when this returns `Ok`, they survive a crash. A send is no trusted
    /// source: what it teaches goes through [`claim`](Self::claim).
    pub fn apply<'a>(
        &self,
        events: impl IntoIterator<Item = (&'a str, &'a IdentityEvent)>,
        source: Source,
    ) -> Result<Applied, StoreError> {
        if source == Source::Send {
            return Err(StoreError("a send cannot write a record".into()));
        }
        let at = now();
        let txn = self.db.begin_write()?;
        let mut applied = Applied::default();
        for (scope, event) in events {
            match event {
                IdentityEvent::Seen(observation) => {
                    let done = upsert(&txn, scope, observation, source, at, &mut applied)?;
                    match done {
                        Upsert::Inserted => applied.inserted += 1,
                        Upsert::Updated => applied.updated += 1,
                        Upsert::Unchanged => applied.unchanged += 1,
                    }
                }
                IdentityEvent::Retired { bsuid } => {
                    let record_key = key(bsuid, scope);
                    txn.open_table(RETIRED)?.insert(record_key.as_str(), at)?;
                    if remove_record(&txn, &record_key)?.is_some() {
                        applied.retired += 1;
                    }
                    let dropped = drop_claims_of_bsuid(&txn, bsuid, Some(scope))?;
                    applied
                        .claims_dropped
                        .extend(dropped.iter().map(Claim::key));
                }
            }
        }
        txn.commit()?;
        Ok(applied)
    }

    /// Keeps the pair a successful send from `number` named, for that
    /// number alone, unless trusted knowledge already says otherwise.
    pub fn claim(
        &self,
        scope: &str,
        number: &str,
        bsuid: &str,
        phone: &str,
    ) -> Result<Claimed, StoreError> {
        let at = now();
        let txn = self.db.begin_write()?;
        let record_key = key(bsuid, scope);
        let retired = txn.open_table(RETIRED)?.get(record_key.as_str())?.is_some();
        let known_phone = txn
            .open_table(RECORDS)?
            .get(record_key.as_str())?
            .and_then(|g| decode::<Record>(g.value()))
            .is_some_and(|record| record.phone.is_some());
        let phone_taken = txn
            .open_table(PHONES)?
            .get(key(phone, scope).as_str())?
            .is_some();
        if retired || known_phone || phone_taken {
            return Ok(Claimed::Overruled);
        }
        let this_key = claim_key(bsuid, scope, number);
        let mut claims = txn.open_table(CLAIMS)?;
        let old = claims
            .get(this_key.as_str())?
            .and_then(|g| decode::<Claim>(g.value()));
        let claim = Claim {
            scope: scope.to_owned(),
            number: number.to_owned(),
            bsuid: bsuid.to_owned(),
            phone: phone.to_owned(),
            first_seen: old.as_ref().map_or(at, |old| old.first_seen),
            last_seen: at,
            source: Source::Send,
        };
        claims.insert(this_key.as_str(), encode(&claim).as_slice())?;
        drop(claims);
        let mut claim_phones = txn.open_table(CLAIM_PHONES)?;
        if let Some(old) = old.filter(|old| old.phone != phone) {
            let old_key = claim_key(&old.phone, scope, number);
            if claim_phones
                .get(old_key.as_str())?
                .is_some_and(|b| b.value() == bsuid)
            {
                claim_phones.remove(old_key.as_str())?;
            }
        }
        let displaced = claim_phones
            .insert(claim_key(phone, scope, number).as_str(), bsuid)?
            .map(|b| b.value().to_owned())
            .filter(|holder| holder != bsuid);
        drop(claim_phones);
        if let Some(holder) = &displaced {
            txn.open_table(CLAIMS)?
                .remove(claim_key(holder, scope, number).as_str())?;
        }
        txn.commit()?;
        Ok(Claimed::Kept { displaced })
    }

    /// The phone a send from `number` claimed for a BSUID, if it still stands.
    pub fn claimed_phone(
        &self,
        scope: &str,
        number: &str,
        bsuid: &str,
    ) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let claims = txn.open_table(CLAIMS)?;
        let found = claims.get(claim_key(bsuid, scope, number).as_str())?;
        Ok(found
            .and_then(|g| decode::<Claim>(g.value()))
            .map(|claim| claim.phone))
    }

    /// The record of a BSUID in a scope.
    pub fn by_bsuid(&self, scope: &str, bsuid: &str) -> Result<Option<Record>, StoreError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let found = records.get(key(bsuid, scope).as_str())?;
        Ok(found.and_then(|guard| decode(guard.value())))
    }

    /// The record of a phone (any spelling) in a scope.
    pub fn by_phone(&self, scope: &str, phone: &str) -> Result<Option<Record>, StoreError> {
        self.by_index(PHONES, scope, &phone_digits(phone))
    }

    /// The record of a parent BSUID in a scope.
    pub fn by_parent(&self, scope: &str, parent: &str) -> Result<Option<Record>, StoreError> {
        self.by_index(PARENTS, scope, parent)
    }

    fn by_index(
        &self,
        index: TableDefinition<&str, &str>,
        scope: &str,
        id: &str,
    ) -> Result<Option<Record>, StoreError> {
        let txn = self.db.begin_read()?;
        let Some(bsuid) = txn.open_table(index)?.get(key(id, scope).as_str())? else {
            return Ok(None);
        };
        let records = txn.open_table(RECORDS)?;
        let found = records.get(key(bsuid.value(), scope).as_str())?;
        Ok(found.and_then(|guard| decode(guard.value())))
    }

    /// Every record an identifier (phone, BSUID or parent BSUID) names, in
    /// one scope or in all of them.
    pub fn find(&self, id: &str, scope: Option<&str>) -> Result<Vec<Record>, StoreError> {
        let txn = self.db.begin_read()?;
        let records = txn.open_table(RECORDS)?;
        let keys = match classify(id) {
            IdClass::Bsuid => keys_of(&records, id, scope)?,
            IdClass::ParentBsuid => indexed_record_keys(&txn.open_table(PARENTS)?, id, scope)?,
            IdClass::Phone => {
                indexed_record_keys(&txn.open_table(PHONES)?, &phone_digits(id), scope)?
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

    /// Every claim a BSUID or phone appears in, in one scope or all.
    pub fn find_claims(&self, id: &str, scope: Option<&str>) -> Result<Vec<Claim>, StoreError> {
        let txn = self.db.begin_read()?;
        let claims = txn.open_table(CLAIMS)?;
        let keys = claim_keys_for(&claims, &txn.open_table(CLAIM_PHONES)?, id, scope)?;
        let mut found = Vec::with_capacity(keys.len());
        for claim_key in keys {
            if let Some(claim) = claims
                .get(claim_key.as_str())?
                .and_then(|g| decode(g.value()))
            {
                found.push(claim);
            }
        }
        Ok(found)
    }

    /// Removes every record and claim an identifier names (in one scope or
    /// all) with all of their index entries, durably. Returns what was
    /// removed.
    pub fn erase(&self, id: &str, scope: Option<&str>) -> Result<Erased, StoreError> {
        let doomed = self.find(id, scope)?;
        let txn = self.db.begin_write()?;
        let mut erased = Erased::default();
        for record in doomed {
            if let Some(record) = remove_record(&txn, &key(&record.bsuid, &record.scope))? {
                erased.records.push(record);
            }
        }
        let claim_keys = {
            let claims = txn.open_table(CLAIMS)?;
            claim_keys_for(&claims, &txn.open_table(CLAIM_PHONES)?, id, scope)?
        };
        for claim_key in claim_keys {
            if let Some(claim) = remove_claim(&txn, &claim_key)? {
                erased.claims.push(claim);
            }
        }
        // A retired BSUID is personal data too.
        if classify(id).is_bsuid() {
            let mut retired = txn.open_table(RETIRED)?;
            let keys = keys_of(&retired, id, scope)?;
            for retired_key in keys {
                retired.remove(retired_key.as_str())?;
            }
        }
        txn.commit()?;
        Ok(erased)
    }

    /// Moves every record, retirement and claim of scope `from` into scope
    /// `to`, in one durable transaction. What `to` already knows wins a
    /// conflict; nothing of `from` is dropped without being counted.
    pub fn move_scope(&self, from: &str, to: &str) -> Result<Moved, StoreError> {
        let txn = self.db.begin_write()?;
        let mut moved = Moved::default();
        let in_from = |key: &str| split_key(key).get(1) == Some(&from);
        let record_keys = matching_keys(&txn.open_table(RECORDS)?, in_from)?;
        for record_key in record_keys {
            let Some(record) = remove_record(&txn, &record_key)? else {
                continue;
            };
            move_record(&txn, record, to, &mut moved)?;
        }
        let retired_keys = matching_keys(&txn.open_table(RETIRED)?, in_from)?;
        for retired_key in retired_keys {
            let mut retired = txn.open_table(RETIRED)?;
            let Some(at) = retired.remove(retired_key.as_str())?.map(|v| v.value()) else {
                continue;
            };
            let bsuid = split_key(&retired_key)[0].to_owned();
            retired.insert(key(&bsuid, to).as_str(), at)?;
            drop(retired);
            remove_record(&txn, &key(&bsuid, to))?;
            moved.retired += 1;
        }
        let claim_keys = matching_keys(&txn.open_table(CLAIMS)?, in_from)?;
        for claim_key in claim_keys {
            let Some(mut claim) = remove_claim(&txn, &claim_key)? else {
                continue;
            };
            claim.scope = to.to_owned();
            put_claim(&txn, &claim)?;
            moved.claims += 1;
        }
        if from == LEGACY_DEFAULT_SCOPE {
            txn.open_table(META)?.insert(LEGACY_DEFAULT_KEY, 0)?;
        }
        txn.commit()?;
        Ok(moved)
    }

    /// Everything the store holds, for `migrate-store`.
    pub fn export(&self) -> Result<Export, StoreError> {
        let txn = self.db.begin_read()?;
        let mut export = Export::default();
        for entry in txn.open_table(RECORDS)?.iter()? {
            let (_, value) = entry?;
            match decode::<Record>(value.value()) {
                Some(record) => export.records.push(record),
                None => export.unreadable += 1,
            }
        }
        for entry in txn.open_table(RETIRED)?.iter()? {
            let (retired_key, _) = entry?;
            if let [bsuid, scope] = split_key(retired_key.value())[..] {
                export.retired.push((scope.to_owned(), bsuid.to_owned()));
            }
        }
        for entry in txn.open_table(CLAIMS)?.iter()? {
            let (_, value) = entry?;
            match decode::<Claim>(value.value()) {
                Some(claim) => export.claims.push(claim),
                None => export.unreadable += 1,
            }
        }
        Ok(export)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::model::{ClaimKey, Observation};

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

    fn apply(store: &RedbStore, scope: &str, events: &[IdentityEvent]) -> Applied {
        store
            .apply(events.iter().map(|e| (scope, e)), Source::Webhook)
            .unwrap()
    }

    /// Every key of every table, to prove erasure leaves nothing behind.
    fn all_keys(store: &RedbStore) -> Vec<String> {
        let txn = store.db.begin_read().unwrap();
        let mut keys = Vec::new();
        for (name, table) in [("records", RECORDS), ("claims", CLAIMS)] {
            for entry in txn.open_table(table).unwrap().iter().unwrap() {
                keys.push(format!("{name}:{}", entry.unwrap().0.value()));
            }
        }
        for table in [PHONES, PARENTS, CLAIM_PHONES] {
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
        assert_eq!(record.source, Source::Webhook);
        assert!(record.attested_at.is_some(), "a webhook attests the pair");
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
    fn an_operator_pair_is_trusted_but_not_attested_by_meta() {
        let store = RedbStore::in_memory().unwrap();
        let event = seen(BSUID, Some(PHONE));
        store.apply([("a", &event)], Source::Import).unwrap();
        let record = store.by_bsuid("a", BSUID).unwrap().unwrap();
        assert_eq!((record.source, record.attested_at), (Source::Import, None));
        assert!(
            store.apply([("a", &event)], Source::Send).is_err(),
            "a send never writes a record"
        );
    }

    #[test]
    fn scopes_never_answer_for_each_other() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        assert!(store.by_bsuid("b", BSUID).unwrap().is_none());
        assert!(store.by_phone("b", PHONE).unwrap().is_none());
        assert_eq!(store.find(PHONE, Some("b")).unwrap(), vec![]);
        assert_eq!(store.find(PHONE, None).unwrap().len(), 1);
    }

    #[test]
    fn a_claim_answers_for_its_number_only_and_moves_nothing() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen("US.42", Some("16505550000"))]);
        let kept = store.claim("a", "999", BSUID, PHONE).unwrap();
        assert_eq!(kept, Claimed::Kept { displaced: None });
        assert_eq!(
            store.claimed_phone("a", "999", BSUID).unwrap().as_deref(),
            Some(PHONE)
        );
        assert_eq!(store.claimed_phone("a", "123", BSUID).unwrap(), None);
        assert!(store.by_bsuid("a", BSUID).unwrap().is_none(), "no record");
        assert!(store.by_phone("a", PHONE).unwrap().is_none(), "no index");
        // A claim cannot take a phone a trusted record holds, nor give a
        // BSUID whose phone is known another one.
        let taken = store.claim("a", "999", "US.7", "16505550000").unwrap();
        assert_eq!(taken, Claimed::Overruled);
        assert_eq!(
            store.claim("a", "999", "US.42", PHONE).unwrap(),
            Claimed::Overruled
        );
        // One phone, one BSUID per number: a newer claim displaces the older.
        let again = store.claim("a", "999", "US.8", PHONE).unwrap();
        assert_eq!(
            again,
            Claimed::Kept {
                displaced: Some(BSUID.to_owned())
            }
        );
        assert_eq!(store.claimed_phone("a", "999", BSUID).unwrap(), None);
    }

    #[test]
    fn a_webhook_that_attests_or_contradicts_a_claim_drops_it() {
        let store = RedbStore::in_memory().unwrap();
        store.claim("a", "999", BSUID, PHONE).unwrap();
        store.claim("a", "998", "US.5", "16505550005").unwrap();
        // Meta says the BSUID's phone is another one: the webhook wins.
        let applied = apply(&store, "a", &[seen(BSUID, Some("16505550000"))]);
        assert_eq!(
            applied.claims_dropped,
            vec![ClaimKey {
                scope: "a".into(),
                number: "999".into(),
                bsuid: BSUID.into()
            }]
        );
        assert_eq!(store.claimed_phone("a", "999", BSUID).unwrap(), None);
        // Meta gives the claimed phone to another BSUID: that claim goes too.
        apply(&store, "a", &[seen("US.6", Some("16505550005"))]);
        assert_eq!(store.claimed_phone("a", "998", "US.5").unwrap(), None);
        assert!(
            all_keys(&store)
                .iter()
                .all(|k| !k.starts_with("claims:") && !k.contains("\0998")),
            "{:?}",
            all_keys(&store)
        );
    }

    #[test]
    fn erase_removes_every_trace_in_every_scope() {
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
        store.claim("c", "5", "US.3", PHONE).unwrap();
        let erased = store.erase("+1 631 555 1234", None).unwrap();
        assert_eq!(erased.records.len(), 2, "both scopes: {erased:?}");
        assert_eq!(erased.claims.len(), 1);
        assert_eq!(
            all_keys(&store),
            vec!["records:US.999\0a", "index:16505550000\0a"]
        );
        let again = store.erase(PHONE, None).unwrap();
        assert!(again.records.is_empty() && again.claims.is_empty());
    }

    #[test]
    fn erase_by_bsuid_in_one_scope() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        apply(&store, "b", &[seen(BSUID, Some(PHONE))]);
        assert_eq!(store.erase(BSUID, Some("a")).unwrap().records.len(), 1);
        assert!(store.by_phone("a", PHONE).unwrap().is_none());
        assert!(store.by_phone("b", PHONE).unwrap().is_some());
    }

    #[test]
    fn retiring_a_bsuid_frees_its_phone_and_drops_its_claims() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
        store.claim("a", "9", "US.1", "16505550001").unwrap();
        let retire = |bsuid: &str| IdentityEvent::Retired {
            bsuid: bsuid.into(),
        };
        let applied = apply(
            &store,
            "a",
            &[retire(BSUID), retire("US.1"), seen("US.42", Some(PHONE))],
        );
        assert_eq!((applied.retired, applied.inserted), (1, 1));
        assert_eq!(applied.claims_dropped.len(), 1);
        assert!(store.by_bsuid("a", BSUID).unwrap().is_none());
        assert_eq!(store.by_phone("a", PHONE).unwrap().unwrap().bsuid, "US.42");
        assert_eq!(
            store.claim("a", "9", "US.1", "16505550001").unwrap(),
            Claimed::Overruled,
            "a retired BSUID cannot be claimed back"
        );
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
    fn moving_a_scope_keeps_everything_and_lets_the_target_win_conflicts() {
        let store = RedbStore::in_memory().unwrap();
        apply(&store, "default", &[seen(BSUID, Some(PHONE))]);
        apply(&store, "default", &[seen("US.2", Some("16505550002"))]);
        apply(&store, "default", &[seen("US.3", Some("16505550003"))]);
        apply(
            &store,
            "default",
            &[IdentityEvent::Retired {
                bsuid: "US.4".into(),
            }],
        );
        store.claim("default", "", "US.5", "16505550005").unwrap();
        // The target already gives US.3's phone to someone else.
        apply(&store, "number:1", &[seen("US.9", Some("16505550003"))]);
        let moved = store.move_scope("default", "number:1").unwrap();
        assert_eq!(
            moved,
            Moved {
                records: 3,
                merged: 0,
                conflicts: 1,
                retired: 1,
                claims: 1
            }
        );
        assert_eq!(store.find(BSUID, Some("default")).unwrap(), vec![]);
        assert_eq!(
            store.by_phone("number:1", PHONE).unwrap().unwrap().bsuid,
            BSUID
        );
        assert_eq!(
            store
                .by_phone("number:1", "16505550003")
                .unwrap()
                .unwrap()
                .bsuid,
            "US.9"
        );
        assert_eq!(
            store.by_bsuid("number:1", "US.3").unwrap().unwrap().phone,
            None
        );
        assert!(
            all_keys(&store).iter().all(|k| !k.ends_with("\0default")),
            "{:?}",
            all_keys(&store)
        );
    }

    #[test]
    fn what_is_committed_survives_reopening_the_file() {
        let dir = std::env::temp_dir().join(format!("sendgate-store-{}", std::process::id()));
        let path = dir.join("nested").join("identities.redb");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let (store, migration) = RedbStore::open(&path).unwrap();
            assert_eq!(migration, Migration::default());
            apply(&store, "a", &[seen(BSUID, Some(PHONE))]);
            assert!(RedbStore::open(&path).is_err(), "one process at a time");
        }
        let (store, _) = RedbStore::open(&path).unwrap();
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

    /// Writes a store the way schema 1 did: records and indexes only, no
    /// `meta`, pairs from sends as records.
    fn schema_1_store(path: &Path) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        let legacy = |bsuid: &str, phone: &str, source: &str| {
            format!(
                r#"{{"portfolio":"default","bsuid":"{bsuid}","phone":"{phone}","first_seen":1,"last_seen":2,"source":"{source}"}}"#
            )
        };
        {
            let mut records = txn.open_table(RECORDS).unwrap();
            let mut phones = txn.open_table(PHONES).unwrap();
            for (bsuid, phone, source) in
                [(BSUID, PHONE, "send"), ("US.2", "16505550002", "webhook")]
            {
                let text = legacy(bsuid, phone, source);
                records
                    .insert(key(bsuid, "default").as_str(), text.as_bytes())
                    .unwrap();
                phones
                    .insert(key(phone, "default").as_str(), bsuid)
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_schema_1_store_keeps_every_pair_and_trusts_only_webhook_ones() {
        let dir = std::env::temp_dir().join(format!("sendgate-v1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.redb");
        schema_1_store(&path);
        {
            let (store, migration) = RedbStore::open(&path).unwrap();
            assert_eq!(
                migration,
                Migration {
                    send_pairs_to_claims: 1,
                    legacy_default_records: 2
                }
            );
            let learned = store.by_bsuid("default", BSUID).unwrap().unwrap();
            assert_eq!(learned.phone, None, "a send's pair is no record's phone");
            assert!(store.by_phone("default", PHONE).unwrap().is_none());
            let claims = store.find_claims(BSUID, None).unwrap();
            assert_eq!(claims.len(), 1, "kept as a claim of no number");
            assert_eq!(
                (claims[0].number.as_str(), claims[0].phone.as_str()),
                ("", PHONE)
            );
            let attested = store.by_bsuid("default", "US.2").unwrap().unwrap();
            assert_eq!(attested.attested_at, Some(2));
            assert_eq!(attested.scope, "default", "read from the old field name");
        }
        // Reopening does not migrate again, and still reports the count.
        let (_, again) = RedbStore::open(&path).unwrap();
        assert_eq!(again.send_pairs_to_claims, 0);
        assert_eq!(again.legacy_default_records, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
