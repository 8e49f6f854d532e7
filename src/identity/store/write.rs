//! The steps of a write transaction: merging an observation into a
//! record and its indexes, keeping claims apart from records, moving a
//! record between scopes, and migrating a store an older sendgate wrote.

use redb::{ReadableTable, WriteTransaction};

use super::super::model::{Claim, Observation, Record, Source};
use super::schema::*;
use crate::identifier::{IdClass, classify, phone_digits};

pub(super) fn indexed_record_keys(
    index: &impl ReadableTable<&'static str, &'static str>,
    id: &str,
    scope: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    if let Some(scope) = scope {
        if let Some(bsuid) = index.get(key(id, scope).as_str())? {
            keys.push(key(bsuid.value(), scope));
        }
        return Ok(keys);
    }
    let (start, end) = prefix_range(&[id]);
    for entry in index.range(start.as_str()..end.as_str())? {
        let (index_key, bsuid) = entry?;
        let scope = index_key.value().split_once(SEP).map_or("", |(_, s)| s);
        keys.push(key(bsuid.value(), scope));
    }
    Ok(keys)
}

/// The keys of the claims a BSUID or a phone appears in.
pub(super) fn claim_keys_for(
    claims: &impl ReadableTable<&'static str, &'static [u8]>,
    claim_phones: &impl ReadableTable<&'static str, &'static str>,
    id: &str,
    scope: Option<&str>,
) -> Result<Vec<String>, StoreError> {
    match classify(id) {
        IdClass::Bsuid | IdClass::ParentBsuid => {
            let mut prefix = vec![id];
            prefix.extend(scope);
            keys_with_range(claims, &prefix)
        }
        IdClass::Phone => {
            let digits = phone_digits(id);
            let mut prefix = vec![digits.as_str()];
            prefix.extend(scope);
            let (start, end) = prefix_range(&prefix);
            let mut keys = Vec::new();
            for entry in claim_phones.range(start.as_str()..end.as_str())? {
                let (phone_key, bsuid) = entry?;
                if let [_, scope, number] = split_key(phone_key.value())[..] {
                    keys.push(claim_key(bsuid.value(), scope, number));
                }
            }
            Ok(keys)
        }
        IdClass::Username | IdClass::Invalid => Ok(Vec::new()),
    }
}

pub(super) enum Upsert {
    Inserted,
    Updated,
    Unchanged,
}

/// Merges one trusted observation into the person's record and keeps the
/// indexes true: one phone and one parent belong to one BSUID per scope.
/// Claims that name the BSUID or its phone are attested or contradicted
/// now, and go.
pub(super) fn upsert(
    txn: &WriteTransaction,
    scope: &str,
    seen: &Observation,
    source: Source,
    at: u64,
    applied: &mut Applied,
) -> Result<Upsert, StoreError> {
    let record_key = key(&seen.bsuid, scope);
    if txn.open_table(RETIRED)?.get(record_key.as_str())?.is_some() {
        return Ok(Upsert::Unchanged);
    }
    let existing = {
        let records = txn.open_table(RECORDS)?;
        let found = records.get(record_key.as_str())?;
        found.and_then(|guard| decode::<Record>(guard.value()))
    };
    let mut record = existing.clone().unwrap_or_else(|| Record {
        scope: scope.to_owned(),
        bsuid: seen.bsuid.clone(),
        parent_bsuid: None,
        phone: None,
        username: None,
        first_seen: at,
        last_seen: at,
        source,
        attested_at: None,
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
    if source == Source::Webhook && seen.phone.is_some() {
        record.attested_at = Some(at);
    } else if record.phone != old_phone {
        // An operator's new phone is not Meta's word.
        record.attested_at = None;
    }
    let bsuid = seen.bsuid.as_str();
    let phone = record.phone.as_deref();
    applied.touched.extend(reindex(
        txn,
        Index::Phones,
        scope,
        bsuid,
        old_phone.as_deref(),
        phone,
    )?);
    let parent = record.parent_bsuid.as_deref();
    applied.touched.extend(reindex(
        txn,
        Index::Parents,
        scope,
        bsuid,
        old_parent.as_deref(),
        parent,
    )?);
    if let Some(phone) = phone {
        let mut dropped = drop_claims_of_bsuid(txn, bsuid, Some(scope))?;
        dropped.extend(drop_claims_of_phone(txn, phone, scope)?);
        applied
            .claims_dropped
            .extend(dropped.iter().map(Claim::key));
    }
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
pub(super) fn reindex(
    txn: &WriteTransaction,
    index: Index,
    scope: &str,
    bsuid: &str,
    old: Option<&str>,
    new: Option<&str>,
) -> Result<Option<(String, String)>, StoreError> {
    if old == new {
        return Ok(None);
    }
    let mut table = txn.open_table(index.table())?;
    if let Some(old) = old {
        let old_key = key(old, scope);
        let points_here = table
            .get(old_key.as_str())?
            .is_some_and(|b| b.value() == bsuid);
        if points_here {
            table.remove(old_key.as_str())?;
        }
    }
    let Some(new) = new else { return Ok(None) };
    let previous = table
        .insert(key(new, scope).as_str(), bsuid)?
        .map(|b| b.value().to_owned())
        .filter(|holder| holder != bsuid);
    drop(table);
    let Some(holder) = previous else {
        return Ok(None);
    };
    let holder_key = key(&holder, scope);
    let mut records = txn.open_table(RECORDS)?;
    let stale = records
        .get(holder_key.as_str())?
        .and_then(|g| decode::<Record>(g.value()));
    if let Some(mut stale) = stale {
        *index.field(&mut stale) = None;
        records.insert(holder_key.as_str(), encode(&stale).as_slice())?;
    }
    Ok(Some((scope.to_owned(), holder)))
}

/// Deletes a record and the index entries that point at it.
pub(super) fn remove_record(
    txn: &WriteTransaction,
    record_key: &str,
) -> Result<Option<Record>, StoreError> {
    let removed = txn
        .open_table(RECORDS)?
        .remove(record_key)?
        .and_then(|g| decode::<Record>(g.value()));
    if let Some(record) = &removed {
        for (index, id) in [(PHONES, &record.phone), (PARENTS, &record.parent_bsuid)] {
            if let Some(id) = id {
                let mut table = txn.open_table(index)?;
                let index_key = key(id, &record.scope);
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

/// Writes a claim and its phone entry.
pub(super) fn put_claim(txn: &WriteTransaction, claim: &Claim) -> Result<(), StoreError> {
    txn.open_table(CLAIMS)?.insert(
        claim_key(&claim.bsuid, &claim.scope, &claim.number).as_str(),
        encode(claim).as_slice(),
    )?;
    txn.open_table(CLAIM_PHONES)?.insert(
        claim_key(&claim.phone, &claim.scope, &claim.number).as_str(),
        claim.bsuid.as_str(),
    )?;
    Ok(())
}

/// Deletes a claim and its phone entry.
pub(super) fn remove_claim(
    txn: &WriteTransaction,
    claim_key_text: &str,
) -> Result<Option<Claim>, StoreError> {
    let removed = txn
        .open_table(CLAIMS)?
        .remove(claim_key_text)?
        .and_then(|g| decode::<Claim>(g.value()));
    if let Some(claim) = &removed {
        let mut phones = txn.open_table(CLAIM_PHONES)?;
        let phone_key = claim_key(&claim.phone, &claim.scope, &claim.number);
        let points_here = phones
            .get(phone_key.as_str())?
            .is_some_and(|b| b.value() == claim.bsuid);
        if points_here {
            phones.remove(phone_key.as_str())?;
        }
    }
    Ok(removed)
}

pub(super) fn drop_claims_of_bsuid(
    txn: &WriteTransaction,
    bsuid: &str,
    scope: Option<&str>,
) -> Result<Vec<Claim>, StoreError> {
    let keys = {
        let mut prefix = vec![bsuid];
        prefix.extend(scope);
        keys_with_range(&txn.open_table(CLAIMS)?, &prefix)?
    };
    let mut dropped = Vec::new();
    for claim_key in keys {
        dropped.extend(remove_claim(txn, &claim_key)?);
    }
    Ok(dropped)
}

pub(super) fn drop_claims_of_phone(
    txn: &WriteTransaction,
    phone: &str,
    scope: &str,
) -> Result<Vec<Claim>, StoreError> {
    let keys = {
        let claims = txn.open_table(CLAIMS)?;
        claim_keys_for(&claims, &txn.open_table(CLAIM_PHONES)?, phone, Some(scope))?
    };
    let mut dropped = Vec::new();
    for claim_key in keys {
        dropped.extend(remove_claim(txn, &claim_key)?);
    }
    Ok(dropped)
}

/// Puts a record taken out of its old scope into `to`, merging with what
/// `to` knows of the BSUID; a phone or parent `to` gives to another BSUID
/// stays with that one.
pub(super) fn move_record(
    txn: &WriteTransaction,
    mut record: Record,
    to: &str,
    moved: &mut Moved,
) -> Result<(), StoreError> {
    let target_key = key(&record.bsuid, to);
    if txn.open_table(RETIRED)?.get(target_key.as_str())?.is_some() {
        moved.conflicts += 1;
        return Ok(());
    }
    let existing = txn
        .open_table(RECORDS)?
        .get(target_key.as_str())?
        .and_then(|g| decode::<Record>(g.value()));
    record.scope = to.to_owned();
    if let Some(existing) = &existing {
        record.phone = existing.phone.clone().or(record.phone);
        record.parent_bsuid = existing.parent_bsuid.clone().or(record.parent_bsuid);
        record.username = existing.username.clone().or(record.username);
        record.first_seen = record.first_seen.min(existing.first_seen);
        record.last_seen = record.last_seen.max(existing.last_seen);
        record.source = existing.source;
        record.attested_at = existing.attested_at.or(record.attested_at);
        moved.merged += 1;
    } else {
        moved.records += 1;
    }
    for index in [Index::Phones, Index::Parents] {
        let Some(id) = index.field(&mut record).clone() else {
            continue;
        };
        let mut table = txn.open_table(index.table())?;
        let index_key = key(&id, to);
        let holder = table.get(index_key.as_str())?.map(|b| b.value().to_owned());
        match holder {
            Some(holder) if holder != record.bsuid => {
                *index.field(&mut record) = None;
                moved.conflicts += 1;
            }
            _ => {
                table.insert(index_key.as_str(), record.bsuid.as_str())?;
            }
        }
    }
    txn.open_table(RECORDS)?
        .insert(target_key.as_str(), encode(&record).as_slice())?;
    Ok(())
}

/// Brings a store of schema 1 up to date: pairs a send taught become claims
/// of no number (a send proves nothing), webhook pairs are marked attested
/// as of their last sighting, and records in the shared scope `default`
/// are counted for the operator.
pub(super) fn migrate_from_v1(txn: &WriteTransaction) -> Result<Migration, StoreError> {
    let mut migration = Migration::default();
    let legacy: Vec<(String, Record)> = {
        let records = txn.open_table(RECORDS)?;
        let mut legacy = Vec::new();
        for entry in records.iter()? {
            let entry = entry?;
            if let Some(record) = decode::<Record>(entry.1.value()) {
                legacy.push((entry.0.value().to_owned(), record));
            }
        }
        legacy
    };
    for (record_key, mut record) in legacy {
        if record.scope == LEGACY_DEFAULT_SCOPE {
            migration.legacy_default_records += 1;
        }
        match (record.source, record.phone.take()) {
            (Source::Send, Some(phone)) => {
                let mut phones = txn.open_table(PHONES)?;
                let index_key = key(&phone, &record.scope);
                if phones
                    .get(index_key.as_str())?
                    .is_some_and(|b| b.value() == record.bsuid)
                {
                    phones.remove(index_key.as_str())?;
                }
                drop(phones);
                put_claim(
                    txn,
                    &Claim {
                        scope: record.scope.clone(),
                        number: String::new(),
                        bsuid: record.bsuid.clone(),
                        phone,
                        first_seen: record.first_seen,
                        last_seen: record.last_seen,
                        source: Source::Send,
                    },
                )?;
                migration.send_pairs_to_claims += 1;
            }
            (Source::Webhook, Some(phone)) => {
                record.phone = Some(phone);
                record.attested_at = Some(record.last_seen);
            }
            (_, phone) => record.phone = phone,
        }
        txn.open_table(RECORDS)?
            .insert(record_key.as_str(), encode(&record).as_slice())?;
    }
    Ok(migration)
}
