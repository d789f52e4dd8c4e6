//! Secrets (API keys, agent authtokens) and the hashes they are stored and looked up by.
//!
//! A secret is shown once, when it is made; afterwards only its SHA-256 exists anywhere. A
//! plain hash (no salt, no stretching) is enough because every secret is 160+ random bits:
//! there is no dictionary to guess from.

use std::fmt;

use sha2::{Digest, Sha256};

/// A secret in clear text. `Debug` never prints it, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a clear-text secret.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The clear text, for the one place that must show or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash it is stored and looked up by.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(MASKED)")
    }
}

/// The SHA-256 of a secret, written as 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretHash(String);

impl SecretHash {
    /// Hashes a presented secret, e.g. the bearer token of a request.
    pub fn of(text: &str) -> Self {
        let digest = Sha256::digest(text.as_bytes());
        Self(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Wraps a hash read back from storage.
    pub fn from_hex(hex: String) -> Self {
        Self(hex)
    }

    /// The hex form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_masks() {
        let s = Secret::new("abc");
        assert_eq!(
            s.hash().as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(format!("{s:?}"), "Secret(MASKED)");
    }
}
