//! The BSUID → phone cache in front of the store: compact, bounded, and
//! cheap enough to ask on every send.
//!
//! A general-purpose cache keeps each key and value as heap strings plus its
//! own bookkeeping, a few hundred bytes per mapping. Here a mapping is two
//! 64-bit words: the key is one half of a 128-bit keyed hash of (scope,
//! BSUID), verified by the other half (a wrong answer needs all 128 bits to
//! collide), and the phone is its digits packed into an integer. A scope
//! is given as the parts its key is made of (`["number:", id]`), hashed as
//! their concatenation, so that no lookup has to spell it out.
//!
//! A BSUID the store has no phone for is cached too, as "no phone", since
//! most BSUID sends are to people whose number is hidden and would
//! otherwise each read the store.
//!
//! Bounded memory and idle expiry come from two generations: new and
//! refreshed mappings go to the young map; when it holds half the capacity,
//! or has lived half the time-to-idle, it becomes the old map and the
//! previous old one is dropped. A hit in the old map moves the mapping back
//! to the young one, so what is used stays and what is idle for a whole
//! time-to-idle (or pushed out by newer mappings) goes.

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use siphasher::sip128::{Hasher128, SipHasher13};

use super::scope::hash_parts;
use crate::prehashed::PreHashed;

/// One cached phone: a check hash of the key, and the phone's digits.
#[derive(Clone, Copy)]
struct Entry {
    check: u64,
    phone: PackedPhone,
}

/// Up to 15 decimal digits (E.164) in the low 56 bits, the digit count in
/// the high 8, so leading zeros survive.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct PackedPhone(u64);

impl PackedPhone {
    /// "The store has no phone for this BSUID": a digit count of zero, which
    /// no phone packs to.
    const NONE: PackedPhone = PackedPhone(0);

    fn pack(digits: &str) -> Option<Self> {
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: u64 = digits.parse().ok()?;
        Some(PackedPhone(value | (digits.len() as u64) << 56))
    }

    fn unpack(self) -> Option<String> {
        let len = (self.0 >> 56) as usize;
        (len > 0).then(|| format!("{:0len$}", self.0 & ((1 << 56) - 1)))
    }
}

type Map = DashMap<u64, Entry, PreHashed>;

struct Generations {
    young: Arc<Map>,
    old: Arc<Map>,
    born: Instant,
}

/// A bounded BSUID → phone cache, per scope.
pub struct PhoneCache {
    generations: ArcSwap<Generations>,
    /// Inserts into the young map since it was born.
    young_inserts: AtomicUsize,
    /// Serialises rotations; lookups never take it.
    rotating: Mutex<()>,
    /// Keyed at random per process, so that no one can pick BSUIDs that
    /// collide. One 128-bit hash gives both the map key and its check: two
    /// std 64-bit hashes of the same input cost twice the rounds.
    hasher: SipHasher13,
    /// Mappings per generation: half the capacity.
    generation_size: usize,
    /// A generation's life: half the time-to-idle.
    generation_age: Duration,
}

impl PhoneCache {
    /// About `capacity` mappings at most; one unused for `ttl` is gone.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        PhoneCache {
            generations: ArcSwap::from_pointee(Self::fresh(None)),
            young_inserts: AtomicUsize::new(0),
            rotating: Mutex::new(()),
            hasher: random_sip_hasher(),
            generation_size: usize::try_from(capacity / 2).unwrap_or(usize::MAX).max(1),
            generation_age: ttl / 2,
        }
    }

    fn fresh(old: Option<Arc<Map>>) -> Generations {
        Generations {
            young: Arc::new(Map::with_hasher(PreHashed)),
            old: old.unwrap_or_else(|| Arc::new(Map::with_hasher(PreHashed))),
            born: Instant::now(),
        }
    }

    /// The map key and the check of a (scope, BSUID).
    fn hashes(&self, scope: &[&str], bsuid: &str) -> (u64, u64) {
        let mut hasher = self.hasher;
        hash_parts(&mut hasher, scope);
        bsuid.hash(&mut hasher);
        hasher.finish128().as_u64()
    }

    /// What is cached for a BSUID in a scope (given by the parts of its
    /// key): `None` if nothing, `Some(None)` if it is known to have no
    /// phone, else its phone (digits).
    pub fn get(&self, scope: &[&str], bsuid: &str) -> Option<Option<String>> {
        let (key, check) = self.hashes(scope, bsuid);
        let generations = self.generations.load();
        if let Some(entry) = generations.young.get(&key) {
            return (entry.check == check).then(|| entry.phone.unpack());
        }
        let entry = *generations.old.get(&key)?;
        if entry.check != check {
            return None;
        }
        // Still in use: keep it for another generation.
        drop(generations);
        self.put(key, entry);
        Some(entry.phone.unpack())
    }

    /// Caches a phone (digits only) for a BSUID. A value that is not a phone
    /// is not cached; the store still answers for it.
    pub fn insert(&self, scope: &[&str], bsuid: &str, phone: &str) {
        let Some(phone) = PackedPhone::pack(phone) else {
            return;
        };
        let (key, check) = self.hashes(scope, bsuid);
        self.put(key, Entry { check, phone });
    }

    /// Caches that a BSUID has no phone.
    pub fn insert_none(&self, scope: &[&str], bsuid: &str) {
        let (key, check) = self.hashes(scope, bsuid);
        let phone = PackedPhone::NONE;
        self.put(key, Entry { check, phone });
    }

    fn put(&self, key: u64, entry: Entry) {
        let generations = self.generations.load();
        generations.young.insert(key, entry);
        let inserts = self.young_inserts.fetch_add(1, Ordering::Relaxed) + 1;
        if inserts >= self.generation_size || generations.born.elapsed() >= self.generation_age {
            drop(generations);
            self.rotate();
        }
    }

    /// The young generation becomes the old one; the old one is dropped.
    fn rotate(&self) {
        let Ok(_rotating) = self.rotating.try_lock() else {
            return; // another thread is rotating right now
        };
        let current = self.generations.load_full();
        let full = self.young_inserts.load(Ordering::Relaxed) >= self.generation_size;
        if !full && current.born.elapsed() < self.generation_age {
            return; // rotated meanwhile
        }
        self.generations
            .store(Arc::new(Self::fresh(Some(current.young.clone()))));
        self.young_inserts.store(0, Ordering::Relaxed);
    }

    /// Forgets a BSUID's phone.
    pub fn invalidate(&self, scope: &[&str], bsuid: &str) {
        let (key, _) = self.hashes(scope, bsuid);
        let generations = self.generations.load();
        generations.young.remove(&key);
        generations.old.remove(&key);
    }

    /// Forgets everything (after an operator moved whole scopes).
    pub fn clear(&self) {
        let generations = self.generations.load();
        generations.young.clear();
        generations.old.clear();
    }

    /// Mappings held now (both generations; a refreshed one may count twice).
    pub fn len(&self) -> usize {
        let generations = self.generations.load();
        generations.young.len() + generations.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A SipHash-1-3 (std's own choice) with 128 random key bits, taken from
/// std's per-process random keys so that making it cannot fail.
fn random_sip_hasher() -> SipHasher13 {
    let random = RandomState::new();
    SipHasher13::new_with_keys(random.hash_one(0_u8), random.hash_one(1_u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_round_trip_with_their_leading_zeros() {
        for digits in ["16315551234", "0044207946", "1", "123456789012345"] {
            let unpacked = PackedPhone::pack(digits).unwrap().unpack();
            assert_eq!(unpacked.as_deref(), Some(digits));
        }
        assert_eq!(PackedPhone::NONE.unpack(), None);
        assert_eq!(PackedPhone::pack("1234567890123456"), None, "16 digits");
        assert_eq!(PackedPhone::pack("+1631"), None);
        assert_eq!(PackedPhone::pack(""), None);
    }

    #[test]
    fn answers_per_portfolio_and_forgets_on_request() {
        let cache = PhoneCache::new(100, Duration::from_secs(60));
        cache.insert(&["a"], "US.1", "16315551234");
        assert_eq!(cache.get(&["a"], "US.1"), Some(Some("16315551234".into())));
        assert_eq!(cache.get(&["b"], "US.1"), None);
        assert_eq!(cache.get(&["a"], "US.2"), None);
        cache.insert_none(&["a"], "US.2");
        assert_eq!(
            cache.get(&["a"], "US.2"),
            Some(None),
            "known to have no phone"
        );
        cache.invalidate(&["a"], "US.1");
        cache.invalidate(&["a"], "US.2");
        assert_eq!(cache.get(&["a"], "US.1"), None);
        assert_eq!(cache.get(&["a"], "US.2"), None);
    }

    #[test]
    fn memory_is_bounded_and_used_entries_survive_rotation() {
        let cache = PhoneCache::new(100, Duration::from_secs(3600));
        cache.insert(&["a"], "US.keep", "16315551234");
        for i in 0..1000 {
            cache.insert(&["a"], &format!("US.{i}"), "16505550000");
            // Touching a mapping keeps it young.
            assert!(cache.get(&["a"], "US.keep").is_some(), "kept at {i}");
        }
        assert!(cache.len() <= 101, "bounded: {}", cache.len());
        assert_eq!(cache.get(&["a"], "US.0"), None, "the oldest went");
    }

    #[test]
    fn idle_entries_expire_after_the_time_to_idle() {
        let cache = PhoneCache::new(1000, Duration::from_millis(20));
        cache.insert(&["a"], "US.1", "16315551234");
        std::thread::sleep(Duration::from_millis(15));
        cache.insert(&["a"], "US.2", "16315551234"); // rotates: US.1 is old now
        std::thread::sleep(Duration::from_millis(15));
        cache.insert(&["a"], "US.3", "16315551234"); // rotates again: US.1 is gone
        assert_eq!(cache.get(&["a"], "US.1"), None);
        assert!(cache.get(&["a"], "US.3").is_some());
    }
}
