//! Where identities are kept: the portfolio a business number is in, or
//! the number alone when config puts it in none.
//!
//! A scope is named by a key in the store (`acme`, `number:106540352242922`).
//! On the send path it stays two borrowed parts, so that asking the cache
//! about a number with no portfolio allocates nothing; the key is spelled
//! out only for the store.

use std::borrow::Cow;
use std::fmt;
use std::hash::Hasher;

/// How the scope of a number that no portfolio holds is spelled: no
/// portfolio name may start so (config validation).
pub const NUMBER_SCOPE_PREFIX: &str = "number:";

/// A scope: a portfolio, or a number of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Portfolio(&'a str),
    Number(&'a str),
}

impl<'a> Scope<'a> {
    /// The store's key: the portfolio's name, or `number:<id>`.
    pub fn key(&self) -> Cow<'a, str> {
        match *self {
            Scope::Portfolio(name) => Cow::Borrowed(name),
            Scope::Number(id) => Cow::Owned(format!("{NUMBER_SCOPE_PREFIX}{id}")),
        }
    }

    /// The parts whose concatenation is the key.
    pub fn parts(&self) -> [&'a str; 2] {
        match *self {
            Scope::Portfolio(name) => ["", name],
            Scope::Number(id) => [NUMBER_SCOPE_PREFIX, id],
        }
    }
}

impl fmt::Display for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [prefix, name] = self.parts();
        write!(f, "{prefix}{name}")
    }
}

/// Hashes text given in parts as its concatenation would hash (as `str`
/// does: the bytes, then `0xff`), so that a key and its parts hash alike.
pub(super) fn hash_parts(hasher: &mut impl Hasher, parts: &[&str]) {
    for part in parts {
        hasher.write(part.as_bytes());
    }
    hasher.write_u8(0xff);
}

#[cfg(test)]
mod tests {
    use std::hash::{DefaultHasher, Hash};

    use super::*;

    #[test]
    fn a_key_and_its_parts_hash_alike() {
        for scope in [Scope::Portfolio("acme"), Scope::Number("106540352242922")] {
            let mut whole = DefaultHasher::new();
            scope.key().as_ref().hash(&mut whole);
            let mut parts = DefaultHasher::new();
            hash_parts(&mut parts, &scope.parts());
            assert_eq!(whole.finish(), parts.finish(), "{scope}");
            assert_eq!(scope.to_string(), scope.key());
        }
        assert_eq!(Scope::Number("1").key(), "number:1");
    }
}
