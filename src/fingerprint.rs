//! Fingerprints of access tokens: a keyed hash (HMAC-SHA256) that names a
//! sender without revealing its token, shown as 16 hex digits. Config
//! lists fingerprints (`[clients.<name>] tokens`, `[numbers."<id>"]
//! tokens`); the proxy computes them per request (see `client`).

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use ring::hmac;
use serde::{Deserialize, Deserializer};
use thread_local::ThreadLocal;

/// The key fingerprints are made with when `SENDGATE_FINGERPRINT_KEY` is
/// unset. Tokens are long random strings, so even under a known key a
/// fingerprint cannot be turned back into one; a secret key also stops
/// anyone from telling whether a token they hold is one config names.
const DEFAULT_KEY: &[u8] = b"sendgate client fingerprint v1";

/// Hex digits shown of a fingerprint: 64 bits, plenty to tell tenants apart.
const SHOWN_BYTES: usize = 8;

/// A sender's fingerprint: the first 64 bits of the HMAC of its token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint([u8; SHOWN_BYTES]);

impl Fingerprint {
    /// The bits as one number, for keying a limiter.
    pub fn as_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFingerprint;

impl fmt::Display for BadFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a fingerprint is 16 hex digits, as `sendgate fingerprint` prints it")
    }
}

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.len() != SHOWN_BYTES * 2 {
            return Err(BadFingerprint);
        }
        let mut bytes = [0; SHOWN_BYTES];
        for (slot, pair) in bytes.iter_mut().zip(text.as_bytes().chunks(2)) {
            let digit = |b: u8| char::from(b).to_digit(16).ok_or(BadFingerprint);
            *slot = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
        }
        Ok(Fingerprint(bytes))
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Makes fingerprints under one key.
pub struct Fingerprinter {
    key: hmac::Key,
    /// Each worker thread's last few tokens and their fingerprints: a
    /// sender sends many requests with one token, and comparing it with a
    /// remembered one costs a small fraction of the HMAC.
    recent: ThreadLocal<RefCell<Vec<Remembered>>>,
}

/// A token a thread saw lately, and its fingerprint.
type Remembered = (Box<str>, Fingerprint);

/// Tokens each thread remembers.
const RECENT_TOKENS: usize = 8;

impl Fingerprinter {
    /// Fingerprints under `secret` (`SENDGATE_FINGERPRINT_KEY`), or the
    /// fixed key when there is none.
    pub fn new(secret: Option<&str>) -> Self {
        let key = secret.map_or(DEFAULT_KEY, str::as_bytes);
        Fingerprinter {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            recent: ThreadLocal::new(),
        }
    }

    pub fn of(&self, token: &str) -> Fingerprint {
        let mut recent = self.recent.get_or_default().borrow_mut();
        if let Some((_, fingerprint)) = recent.iter().find(|(known, _)| **known == *token) {
            return *fingerprint;
        }
        let tag = hmac::sign(&self.key, token.as_bytes());
        let mut bytes = [0; SHOWN_BYTES];
        bytes.copy_from_slice(&tag.as_ref()[..SHOWN_BYTES]);
        let fingerprint = Fingerprint(bytes);
        if recent.len() == RECENT_TOKENS {
            recent.remove(0);
        }
        recent.push((token.into(), fingerprint));
        fingerprint
    }
}
