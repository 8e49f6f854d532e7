//! `sendgate migrate-store`: a single machine's embedded store into the
//! fleet's Redis, counted.

use std::path::Path;

use super::operator::{fleet_store, init_operator_log};
use super::{CliError, StoreKind, load_config};
use crate::identity::RedbStore;

/// Copies every record, retired BSUID and claim of `store.path` into
/// `fleet.redis_url`. The file is only read; Redis may be serving a fleet
/// meanwhile. What Redis already knows keeps its tombstones (a retired
/// BSUID stays dead); a record Redis has is replaced by the file's.
pub fn migrate_store(
    from: StoreKind,
    to: StoreKind,
    config_path: Option<&Path>,
) -> Result<(), CliError> {
    init_operator_log();
    if (from, to) != (StoreKind::Redb, StoreKind::Redis) {
        return Err("only --from redb --to redis is supported".into());
    }
    let config = load_config(config_path)?;
    let path = match config.store.path.as_str() {
        "" => return Err("store.path is empty (an in-memory store): nothing to migrate".into()),
        path if !Path::new(path).exists() => {
            return Err(format!("no identity store at {path}").into());
        }
        path => Path::new(path),
    };
    let shared = fleet_store(&config)?.ok_or("fleet.redis_url is empty: nowhere to migrate to")?;
    let redis = shared.shared_store().ok_or("not a fleet store")?;
    let (store, _) = RedbStore::open(path).map_err(|err| err.to_string())?;
    let export = store.export().map_err(|err| err.to_string())?;
    let failed = |err: crate::identity::StoreError| format!("migration stopped: {err}");
    let (mut inserted, mut merged, mut dead) = (0u64, 0u64, 0u64);
    for record in &export.records {
        match redis.block(redis.restore(record)).map_err(failed)?.as_str() {
            "inserted" => inserted += 1,
            "merged" => merged += 1,
            _ => dead += 1,
        }
    }
    for (scope, bsuid) in &export.retired {
        redis
            .block(redis.restore_retired(scope, bsuid))
            .map_err(failed)?;
    }
    let (mut kept, mut overruled) = (0u64, 0u64);
    for claim in &export.claims {
        match redis.block(redis.restore_claim(claim)).map_err(failed)? {
            true => kept += 1,
            false => overruled += 1,
        }
    }
    println!(
        "migrated {} records from {} to the fleet's Redis: {inserted} new, {merged} replacing one Redis had, \
         {dead} left out (retired in Redis); {} retired BSUIDs; {} claims ({kept} kept, {overruled} overruled \
         by a trusted record); {} unreadable entries skipped",
        export.records.len(),
        path.display(),
        export.retired.len(),
        export.claims.len(),
        export.unreadable,
    );
    Ok(())
}
