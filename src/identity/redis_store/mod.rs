//! The identity store of a fleet: Redis, shared by every replica, with the
//! embedded store's semantics (one phone and one parent belong to one BSUID
//! per scope, a retired BSUID never comes back, claims stay apart from
//! trusted records and go when a trusted pair names their BSUID or phone).
//!
//! Layout, per scope, every key beginning `sg:id:{<scope>}:` so that all
//! keys of a scope share one Redis Cluster hash slot and one Lua script can
//! change a person's record and the indexes another person's record shares
//! atomically (a recycled number moves between two people of one scope):
//!
//! - `r:<bsuid>`: the record, a hash (`bsuid`, `phone`, `parent`,
//!   `username`, `first`, `last`, `source`, `attested`);
//! - `p:<phone>`, `e:<parent bsuid>`: the indexes, → bsuid;
//! - `x:<bsuid>`: the tombstone of a retired BSUID (when);
//! - `c:<bsuid>`: claims, a hash business number → the [`Claim`] as JSON;
//! - `cp:<phone>`: a hash business number → the BSUID that number claimed
//!   the phone for;
//! - `n`: how many records the scope holds.
//!
//! `sg:id:scopes` lists the scopes, for lookups and erasure across all of
//! them. One scope is one slot: a portfolio's people live on one cluster
//! node, and the cluster spreads portfolios (numbers) across nodes.
//!
//! Every write is one Lua script (atomic) that also publishes the cached
//! answers it made stale ([`crate::fleet::invalidation`]). Durability is
//! Redis': with `appendfsync always` (README, "Fleet") a write is on disk
//! before the script's answer, so before the webhook relay's 2xx to Meta.

use std::future::Future;
use std::sync::{Arc, LazyLock};

use dashmap::DashSet;
use redis::Script;
use serde::Deserialize;

use super::model::{Claim, ClaimKey, IdentityEvent, Observation, Record, Source};
use super::store::{Applied, Claimed, Erased, StoreError};
use crate::fleet::{Fleet, Redis};
use crate::identifier::{IdClass, classify, phone_digits};

/// The set of every scope that ever held an identity.
const SCOPES: &str = "sg:id:scopes";

macro_rules! script {
    ($name:ident, $file:literal) => {
        static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(include_str!("prelude.lua"), include_str!($file)))
        });
    };
}
script!(SEEN, "seen.lua");
script!(RETIRE, "retire.lua");
script!(CLAIM, "claim.lua");
script!(FIND, "find.lua");
script!(PHONE_OF_PARENT, "phone_of.lua");
script!(RESTORE, "restore.lua");
script!(RESTORE_CLAIM, "restore_claim.lua");

/// The shared store: the fleet's Redis.
#[derive(Clone)]
pub struct RedisStore {
    fleet: Arc<Fleet>,
    /// Scopes this process has added to [`SCOPES`]: each is added once,
    /// not on every webhook or claim (a round trip each).
    listed: Arc<DashSet<String>>,
}

/// The key prefix of a scope; `{…}` is its hash tag.
fn prefix(scope: &str) -> String {
    format!("sg:id:{{{scope}}}:")
}

/// A script call on one scope: the first key routes it (any key of the
/// scope would), then the prefix and the scope.
fn on_scope<'a>(script: &'a Script, scope: &str, id: &str) -> redis::ScriptInvocation<'a> {
    let prefix = prefix(scope);
    let mut invocation = script.prepare_invoke();
    invocation.key(format!("{prefix}r:{id}"));
    invocation.arg(prefix).arg(scope);
    invocation
}

/// What a write script answers.
#[derive(Deserialize, Default)]
struct Written {
    st: String,
    /// BSUIDs whose cached answers went stale.
    #[serde(default)]
    t: Vec<String>,
    /// Claims dropped, as (number, BSUID).
    #[serde(default)]
    d: Vec<(String, String)>,
    #[serde(default)]
    displaced: Option<String>,
}

#[derive(Deserialize, Default)]
struct Found {
    /// Each record as its hash's flat (field, value) list.
    #[serde(default)]
    records: Vec<Vec<String>>,
    /// Each claim as JSON.
    #[serde(default)]
    claims: Vec<String>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|err| StoreError::new(format!("redis answer: {err}")))
}

/// A record from its hash fields.
fn record_of(scope: &str, fields: &[String]) -> Option<Record> {
    let mut record = Record {
        scope: scope.to_owned(),
        bsuid: String::new(),
        parent_bsuid: None,
        phone: None,
        username: None,
        first_seen: 0,
        last_seen: 0,
        source: Source::Webhook,
        attested_at: None,
    };
    for pair in fields.chunks_exact(2) {
        let value = pair[1].clone();
        match pair[0].as_str() {
            "bsuid" => record.bsuid = value,
            "phone" => record.phone = Some(value),
            "parent" => record.parent_bsuid = Some(value),
            "username" => record.username = Some(value),
            "first" => record.first_seen = value.parse().unwrap_or(0),
            "last" => record.last_seen = value.parse().unwrap_or(0),
            "attested" => record.attested_at = value.parse().ok(),
            "source" => record.source = serde_json::from_value(value.into()).ok()?,
            _ => {}
        }
    }
    (!record.bsuid.is_empty()).then_some(record)
}

/// A record as hash fields, bsuid first (migrate-store).
fn fields_of(record: &Record) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("bsuid", record.bsuid.clone()),
        ("first", record.first_seen.to_string()),
        ("last", record.last_seen.to_string()),
        ("source", record.source.as_str().to_owned()),
    ];
    let optional = [
        ("phone", record.phone.clone()),
        ("parent", record.parent_bsuid.clone()),
        ("username", record.username.clone()),
        ("attested", record.attested_at.map(|at| at.to_string())),
    ];
    fields.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?))),
    );
    fields
}

impl RedisStore {
    pub fn new(fleet: Arc<Fleet>) -> Self {
        RedisStore {
            fleet,
            listed: Arc::default(),
        }
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    fn redis(&self) -> &Redis {
        self.fleet.redis()
    }

    /// Runs a store call from blocking code (see [`Fleet::block`]).
    pub(crate) fn block<T>(&self, call: impl Future<Output = T>) -> T {
        self.fleet.block(call)
    }

    /// The phone a trusted source gave a BSUID or parent BSUID in a scope.
    pub async fn phone_of(&self, scope: &str, bsuid: &str) -> Result<Option<String>, StoreError> {
        if bsuid.contains(".ENT.") {
            let mut invocation = on_scope(&PHONE_OF_PARENT, scope, bsuid);
            invocation.arg(bsuid);
            return Ok(self.redis().script(&invocation).await?);
        }
        let key = format!("{}r:{bsuid}", prefix(scope));
        Ok(self
            .redis()
            .query(redis::cmd("HGET").arg(key).arg("phone"))
            .await?)
    }

    /// The BSUID a phone (digits) belongs to in a scope.
    pub async fn bsuid_of_phone(
        &self,
        scope: &str,
        digits: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = format!("{}p:{digits}", prefix(scope));
        Ok(self.redis().query(redis::cmd("GET").arg(key)).await?)
    }

    /// The phone a send from `number` claimed for a BSUID.
    pub async fn claimed_phone(
        &self,
        scope: &str,
        number: &str,
        bsuid: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = format!("{}c:{bsuid}", prefix(scope));
        let json: Option<String> = self
            .redis()
            .query(redis::cmd("HGET").arg(key).arg(number))
            .await?;
        Ok(json
            .as_deref()
            .and_then(|json| serde_json::from_str::<Claim>(json).ok())
            .map(|claim| claim.phone))
    }

    async fn remember_scope(&self, scope: &str) -> Result<(), StoreError> {
        if self.listed.contains(scope) {
            return Ok(());
        }
        let () = self
            .redis()
            .query(redis::cmd("SADD").arg(SCOPES).arg(scope))
            .await?;
        self.listed.insert(scope.to_owned());
        Ok(())
    }

    async fn scopes(&self, scope: Option<&str>) -> Result<Vec<String>, StoreError> {
        match scope {
            Some(scope) => Ok(vec![scope.to_owned()]),
            None => Ok(self
                .redis()
                .query(redis::cmd("SMEMBERS").arg(SCOPES))
                .await?),
        }
    }

    /// Applies events of one trusted source, each person's change one
    /// atomic script; `Ok` means every one is durable in Redis.
    pub async fn apply(
        &self,
        events: &[(String, IdentityEvent)],
        source: Source,
    ) -> Result<Applied, StoreError> {
        if source == Source::Send {
            return Err(StoreError::new("a send cannot write a record"));
        }
        let at = unix_now().to_string();
        let mut applied = Applied::default();
        for (scope, event) in events {
            self.remember_scope(scope).await?;
            let written: Written = match event {
                IdentityEvent::Seen(Observation {
                    bsuid,
                    parent_bsuid,
                    phone,
                    username,
                }) => {
                    let mut invocation = on_scope(&SEEN, scope, bsuid);
                    invocation
                        .arg(bsuid)
                        .arg(phone.as_deref().unwrap_or(""))
                        .arg(parent_bsuid.as_deref().unwrap_or(""))
                        .arg(username.as_deref().unwrap_or(""))
                        .arg(source.as_str())
                        .arg(&at)
                        .arg(if source == Source::Webhook { "1" } else { "0" });
                    parse(&self.redis().script::<String>(&invocation).await?)?
                }
                IdentityEvent::Retired { bsuid } => {
                    let mut invocation = on_scope(&RETIRE, scope, bsuid);
                    invocation.arg(bsuid).arg(&at);
                    parse(&self.redis().script::<String>(&invocation).await?)?
                }
            };
            match written.st.as_str() {
                "inserted" => applied.inserted += 1,
                "updated" => applied.updated += 1,
                "retired" => applied.retired += 1,
                _ if matches!(event, IdentityEvent::Seen(_)) => applied.unchanged += 1,
                _ => {}
            }
            applied
                .touched
                .extend(written.t.into_iter().map(|bsuid| (scope.clone(), bsuid)));
            applied
                .claims_dropped
                .extend(written.d.into_iter().map(|(number, bsuid)| ClaimKey {
                    scope: scope.clone(),
                    number,
                    bsuid,
                }));
        }
        Ok(applied)
    }

    /// Keeps the pair a send from `number` named, for that number alone.
    pub async fn claim(
        &self,
        scope: &str,
        number: &str,
        bsuid: &str,
        phone: &str,
    ) -> Result<Claimed, StoreError> {
        self.remember_scope(scope).await?;
        let mut invocation = on_scope(&CLAIM, scope, bsuid);
        invocation.arg(number).arg(bsuid).arg(phone).arg(unix_now());
        let written: Written = parse(&self.redis().script::<String>(&invocation).await?)?;
        Ok(match written.st.as_str() {
            "kept" => Claimed::Kept {
                displaced: written.displaced,
            },
            _ => Claimed::Overruled,
        })
    }

    /// Every record and claim an identifier names, in one scope or all;
    /// erased as well when `erase`.
    async fn find_or_erase(
        &self,
        id: &str,
        scope: Option<&str>,
        erase: bool,
    ) -> Result<Erased, StoreError> {
        let (id, kind) = match classify(id) {
            IdClass::Bsuid => (id.to_owned(), "bsuid"),
            IdClass::ParentBsuid => (id.to_owned(), "parent"),
            IdClass::Phone => (phone_digits(id), "phone"),
            IdClass::Username | IdClass::Invalid => return Ok(Erased::default()),
        };
        let mut found = Erased::default();
        for scope in self.scopes(scope).await? {
            let mut invocation = on_scope(&FIND, &scope, &id);
            invocation
                .arg(&id)
                .arg(kind)
                .arg(if erase { "erase" } else { "find" });
            let answer: Found = parse(&self.redis().script::<String>(&invocation).await?)?;
            found.records.extend(
                answer
                    .records
                    .iter()
                    .filter_map(|fields| record_of(&scope, fields)),
            );
            found.claims.extend(
                answer
                    .claims
                    .iter()
                    .filter_map(|json| serde_json::from_str::<Claim>(json).ok()),
            );
        }
        Ok(found)
    }

    pub async fn find(&self, id: &str, scope: Option<&str>) -> Result<Erased, StoreError> {
        self.find_or_erase(id, scope, false).await
    }

    pub async fn erase(&self, id: &str, scope: Option<&str>) -> Result<Erased, StoreError> {
        self.find_or_erase(id, scope, true).await
    }

    /// How many people the fleet knows, across scopes.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let mut total = 0u64;
        for scope in self.scopes(None).await? {
            let count: Option<i64> = self
                .redis()
                .query(redis::cmd("GET").arg(format!("{}n", prefix(&scope))))
                .await?;
            total += count.unwrap_or(0).max(0) as u64;
        }
        Ok(total)
    }

    /// migrate-store: one record exactly as the embedded store kept it.
    /// Returns "inserted", "merged" or "retired" (a tombstone won).
    pub async fn restore(&self, record: &Record) -> Result<String, StoreError> {
        self.remember_scope(&record.scope).await?;
        let mut invocation = on_scope(&RESTORE, &record.scope, &record.bsuid);
        for (name, value) in fields_of(record) {
            invocation.arg(name).arg(value);
        }
        Ok(self.redis().script(&invocation).await?)
    }

    /// migrate-store: one retired BSUID.
    pub async fn restore_retired(&self, scope: &str, bsuid: &str) -> Result<(), StoreError> {
        self.apply(
            &[(
                scope.to_owned(),
                IdentityEvent::Retired {
                    bsuid: bsuid.to_owned(),
                },
            )],
            Source::Import,
        )
        .await
        .map(drop)
    }

    /// migrate-store: one claim, unless a trusted record overrules it.
    /// True when kept.
    pub async fn restore_claim(&self, claim: &Claim) -> Result<bool, StoreError> {
        self.remember_scope(&claim.scope).await?;
        let json =
            serde_json::to_string(claim).map_err(|err| StoreError::new(format!("claim: {err}")))?;
        let mut invocation = on_scope(&RESTORE_CLAIM, &claim.scope, &claim.bsuid);
        invocation
            .arg(&claim.number)
            .arg(&claim.bsuid)
            .arg(&claim.phone)
            .arg(json);
        let answer: String = self.redis().script(&invocation).await?;
        Ok(answer == "kept")
    }
}
