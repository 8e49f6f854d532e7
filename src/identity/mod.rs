//! What sendgate knows about people: phone ↔ BSUID mappings per scope.
//!
//! BSUIDs are portfolio-scoped (a BSUID works only from the numbers of the
//! portfolio that issued it), so every mapping is keyed by a *scope*: the
//! portfolio config puts the business number in, or the number itself when
//! it names none. A mapping learned in one scope never answers for another,
//! and numbers share identities only when config says they share a
//! portfolio. Phones are stored as digits only, the way Meta reports a
//! `wa_id`.
//!
//! Trust: only a signed webhook (Meta's word) or an operator (import, admin
//! API) can make a BSUID resolve to a phone for every number of a scope.
//! A send proves nothing, since Meta delivers to `to` and ignores
//! `recipient` when both are present; with `identity.learn_from_sends` on,
//! what a send names is a [`Claim`] that answers only for the number that
//! sent it, until a webhook attests or contradicts it.
//!
//! [`Identities`] is a compact cache of BSUID → phone in front of the
//! durable [`RedbStore`]. Writes go to the store first and then drop the
//! cache entries they make stale, so the cache can only ever lag behind by
//! a miss.

mod cache;
pub mod import;
pub(crate) mod model;
mod redis_store;
mod scope;
mod store;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::fleet::invalidation::{self, Notice};
use crate::metrics::ResultLabels;

pub use cache::PhoneCache;
pub use model::{Claim, ClaimKey, IdentityEvent, Observation, Record, Source};
pub use redis_store::RedisStore;
pub use scope::{NUMBER_SCOPE_PREFIX, Scope};
pub use store::{
    Applied, Claimed, Erased, Export, LEGACY_DEFAULT_SCOPE, Migration, Moved, RedbStore, StoreError,
};

/// The identity service shared by the send path, the webhook relay and the
/// admin API.
pub struct Identities {
    store: Backend,
    /// (portfolio, BSUID) → phone digits, or "no phone".
    phones: PhoneCache,
    /// Bumped after every store write (and, in a fleet, every invalidation
    /// message), before the cache entries it touched are invalidated: a
    /// lookup caches what it read from the store only if no write happened
    /// meanwhile, so an answer read just before a write cannot land in the
    /// cache after that write's invalidation.
    writes: AtomicU64,
    /// Where cache hits and misses are counted, once metrics exist.
    cache_counters: OnceLock<CacheCounters>,
}

/// Where identities are kept.
enum Backend {
    /// One machine: the embedded file (or memory); shared with the blocking
    /// threads a send's claim is written on.
    Local(Arc<RedbStore>),
    /// A fleet: Redis, shared by every replica.
    Shared(RedisStore),
}

/// The two series of the cache metric, resolved once: a lookup in the
/// family hashes the labels and takes a lock, on every send to a BSUID.
struct CacheCounters {
    hit: Counter,
    miss: Counter,
}

impl Identities {
    /// `capacity` counts cached mappings; `ttl` is how long one stays cached
    /// after its last use.
    pub fn new(store: RedbStore, capacity: u64, ttl: Duration) -> Self {
        Self::over(Backend::Local(Arc::new(store)), capacity, ttl)
    }

    /// Identities kept in the fleet's Redis. Other replicas' writes reach
    /// this cache through the invalidation channel, subscribed to here.
    pub fn shared(store: RedisStore, capacity: u64, ttl: Duration) -> Arc<Self> {
        let fleet = store.fleet().clone();
        let identities = Arc::new(Self::over(Backend::Shared(store), capacity, ttl));
        let weak = Arc::downgrade(&identities);
        let to = fleet.redis().subscribe_to().clone();
        fleet.spawn(invalidation::subscribe(to, move |notice| {
            if let Some(identities) = weak.upgrade() {
                identities.hear(notice);
            }
        }));
        identities
    }

    fn over(store: Backend, capacity: u64, ttl: Duration) -> Self {
        Identities {
            store,
            phones: PhoneCache::new(capacity, ttl),
            writes: AtomicU64::new(0),
            cache_counters: OnceLock::new(),
        }
    }

    /// Another replica's write made cached answers stale (or messages may
    /// have been missed).
    fn hear(&self, notice: Notice) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        match notice {
            Notice::Stale(stale) => {
                for bsuid in &stale.r {
                    self.phones.invalidate(&[&stale.s], bsuid);
                }
                for (number, bsuid) in &stale.c {
                    self.phones
                        .invalidate(&[stale.s.as_str(), CLAIM_VIEW, number], bsuid);
                }
            }
            Notice::Resubscribed => self.phones.clear(),
        }
    }

    /// Counts cache hits and misses in this metric family from now on.
    pub(crate) fn count_cache_in(&self, family: Family<ResultLabels, Counter>) {
        let series = |result| family.get_or_create(&ResultLabels { result }).clone();
        let _ = self.cache_counters.set(CacheCounters {
            hit: series("hit"),
            miss: series("miss"),
        });
    }

    fn count(&self, counter: fn(&CacheCounters) -> &Counter) {
        if let Some(counters) = self.cache_counters.get() {
            counter(counters).inc();
        }
    }

    /// Runs a shared-store call from blocking code, or a local one inline.
    fn run<T>(
        &self,
        local: impl FnOnce(&RedbStore) -> T,
        shared: impl AsyncFnOnce(&RedisStore) -> T,
    ) -> T {
        match &self.store {
            Backend::Local(store) => local(store),
            Backend::Shared(store) => store.block(shared(store)),
        }
    }

    /// The phone `number` may use for a BSUID: what a trusted source gave
    /// its scope, else, when `with_claims` (`identity.learn_from_sends`),
    /// what this number's own sends claimed. A cache hit does not wait.
    pub async fn phone_for(
        &self,
        scope: Scope<'_>,
        number: &str,
        bsuid: &str,
        with_claims: bool,
    ) -> Option<String> {
        if let Some(phone) = self.phone_for_bsuid(scope, bsuid).await {
            return Some(phone);
        }
        if !with_claims {
            return None;
        }
        self.claimed_phone(scope, number, bsuid).await
    }

    /// The phone a send from `number` claimed for a BSUID (only asked when
    /// `identity.learn_from_sends` is on and no trusted phone is known).
    pub async fn claimed_phone(
        &self,
        scope: Scope<'_>,
        number: &str,
        bsuid: &str,
    ) -> Option<String> {
        let [prefix, name] = scope.parts();
        let read = async {
            match &self.store {
                Backend::Local(store) => store.claimed_phone(&scope.key(), number, bsuid),
                Backend::Shared(store) => store.claimed_phone(&scope.key(), number, bsuid).await,
            }
        };
        self.cached_or(&[prefix, name, CLAIM_VIEW, number], bsuid, read)
            .await
    }

    /// [`phone_for`](Self::phone_for) from blocking code (an audit).
    pub fn phone_for_blocking(
        &self,
        scope: Scope<'_>,
        number: &str,
        bsuid: &str,
        with_claims: bool,
    ) -> Option<String> {
        let lookup = self.phone_for(scope, number, bsuid, with_claims);
        match &self.store {
            Backend::Local(_) => futures_util::FutureExt::now_or_never(lookup).flatten(),
            Backend::Shared(store) => store.block(lookup),
        }
    }

    /// The phone a trusted source gave a BSUID (or parent BSUID) in a
    /// scope. A store failure is logged and answered as "unknown": the send
    /// then goes out as the sender wrote it.
    pub async fn phone_for_bsuid(&self, scope: Scope<'_>, bsuid: &str) -> Option<String> {
        let read = async {
            let key = scope.key();
            match &self.store {
                Backend::Local(store) if bsuid.contains(".ENT.") => store.by_parent(&key, bsuid),
                Backend::Local(store) => store.by_bsuid(&key, bsuid),
                Backend::Shared(store) => return store.phone_of(&key, bsuid).await,
            }
            .map(|record| record.and_then(|record| record.phone))
        };
        self.cached_or(&scope.parts(), bsuid, read).await
    }

    /// The cached answer for (cache scope, BSUID), else what `read` gets
    /// from the store, cached. `read` is not polled on a hit.
    async fn cached_or(
        &self,
        cache_scope: &[&str],
        bsuid: &str,
        read: impl Future<Output = Result<Option<String>, StoreError>>,
    ) -> Option<String> {
        if let Some(cached) = self.phones.get(cache_scope, bsuid) {
            self.count(|counters| &counters.hit);
            return cached;
        }
        self.count(|counters| &counters.miss);
        let writes = self.writes.load(Ordering::Acquire);
        let phone = match read.await {
            Ok(phone) => phone,
            Err(err) => {
                self.lookup_failed(&err);
                return None;
            }
        };
        self.remember(cache_scope, bsuid, phone.as_deref(), writes);
        phone
    }

    /// Caches what the store answered for a BSUID, unless a write happened
    /// since `writes_seen` (read before the store was): the answer may be
    /// stale, and the write's invalidation has already passed.
    fn remember(&self, cache_scope: &[&str], bsuid: &str, phone: Option<&str>, writes_seen: u64) {
        if self.writes.load(Ordering::Acquire) != writes_seen {
            return;
        }
        match phone {
            Some(phone) => self.phones.insert(cache_scope, bsuid, phone),
            None => self.phones.insert_none(cache_scope, bsuid),
        }
    }

    /// The BSUID a phone (digits) belongs to in a scope, read from the
    /// store: the pair limit keys a person by it.
    pub async fn bsuid_for_phone(&self, scope: Scope<'_>, phone: &str) -> Option<String> {
        let key = scope.key();
        let found = match &self.store {
            Backend::Local(store) => store
                .by_phone(&key, phone)
                .map(|record| record.map(|record| record.bsuid)),
            Backend::Shared(store) => store.bsuid_of_phone(&key, phone).await,
        };
        found
            .inspect_err(|err| self.lookup_failed(err))
            .ok()
            .flatten()
    }

    /// Logs a failed lookup: an error of the embedded store at error; in
    /// a fleet at debug, as with Redis away it repeats on every miss and
    /// the fleet's health logs the outage once, at warn.
    fn lookup_failed(&self, err: &StoreError) {
        match self.store {
            Backend::Local(_) => tracing::error!(error = %err, "identity lookup failed"),
            Backend::Shared(_) => tracing::debug!(error = %err, "identity lookup failed"),
        }
    }

    /// Applies events of a trusted source durably (blocking: call from a
    /// blocking context), then forgets cached answers they may have changed.
    pub fn apply(
        &self,
        events: &[(String, IdentityEvent)],
        source: Source,
    ) -> Result<Applied, StoreError> {
        let applied = self.run(
            |store| {
                store.apply(
                    events.iter().map(|(scope, event)| (scope.as_str(), event)),
                    source,
                )
            },
            async |store| store.apply(events, source).await,
        )?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        for (scope, bsuid) in &applied.touched {
            self.phones.invalidate(&[scope], bsuid);
        }
        for (scope, event) in events {
            let (IdentityEvent::Seen(Observation { bsuid, .. }) | IdentityEvent::Retired { bsuid }) =
                event;
            self.phones.invalidate(&[scope], bsuid);
        }
        self.forget_claims(&applied.claims_dropped);
        Ok(applied)
    }

    fn forget_claims(&self, claims: &[ClaimKey]) {
        for claim in claims {
            let view = [claim.scope.as_str(), CLAIM_VIEW, &claim.number];
            self.phones.invalidate(&view, &claim.bsuid);
        }
    }

    /// Keeps the pair a successful send from `number` named, for that
    /// number alone, off the send's task so that its response does not wait
    /// (a disk flush on a blocking thread; a Redis round trip on a task of
    /// its own). The returned handle completes when the store has it (or
    /// has overruled it).
    pub fn learn_from_send(
        self: &Arc<Self>,
        scope: Scope<'_>,
        number: &str,
        phone: String,
        bsuid: String,
    ) -> tokio::task::JoinHandle<()> {
        let identities = self.clone();
        let (scope, number) = (scope.key().into_owned(), number.to_owned());
        match &self.store {
            Backend::Local(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    let claimed = store.claim(&scope, &number, &bsuid, &phone);
                    identities.after_claim(&scope, &number, &bsuid, claimed);
                })
            }
            Backend::Shared(store) => {
                let store = store.clone();
                tokio::spawn(async move {
                    let claimed = store.claim(&scope, &number, &bsuid, &phone).await;
                    identities.after_claim(&scope, &number, &bsuid, claimed);
                })
            }
        }
    }

    /// Forgets the cached claims a send's claim may have changed.
    fn after_claim(
        &self,
        scope: &str,
        number: &str,
        bsuid: &str,
        claimed: Result<Claimed, StoreError>,
    ) {
        self.writes.fetch_add(1, Ordering::AcqRel);
        let view = [scope, CLAIM_VIEW, number];
        self.phones.invalidate(&view, bsuid);
        match claimed {
            Ok(Claimed::Kept {
                displaced: Some(displaced),
            }) => self.phones.invalidate(&view, &displaced),
            Ok(_) => {}
            Err(err) => tracing::error!(error = %err, "learning from a send failed"),
        }
    }

    /// Every record an identifier names, in one scope or all (blocking).
    pub fn find(&self, id: &str, scope: Option<&str>) -> Result<Vec<Record>, StoreError> {
        self.run(
            |store| store.find(id, scope),
            async |store| Ok(store.find(id, scope).await?.records),
        )
    }

    /// Every record and every claim an identifier appears in, in one scope
    /// or all (blocking): what the admin lookup shows. Redis answers both in
    /// one round trip per scope.
    pub fn lookup(&self, id: &str, scope: Option<&str>) -> Result<Erased, StoreError> {
        self.run(
            |store| {
                Ok(Erased {
                    records: store.find(id, scope)?,
                    claims: store.find_claims(id, scope)?,
                })
            },
            async |store| store.find(id, scope).await,
        )
    }

    /// Erases a person (records and claims) from store and cache (blocking).
    /// In a fleet, every replica's cache hears of it.
    pub fn erase(&self, id: &str, scope: Option<&str>) -> Result<Erased, StoreError> {
        let erased = self.run(
            |store| store.erase(id, scope),
            async |store| store.erase(id, scope).await,
        )?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        for record in &erased.records {
            self.phones.invalidate(&[&record.scope], &record.bsuid);
            if let Some(parent) = &record.parent_bsuid {
                self.phones.invalidate(&[&record.scope], parent);
            }
        }
        let claims: Vec<ClaimKey> = erased.claims.iter().map(Claim::key).collect();
        self.forget_claims(&claims);
        Ok(erased)
    }

    /// Moves one scope's identities into another (blocking; an operator
    /// command, run offline). The embedded store only: a fleet's scopes
    /// are moved before `migrate-store`.
    pub fn move_scope(&self, from: &str, to: &str) -> Result<Moved, StoreError> {
        let Backend::Local(store) = &self.store else {
            return Err(StoreError::new(
                "move-scope works on the embedded store: move scopes there, then migrate-store",
            ));
        };
        let moved = store.move_scope(from, to)?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.phones.clear();
        Ok(moved)
    }

    /// How many people the store knows (blocking).
    pub fn len(&self) -> Result<u64, StoreError> {
        self.run(|store| store.len(), async |store| store.count().await)
    }

    /// True when the store knows nobody (blocking).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// The shared store, in a fleet.
    pub fn shared_store(&self) -> Option<&RedisStore> {
        match &self.store {
            Backend::Shared(store) => Some(store),
            Backend::Local(_) => None,
        }
    }
}

/// Between a scope's key and a number in the cache's key of that number's
/// claims (claims answer per number); no scope key holds a NUL.
const CLAIM_VIEW: &str = "\0";

#[cfg(test)]
mod tests {
    use super::*;

    const P: Scope<'static> = Scope::Portfolio("p");

    /// A local store's lookup, which never waits.
    fn now<T>(lookup: impl Future<Output = T>) -> T {
        futures_util::FutureExt::now_or_never(lookup).expect("a local lookup answers at once")
    }

    fn identities() -> Arc<Identities> {
        let store = RedbStore::in_memory().unwrap();
        Arc::new(Identities::new(store, 100, Duration::from_secs(60)))
    }

    fn seen(bsuid: &str, phone: &str) -> (String, IdentityEvent) {
        let observation = Observation {
            bsuid: bsuid.into(),
            phone: Some(phone.into()),
            ..Observation::default()
        };
        ("p".to_owned(), IdentityEvent::Seen(observation))
    }

    #[test]
    fn cache_hits_and_misses_are_counted() {
        let identities = identities();
        let family = Family::<ResultLabels, Counter>::default();
        identities.count_cache_in(family.clone());
        let count = |result| family.get_or_create(&ResultLabels { result }).get();
        assert_eq!((count("hit"), count("miss")), (0, 0));
        // The first lookup reads the store; its "no phone" is cached.
        assert_eq!(now(identities.phone_for_bsuid(P, "US.1")), None);
        assert_eq!((count("hit"), count("miss")), (0, 1));
        assert_eq!(now(identities.phone_for_bsuid(P, "US.1")), None);
        assert_eq!((count("hit"), count("miss")), (1, 1));
    }

    #[test]
    fn cached_answers_never_outlive_the_store() {
        let identities = identities();
        identities
            .apply(&[seen("US.1", "16315551234")], Source::Webhook)
            .unwrap();
        assert_eq!(
            now(identities.phone_for_bsuid(P, "US.1")).as_deref(),
            Some("16315551234")
        );
        // The phone moves to a new BSUID: the cached answer for the old one goes.
        identities
            .apply(&[seen("US.2", "16315551234")], Source::Webhook)
            .unwrap();
        assert_eq!(now(identities.phone_for_bsuid(P, "US.1")), None);
        assert_eq!(
            now(identities.phone_for_bsuid(P, "US.2")).as_deref(),
            Some("16315551234")
        );
        // Erasure empties the cache too.
        assert_eq!(
            identities.erase("16315551234", None).unwrap().records.len(),
            1
        );
        assert_eq!(now(identities.phone_for_bsuid(P, "US.2")), None);
        let left = identities.find("US.1", None).unwrap();
        assert_eq!(
            left.len(),
            1,
            "the recycled number's former holder stays, without it"
        );
        assert_eq!(left[0].phone, None);
    }

    #[test]
    fn unknown_bsuids_are_cached_as_unknown_until_the_store_learns_them() {
        let identities = identities();
        assert_eq!(now(identities.phone_for_bsuid(P, "US.9")), None);
        assert_eq!(
            identities.phones.get(&["p"], "US.9"),
            Some(None),
            "cached as no phone"
        );
        assert_eq!(now(identities.phone_for_bsuid(P, "US.9")), None);
        // A webhook teaches the pair: the cached "no phone" must not hide it.
        identities
            .apply(&[seen("US.9", "16315559999")], Source::Webhook)
            .unwrap();
        assert_eq!(
            now(identities.phone_for_bsuid(P, "US.9")).as_deref(),
            Some("16315559999")
        );
    }

    #[test]
    fn a_lookup_that_raced_a_write_caches_nothing() {
        let identities = identities();
        // A lookup reads "no phone" from the store, then a webhook writes the
        // pair (and invalidates) before the lookup caches its answer.
        let writes_seen = identities.writes.load(Ordering::Acquire);
        let Backend::Local(store) = &identities.store else {
            unreachable!()
        };
        assert_eq!(store.by_bsuid("p", "US.9").unwrap(), None);
        identities
            .apply(&[seen("US.9", "16315559999")], Source::Webhook)
            .unwrap();
        identities.remember(&["p"], "US.9", None, writes_seen);
        assert_eq!(
            identities.phones.get(&["p"], "US.9"),
            None,
            "stale answer not cached"
        );
        assert_eq!(
            now(identities.phone_for_bsuid(P, "US.9")).as_deref(),
            Some("16315559999")
        );
    }

    #[tokio::test]
    async fn a_send_claims_for_its_number_and_a_webhook_overrules_it() {
        let identities = identities();
        // Asked before: "no phone" is cached for both views.
        assert_eq!(now(identities.claimed_phone(P, "999", "US.1")), None);
        assert_eq!(now(identities.phone_for_bsuid(P, "US.1")), None);
        identities
            .learn_from_send(P, "999", "16315551234".into(), "US.1".into())
            .await
            .unwrap();
        assert_eq!(
            now(identities.claimed_phone(P, "999", "US.1")).as_deref(),
            Some("16315551234"),
            "the cached 'no phone' went"
        );
        assert_eq!(now(identities.claimed_phone(P, "123", "US.1")), None);
        assert_eq!(
            now(identities.phone_for_bsuid(P, "US.1")),
            None,
            "not trusted"
        );
        identities
            .apply(&[seen("US.1", "16505550000")], Source::Webhook)
            .unwrap();
        assert_eq!(
            now(identities.claimed_phone(P, "999", "US.1")),
            None,
            "the contradicted claim left the cache"
        );
        assert_eq!(
            now(identities.phone_for_bsuid(P, "US.1")).as_deref(),
            Some("16505550000")
        );
    }

    mod with_redis {
        //! The same histories through the embedded store and through Redis:
        //! both must end knowing the same.

        use std::time::Duration;

        use super::super::*;
        use crate::fleet::Fleet;
        use crate::fleet::limits::tests::LocalRedis;

        const P: Scope<'static> = Scope::Portfolio("p");

        fn both(redis: &LocalRedis) -> [Arc<Identities>; 2] {
            let fleet = Fleet::start(&redis.fleet_config(2000)).unwrap();
            let ttl = Duration::from_secs(60);
            [
                Arc::new(Identities::new(RedbStore::in_memory().unwrap(), 100, ttl)),
                Identities::shared(RedisStore::new(fleet), 100, ttl),
            ]
        }

        fn seen(bsuid: &str, phone: Option<&str>, parent: Option<&str>) -> (String, IdentityEvent) {
            let observation = Observation {
                bsuid: bsuid.into(),
                phone: phone.map(Into::into),
                parent_bsuid: parent.map(Into::into),
                username: None,
            };
            ("p".to_owned(), IdentityEvent::Seen(observation))
        }

        fn retired(bsuid: &str) -> (String, IdentityEvent) {
            let bsuid = bsuid.into();
            ("p".to_owned(), IdentityEvent::Retired { bsuid })
        }

        /// Everything a store says about a few identifiers, times left out.
        fn knowledge(identities: &Identities) -> Vec<String> {
            let mut lines = Vec::new();
            for id in [
                "US.1",
                "US.2",
                "US.3",
                "US.ENT.9",
                "16315551234",
                "16505550000",
            ] {
                let found = identities.lookup(id, None).unwrap();
                for mut record in found.records {
                    (record.first_seen, record.last_seen) = (0, 0);
                    record.attested_at = record.attested_at.map(|_| 1);
                    lines.push(format!("{id}: {record:?}"));
                }
                for mut claim in found.claims {
                    (claim.first_seen, claim.last_seen) = (0, 0);
                    lines.push(format!("{id}: {claim:?}"));
                }
            }
            lines
        }

        async fn on_blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
            tokio::task::spawn_blocking(work).await.unwrap()
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis_and_the_embedded_store_agree_on_every_history() {
            let redis = LocalRedis::start();
            let [local, shared] = both(&redis);
            let mut answers = Vec::new();
            for identities in [local, shared] {
                let history = identities.clone();
                let told = on_blocking(move || {
                    let identities = history;
                    let mut told = Vec::new();
                    let mut apply = |events: &[(String, IdentityEvent)], source| {
                        let applied = identities.apply(events, source).unwrap();
                        told.push((applied.inserted, applied.updated, applied.unchanged));
                        told.push((applied.retired, applied.claims_dropped.len() as u64, 0));
                    };
                    apply(
                        &[seen("US.1", Some("16315551234"), Some("US.ENT.9"))],
                        Source::Webhook,
                    );
                    apply(&[seen("US.1", Some("16315551234"), None)], Source::Webhook);
                    // The number is recycled: US.2 takes the phone from US.1.
                    apply(&[seen("US.2", Some("16315551234"), None)], Source::Import);
                    // US.3 is retired, and a later sighting cannot bring it back.
                    apply(&[seen("US.3", Some("16505550000"), None)], Source::Admin);
                    apply(&[retired("US.3")], Source::Webhook);
                    apply(&[seen("US.3", Some("16505550000"), None)], Source::Webhook);
                    told.push((identities.len().unwrap(), 0, 0));
                    let knowledge = knowledge(&identities);
                    (told, knowledge)
                })
                .await;
                answers.push((told, identities));
            }
            let (shared_told, shared) = answers.pop().unwrap();
            let (local_told, local) = answers.pop().unwrap();
            assert_eq!(shared_told, local_told);
            assert!(
                shared_told.1.iter().any(|line| line.contains("US.2")),
                "the history left something to compare: {:?}",
                shared_told.1
            );
            for identities in [&local, &shared] {
                assert_eq!(identities.phone_for_bsuid(P, "US.1").await, None);
                assert_eq!(
                    identities.phone_for_bsuid(P, "US.2").await.as_deref(),
                    Some("16315551234")
                );
                assert_eq!(
                    identities.phone_for_bsuid(P, "US.ENT.9").await,
                    None,
                    "the parent's person lost the phone"
                );
                assert_eq!(identities.phone_for_bsuid(P, "US.3").await, None);
                assert_eq!(
                    identities
                        .bsuid_for_phone(P, "16315551234")
                        .await
                        .as_deref(),
                    Some("US.2")
                );
            }
        }

        /// Webhooks repeat what is known (a status per message sent): a
        /// sighting that changes nothing must not empty the other replicas'
        /// caches, or every send after it goes to Redis again.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn only_a_sighting_that_changes_something_reaches_other_replicas() {
            let redis = LocalRedis::start();
            let ttl = Duration::from_secs(60);
            let replica = || {
                let fleet = Fleet::start(&redis.fleet_config(2000)).unwrap();
                Identities::shared(RedisStore::new(fleet), 100, ttl)
            };
            let (a, b) = (replica(), replica());
            // B counts in `writes` the notices it hears: its subscription
            // (which empties its cache), then one per message. Waiting for
            // each leaves nothing on its way to B when it caches.
            let hears = |notices: u64| {
                let b = b.clone();
                async move {
                    for _ in 0..200 {
                        if b.writes.load(Ordering::Acquire) >= notices {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    panic!("B did not hear {notices} notices within 2 s");
                }
            };
            let sight = |bsuid: &'static str, phone: &'static str| {
                let a = a.clone();
                on_blocking(move || {
                    a.apply(&[seen(bsuid, Some(phone), None)], Source::Webhook)
                        .unwrap()
                })
            };
            hears(1).await;
            sight("US.1", "16315551234").await;
            hears(2).await;
            // B caches US.1's phone and that US.2 has none.
            let us1 = Some("16315551234".to_owned());
            assert_eq!(b.phone_for_bsuid(P, "US.1").await, us1);
            assert_eq!(b.phone_for_bsuid(P, "US.2").await, None);
            assert_eq!(b.phones.get(&["p"], "US.1"), Some(us1.clone()));
            assert_eq!(b.phones.get(&["p"], "US.2"), Some(None));
            // The same sighting of US.1 again, then news of US.2: messages
            // arrive in order, so once B knows US.2's phone it has heard
            // whatever the repeated sighting sent.
            assert_eq!(sight("US.1", "16315551234").await.unchanged, 1);
            assert_eq!(sight("US.2", "16505550000").await.inserted, 1);
            let mut heard = false;
            for _ in 0..200 {
                if b.phone_for_bsuid(P, "US.2").await.is_some() {
                    heard = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(heard, "B heard the news within 2 s");
            assert_eq!(
                b.phones.get(&["p"], "US.1"),
                Some(us1),
                "the repeated sighting emptied B's cache"
            );
            assert_eq!(
                b.writes.load(Ordering::Acquire),
                3,
                "B heard its subscription and two changes, nothing more"
            );
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn claims_and_erasure_agree_too() {
            let redis = LocalRedis::start();
            let [local, shared] = both(&redis);
            let mut seen_by = Vec::new();
            for identities in [local, shared] {
                identities
                    .learn_from_send(P, "999", "16315551234".into(), "US.1".into())
                    .await
                    .unwrap();
                let claimed = identities.claimed_phone(P, "999", "US.1").await;
                let other = identities.claimed_phone(P, "123", "US.1").await;
                let history = identities.clone();
                let (after_webhook, erased, left) = on_blocking(move || {
                    let identities = history;
                    identities
                        .apply(&[seen("US.1", Some("16505550000"), None)], Source::Webhook)
                        .unwrap();
                    let after_webhook = knowledge(&identities);
                    let erased = identities.erase("16505550000", None).unwrap();
                    (after_webhook, erased.records.len(), knowledge(&identities))
                })
                .await;
                let trusted = identities.phone_for_bsuid(P, "US.1").await;
                seen_by.push((claimed, other, after_webhook, erased, left, trusted));
            }
            assert_eq!(seen_by[0], seen_by[1]);
            let (claimed, other, _, erased, left, trusted) = &seen_by[1];
            assert_eq!(claimed.as_deref(), Some("16315551234"));
            assert_eq!(*other, None);
            assert_eq!((*erased, left.len(), trusted), (1, 0, &None));
        }
    }
}
