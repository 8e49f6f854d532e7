//! What sendgate knows about people: phone ↔ BSUID mappings per portfolio
//! (design.md §4).
//!
//! BSUIDs are portfolio-scoped (cloud-api.md §1), so every mapping is keyed by
//! the portfolio of the business number that saw it; a mapping learned in one
//! portfolio never answers for another. Phones are stored as digits only, the
//! way Meta reports a `wa_id`.

mod cache;

pub use cache::CachedIdentities;

/// One person's identifiers within a portfolio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The phone, digits only.
    pub phone: String,
    /// The BSUID (or parent BSUID), exactly as Meta gave it.
    pub bsuid: String,
}

/// Where mappings live. Lookups are on the send path, so they must be cheap;
/// implementations are synchronous and must not block for long.
pub trait IdentityStore: Send + Sync + 'static {
    /// The phone known for a BSUID in a portfolio.
    fn phone_for_bsuid(&self, portfolio: &str, bsuid: &str) -> Option<String>;
    /// The BSUID known for a phone (digits only) in a portfolio.
    fn bsuid_for_phone(&self, portfolio: &str, phone: &str) -> Option<String>;
    /// Records that a phone and a BSUID are the same person in a portfolio.
    fn learn(&self, portfolio: &str, mapping: Mapping);
}
