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
mod scope;
mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::ResultLabels;

pub use cache::PhoneCache;
pub use model::{Claim, ClaimKey, IdentityEvent, Observation, Record, Source};
pub use scope::{NUMBER_SCOPE_PREFIX, Scope};
pub use store::{
    Applied, Claimed, Erased, LEGACY_DEFAULT_SCOPE, Migration, Moved, RedbStore, StoreError,
};

/// The identity service shared by the send path, the webhook relay and the
/// admin API.
pub struct Identities {
    store: RedbStore,
    /// (portfolio, BSUID) → phone digits, or "no phone".
    phones: PhoneCache,
    /// Bumped after every store write, before the cache entries it touched
    /// are invalidated: a lookup caches what it read from the store only if
    /// no write happened meanwhile, so an answer read just before a write
    /// cannot land in the cache after that write's invalidation.
    writes: AtomicU64,
    /// Where cache hits and misses are counted, once metrics exist.
    cache_counters: OnceLock<CacheCounters>,
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
        let phones = PhoneCache::new(capacity, ttl);
        Identities {
            store,
            phones,
            writes: AtomicU64::new(0),
            cache_counters: OnceLock::new(),
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

    /// The phone `number` may use for a BSUID: what a trusted source gave
    /// its scope, else, when `with_claims` (`identity.learn_from_sends`),
    /// what this number's own sends claimed.
    pub fn phone_for(
        &self,
        scope: Scope<'_>,
        number: &str,
        bsuid: &str,
        with_claims: bool,
    ) -> Option<String> {
        self.phone_for_bsuid(scope, bsuid).or_else(|| {
            with_claims
                .then(|| self.claimed_phone(scope, number, bsuid))
                .flatten()
        })
    }

    /// The phone a trusted source gave a BSUID (or parent BSUID) in a
    /// scope. A store failure is logged and answered as "unknown": the send
    /// then goes out as the sender wrote it.
    pub fn phone_for_bsuid(&self, scope: Scope<'_>, bsuid: &str) -> Option<String> {
        self.cached_or(&scope.parts(), bsuid, || {
            let key = scope.key();
            if bsuid.contains(".ENT.") {
                self.store.by_parent(&key, bsuid)
            } else {
                self.store.by_bsuid(&key, bsuid)
            }
            .map(|record| record.and_then(|record| record.phone))
        })
    }

    /// The phone a send from `number` claimed for a BSUID (only asked when
    /// `identity.learn_from_sends` is on and no trusted phone is known).
    pub fn claimed_phone(&self, scope: Scope<'_>, number: &str, bsuid: &str) -> Option<String> {
        let [prefix, name] = scope.parts();
        self.cached_or(&[prefix, name, CLAIM_VIEW, number], bsuid, || {
            self.store.claimed_phone(&scope.key(), number, bsuid)
        })
    }

    /// The cached answer for (cache scope, BSUID), else what `read` gets
    /// from the store, cached.
    fn cached_or(
        &self,
        cache_scope: &[&str],
        bsuid: &str,
        read: impl FnOnce() -> Result<Option<String>, StoreError>,
    ) -> Option<String> {
        if let Some(cached) = self.phones.get(cache_scope, bsuid) {
            self.count(|counters| &counters.hit);
            return cached;
        }
        self.count(|counters| &counters.miss);
        let writes = self.writes.load(Ordering::Acquire);
        let phone = match read() {
            Ok(phone) => phone,
            Err(err) => {
                tracing::error!(error = %err, "identity lookup failed");
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
    pub fn bsuid_for_phone(&self, scope: Scope<'_>, phone: &str) -> Option<String> {
        match self.store.by_phone(&scope.key(), phone) {
            Ok(record) => record.map(|record| record.bsuid),
            Err(err) => {
                tracing::error!(error = %err, "identity lookup failed");
                None
            }
        }
    }

    /// Applies events of a trusted source durably (blocking: call from a
    /// blocking context), then forgets cached answers they may have changed.
    pub fn apply(
        &self,
        events: &[(String, IdentityEvent)],
        source: Source,
    ) -> Result<Applied, StoreError> {
        let applied = self.store.apply(
            events.iter().map(|(scope, event)| (scope.as_str(), event)),
            source,
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
    /// number alone, off the async runtime so that the send's response does
    /// not wait for a disk flush. The returned handle completes when the
    /// store has it (or has overruled it).
    pub fn learn_from_send(
        self: &Arc<Self>,
        scope: Scope<'_>,
        number: &str,
        phone: String,
        bsuid: String,
    ) -> tokio::task::JoinHandle<()> {
        let identities = self.clone();
        let (scope, number) = (scope.key().into_owned(), number.to_owned());
        tokio::task::spawn_blocking(move || {
            let claimed = identities.store.claim(&scope, &number, &bsuid, &phone);
            identities.writes.fetch_add(1, Ordering::AcqRel);
            let view = [scope.as_str(), CLAIM_VIEW, &number];
            identities.phones.invalidate(&view, &bsuid);
            match claimed {
                Ok(Claimed::Kept {
                    displaced: Some(displaced),
                }) => identities.phones.invalidate(&view, &displaced),
                Ok(_) => {}
                Err(err) => tracing::error!(error = %err, "learning from a send failed"),
            }
        })
    }

    /// Every record an identifier names, in one scope or all.
    pub fn find(&self, id: &str, scope: Option<&str>) -> Result<Vec<Record>, StoreError> {
        self.store.find(id, scope)
    }

    /// Every claim an identifier appears in, in one scope or all.
    pub fn find_claims(&self, id: &str, scope: Option<&str>) -> Result<Vec<Claim>, StoreError> {
        self.store.find_claims(id, scope)
    }

    /// Erases a person (records and claims) from store and cache (blocking).
    pub fn erase(&self, id: &str, scope: Option<&str>) -> Result<Erased, StoreError> {
        let erased = self.store.erase(id, scope)?;
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
    /// command, run offline).
    pub fn move_scope(&self, from: &str, to: &str) -> Result<Moved, StoreError> {
        let moved = self.store.move_scope(from, to)?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        self.phones.clear();
        Ok(moved)
    }

    /// How many people the store knows.
    pub fn len(&self) -> Result<u64, StoreError> {
        self.store.len()
    }

    /// True when the store knows nobody.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.store.is_empty()
    }
}

/// Between a scope's key and a number in the cache's key of that number's
/// claims (claims answer per number); no scope key holds a NUL.
const CLAIM_VIEW: &str = "\0";

#[cfg(test)]
mod tests {
    use super::*;

    const P: Scope<'static> = Scope::Portfolio("p");

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
        assert_eq!(identities.phone_for_bsuid(P, "US.1"), None);
        assert_eq!((count("hit"), count("miss")), (0, 1));
        assert_eq!(identities.phone_for_bsuid(P, "US.1"), None);
        assert_eq!((count("hit"), count("miss")), (1, 1));
    }

    #[test]
    fn cached_answers_never_outlive_the_store() {
        let identities = identities();
        identities
            .apply(&[seen("US.1", "16315551234")], Source::Webhook)
            .unwrap();
        assert_eq!(
            identities.phone_for_bsuid(P, "US.1").as_deref(),
            Some("16315551234")
        );
        // The phone moves to a new BSUID: the cached answer for the old one goes.
        identities
            .apply(&[seen("US.2", "16315551234")], Source::Webhook)
            .unwrap();
        assert_eq!(identities.phone_for_bsuid(P, "US.1"), None);
        assert_eq!(
            identities.phone_for_bsuid(P, "US.2").as_deref(),
            Some("16315551234")
        );
        // Erasure empties the cache too.
        assert_eq!(
            identities.erase("16315551234", None).unwrap().records.len(),
            1
        );
        assert_eq!(identities.phone_for_bsuid(P, "US.2"), None);
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
        assert_eq!(identities.phone_for_bsuid(P, "US.9"), None);
        assert_eq!(
            identities.phones.get(&["p"], "US.9"),
            Some(None),
            "cached as no phone"
        );
        assert_eq!(identities.phone_for_bsuid(P, "US.9"), None);
        // A webhook teaches the pair: the cached "no phone" must not hide it.
        identities
            .apply(&[seen("US.9", "16315559999")], Source::Webhook)
            .unwrap();
        assert_eq!(
            identities.phone_for_bsuid(P, "US.9").as_deref(),
            Some("16315559999")
        );
    }

    #[test]
    fn a_lookup_that_raced_a_write_caches_nothing() {
        let identities = identities();
        // A lookup reads "no phone" from the store, then a webhook writes the
        // pair (and invalidates) before the lookup caches its answer.
        let writes_seen = identities.writes.load(Ordering::Acquire);
        assert_eq!(identities.store.by_bsuid("p", "US.9").unwrap(), None);
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
            identities.phone_for_bsuid(P, "US.9").as_deref(),
            Some("16315559999")
        );
    }

    #[tokio::test]
    async fn a_send_claims_for_its_number_and_a_webhook_overrules_it() {
        let identities = identities();
        // Asked before: "no phone" is cached for both views.
        assert_eq!(identities.claimed_phone(P, "999", "US.1"), None);
        assert_eq!(identities.phone_for_bsuid(P, "US.1"), None);
        identities
            .learn_from_send(P, "999", "16315551234".into(), "US.1".into())
            .await
            .unwrap();
        assert_eq!(
            identities.claimed_phone(P, "999", "US.1").as_deref(),
            Some("16315551234"),
            "the cached 'no phone' went"
        );
        assert_eq!(identities.claimed_phone(P, "123", "US.1"), None);
        assert_eq!(identities.phone_for_bsuid(P, "US.1"), None, "not trusted");
        identities
            .apply(&[seen("US.1", "16505550000")], Source::Webhook)
            .unwrap();
        assert_eq!(
            identities.claimed_phone(P, "999", "US.1"),
            None,
            "the contradicted claim left the cache"
        );
        assert_eq!(
            identities.phone_for_bsuid(P, "US.1").as_deref(),
            Some("16505550000")
        );
    }
}
