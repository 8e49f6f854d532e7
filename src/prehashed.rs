//! A `BuildHasher` for maps whose keys are already uniform 64-bit hashes
//! (the identity cache, the rate limiters): the key is used as its own
//! hash instead of being hashed a second time.

use std::hash::{BuildHasher, Hasher};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PreHashed;

impl BuildHasher for PreHashed {
    type Hasher = PreHashedKey;

    fn build_hasher(&self) -> PreHashedKey {
        PreHashedKey(0)
    }
}

/// The hasher of one `u64` key: the key itself.
#[derive(Debug)]
pub(crate) struct PreHashedKey(u64);

impl Hasher for PreHashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for `u64` keys; fold anything else in.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_u64_key_is_its_own_hash() {
        assert_eq!(PreHashed.hash_one(0xDEAD_BEEF_u64), 0xDEAD_BEEF);
    }
}
