//! What sendgate knows about people: phone ↔ BSUID mappings per portfolio
//! (design.md §4).
//!
//! BSUIDs are portfolio-scoped (cloud-api.md §1), so every mapping is keyed by
//! the portfolio of the business number that saw it; a mapping learned in one
//! portfolio never answers for another. Phones are stored as digits only, the
//! way Meta reports a `wa_id`.
//!
//! [`Identities`] is a moka cache of BSUID → phone in front of the durable
//! [`RedbStore`]. Writes go to the store first and then drop the cache
//! entries they make stale, so the cache can only ever lag behind by a miss.

mod cache;
pub mod import;
mod model;
mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::ResultLabels;

pub use cache::PhoneCache;
pub use model::{IdentityEvent, Observation, Record, Source};
pub use store::{Applied, RedbStore, StoreError};

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
    pub fn count_cache_in(&self, family: Family<ResultLabels, Counter>) {
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

    /// The phone known for a BSUID (or parent BSUID) in a portfolio. A store
    /// failure is logged and answered as "unknown": the send then goes out
    /// as the sender wrote it.
    pub fn phone_for_bsuid(&self, portfolio: &str, bsuid: &str) -> Option<String> {
        if let Some(cached) = self.phones.get(portfolio, bsuid) {
            self.count(|counters| &counters.hit);
            return cached;
        }
        self.count(|counters| &counters.miss);
        let writes = self.writes.load(Ordering::Acquire);
        let found = if bsuid.contains(".ENT.") {
            self.store.by_parent(portfolio, bsuid)
        } else {
            self.store.by_bsuid(portfolio, bsuid)
        };
        let phone = match found {
            Ok(record) => record.and_then(|record| record.phone),
            Err(err) => {
                tracing::error!(error = %err, "identity lookup failed");
                return None;
            }
        };
        self.remember(portfolio, bsuid, phone.as_deref(), writes);
        phone
    }

    /// Caches what the store answered for a BSUID, unless a write happened
    /// since `writes_seen` (read before the store was): the answer may be
    /// stale, and the write's invalidation has already passed.
    fn remember(&self, portfolio: &str, bsuid: &str, phone: Option<&str>, writes_seen: u64) {
        if self.writes.load(Ordering::Acquire) != writes_seen {
            return;
        }
        match phone {
            Some(phone) => self.phones.insert(portfolio, bsuid, phone),
            None => self.phones.insert_none(portfolio, bsuid),
        }
    }

    /// The BSUID a phone (digits) belongs to in a portfolio, read from the
    /// store: the pair limit keys a person by it.
    pub fn bsuid_for_phone(&self, portfolio: &str, phone: &str) -> Option<String> {
        match self.store.by_phone(portfolio, phone) {
            Ok(record) => record.map(|record| record.bsuid),
            Err(err) => {
                tracing::error!(error = %err, "identity lookup failed");
                None
            }
        }
    }

    /// Applies events durably (blocking: call from a blocking context), then
    /// forgets cached answers they may have changed.
    pub fn apply(
        &self,
        events: &[(String, IdentityEvent)],
        source: Source,
    ) -> Result<Applied, StoreError> {
        let applied = self.store.apply(
            events
                .iter()
                .map(|(portfolio, event)| (portfolio.as_str(), event)),
            source,
        )?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        for (portfolio, bsuid) in &applied.touched {
            self.phones.invalidate(portfolio, bsuid);
        }
        for (portfolio, event) in events {
            let (IdentityEvent::Seen(Observation { bsuid, .. }) | IdentityEvent::Retired { bsuid }) =
                event;
            self.phones.invalidate(portfolio, bsuid);
        }
        Ok(applied)
    }

    /// Records the pair a successful send proved: in the cache at once, so the
    /// sender's next send already resolves, and in the store off the async
    /// runtime, so the send's response does not wait for a disk flush.
    /// The returned handle completes when the store has it.
    pub fn learn_from_send(
        self: &Arc<Self>,
        portfolio: &str,
        phone: String,
        bsuid: String,
    ) -> tokio::task::JoinHandle<()> {
        self.phones.insert(portfolio, &bsuid, &phone);
        let identities = self.clone();
        let event = IdentityEvent::Seen(Observation {
            bsuid,
            phone: Some(phone),
            ..Observation::default()
        });
        let events = vec![(portfolio.to_owned(), event)];
        tokio::task::spawn_blocking(move || {
            if let Err(err) = identities.apply(&events, Source::Send) {
                tracing::error!(error = %err, "learning from a send failed");
            }
        })
    }

    /// Every record an identifier names, in one portfolio or all.
    pub fn find(&self, id: &str, portfolio: Option<&str>) -> Result<Vec<Record>, StoreError> {
        self.store.find(id, portfolio)
    }

    /// Erases a person from store and cache (blocking).
    pub fn erase(&self, id: &str, portfolio: Option<&str>) -> Result<Vec<Record>, StoreError> {
        let removed = self.store.erase(id, portfolio)?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        for record in &removed {
            self.phones.invalidate(&record.portfolio, &record.bsuid);
            if let Some(parent) = &record.parent_bsuid {
                self.phones.invalidate(&record.portfolio, parent);
            }
        }
        Ok(removed)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(identities.phone_for_bsuid("p", "US.1"), None);
        assert_eq!((count("hit"), count("miss")), (0, 1));
        assert_eq!(identities.phone_for_bsuid("p", "US.1"), None);
        assert_eq!((count("hit"), count("miss")), (1, 1));
    }

    #[test]
    fn cached_answers_never_outlive_the_store() {
        let identities = identities();
        identities
            .apply(&[seen("US.1", "16315551234")], Source::Webhook)
            .unwrap();
        assert_eq!(
            identities.phone_for_bsuid("p", "US.1").as_deref(),
            Some("16315551234")
        );
        // The phone moves to a new BSUID: the cached answer for the old one goes.
        identities
            .apply(&[seen("US.2", "16315551234")], Source::Webhook)
            .unwrap();
        assert_eq!(identities.phone_for_bsuid("p", "US.1"), None);
        assert_eq!(
            identities.phone_for_bsuid("p", "US.2").as_deref(),
            Some("16315551234")
        );
        // Erasure empties the cache too.
        assert_eq!(identities.erase("16315551234", None).unwrap().len(), 1);
        assert_eq!(identities.phone_for_bsuid("p", "US.2"), None);
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
        assert_eq!(identities.phone_for_bsuid("p", "US.9"), None);
        assert_eq!(
            identities.phones.get("p", "US.9"),
            Some(None),
            "cached as no phone"
        );
        assert_eq!(identities.phone_for_bsuid("p", "US.9"), None);
        // A webhook teaches the pair: the cached "no phone" must not hide it.
        identities
            .apply(&[seen("US.9", "16315559999")], Source::Webhook)
            .unwrap();
        assert_eq!(
            identities.phone_for_bsuid("p", "US.9").as_deref(),
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
        identities.remember("p", "US.9", None, writes_seen);
        assert_eq!(
            identities.phones.get("p", "US.9"),
            None,
            "stale answer not cached"
        );
        assert_eq!(
            identities.phone_for_bsuid("p", "US.9").as_deref(),
            Some("16315559999")
        );
    }

    #[tokio::test]
    async fn a_send_teaches_the_cache_at_once_and_the_store_soon() {
        let identities = identities();
        identities.learn_from_send("p", "16315551234".into(), "US.1".into());
        assert_eq!(
            identities.phone_for_bsuid("p", "US.1").as_deref(),
            Some("16315551234")
        );
        for _ in 0..200 {
            if identities.len().unwrap() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the store never learned the pair");
    }
}
