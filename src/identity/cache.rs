//! The in-memory resolution cache: bounded, with a time-to-live, safe to
//! share across all connections.

use std::time::Duration;

use moka::sync::Cache;

use super::{IdentityStore, Mapping};

/// phone ↔ BSUID mappings in two moka caches, one per lookup direction.
pub struct CachedIdentities {
    /// `portfolio \0 bsuid` → phone digits.
    by_bsuid: Cache<String, String>,
    /// `portfolio \0 phone` → BSUID.
    by_phone: Cache<String, String>,
}

impl CachedIdentities {
    /// `capacity` counts mappings; each takes one entry in each direction.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let build = || {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(ttl)
                .build()
        };
        CachedIdentities {
            by_bsuid: build(),
            by_phone: build(),
        }
    }
}

/// A NUL cannot appear in a portfolio name from TOML keys we accept nor in an
/// identifier, so it separates the two unambiguously.
fn key(portfolio: &str, id: &str) -> String {
    let mut key = String::with_capacity(portfolio.len() + 1 + id.len());
    key.push_str(portfolio);
    key.push('\0');
    key.push_str(id);
    key
}

impl IdentityStore for CachedIdentities {
    fn phone_for_bsuid(&self, portfolio: &str, bsuid: &str) -> Option<String> {
        self.by_bsuid.get(&key(portfolio, bsuid))
    }

    fn bsuid_for_phone(&self, portfolio: &str, phone: &str) -> Option<String> {
        self.by_phone.get(&key(portfolio, phone))
    }

    fn learn(&self, portfolio: &str, mapping: Mapping) {
        // One person has one phone and one BSUID per portfolio: a phone that
        // now belongs to a new BSUID (a recycled number) or a BSUID that now has
        // a new phone must not leave the old partner resolving to it.
        if let Some(old_bsuid) = self.by_phone.get(&key(portfolio, &mapping.phone))
            && old_bsuid != mapping.bsuid
        {
            self.by_bsuid.invalidate(&key(portfolio, &old_bsuid));
        }
        if let Some(old_phone) = self.by_bsuid.get(&key(portfolio, &mapping.bsuid))
            && old_phone != mapping.phone
        {
            self.by_phone.invalidate(&key(portfolio, &old_phone));
        }
        self.by_bsuid
            .insert(key(portfolio, &mapping.bsuid), mapping.phone.clone());
        self.by_phone
            .insert(key(portfolio, &mapping.phone), mapping.bsuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(phone: &str, bsuid: &str) -> Mapping {
        Mapping {
            phone: phone.into(),
            bsuid: bsuid.into(),
        }
    }

    #[test]
    fn learns_both_directions_per_portfolio() {
        let store = CachedIdentities::new(100, Duration::from_secs(60));
        store.learn("a", mapping("16315551234", "US.1"));
        assert_eq!(
            store.phone_for_bsuid("a", "US.1").as_deref(),
            Some("16315551234")
        );
        assert_eq!(
            store.bsuid_for_phone("a", "16315551234").as_deref(),
            Some("US.1")
        );
        assert_eq!(
            store.phone_for_bsuid("b", "US.1"),
            None,
            "portfolios never mix"
        );
    }

    #[test]
    fn a_new_bsuid_for_a_phone_retires_the_old_one() {
        let store = CachedIdentities::new(100, Duration::from_secs(60));
        store.learn("a", mapping("16315551234", "US.1"));
        store.learn("a", mapping("16315551234", "US.2"));
        assert_eq!(store.phone_for_bsuid("a", "US.1"), None);
        assert_eq!(
            store.phone_for_bsuid("a", "US.2").as_deref(),
            Some("16315551234")
        );
    }
}
