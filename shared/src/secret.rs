//! A wrapper for credentials so they never reach a log line, a `Debug` dump or an error body.

use std::fmt;

use subtle::ConstantTimeEq;

/// A secret string. `Debug` and `Display` print `[redacted]`; the value is only reachable through
/// [`Secret::expose`], which makes every use greppable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A set of accepted values for one credential (comma-separated in configuration), so a token can
/// be rotated without downtime: deploy `new,old`, move the caller to `new`, then drop `old`.
#[derive(Clone, Default)]
pub struct SecretSet(Vec<Secret>);

impl SecretSet {
    /// Parses a comma-separated list; blanks are dropped.
    pub fn parse(list: &str) -> Self {
        Self(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(Secret::new)
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The first (current) value, for a process that must present the credential itself (the
    /// local sandbox calling the runner's own webhook route).
    pub fn first(&self) -> Option<&Secret> {
        self.0.first()
    }

    /// Every value, the current one first.
    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.0.iter()
    }

    /// Constant-time membership: every candidate is compared in full, whatever matches, so
    /// the timing says nothing about which value (or how much of it) was right.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mut found = subtle::Choice::from(0u8);
        for secret in &self.0 {
            found |= ct_eq(secret.expose().as_bytes(), candidate);
        }
        found.into()
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSet([{} redacted])", self.0.len())
    }
}

/// Constant-time equality that does not leak the length of the expected value either: both sides
/// are hashed first, so the comparison always runs over 32 bytes.
fn ct_eq(expected: &[u8], candidate: &[u8]) -> subtle::Choice {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(expected);
    let b = Sha256::digest(candidate);
    a.as_slice().ct_eq(b.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("super-secret-value");
        assert!(!format!("{s:?}").contains("super-secret-value"));
        assert!(!format!("{s}").contains("super-secret-value"));
        let set = SecretSet::parse("aaa,bbb");
        assert!(!format!("{set:?}").contains("aaa"));
    }

    #[test]
    fn secret_set_accepts_every_rotated_value_and_nothing_else() {
        let set = SecretSet::parse(" new-token , old-token ,,");
        assert_eq!(set.len(), 2);
        assert!(set.matches(b"new-token"));
        assert!(set.matches(b"old-token"));
        assert!(!set.matches(b"new-toke"));
        assert!(!set.matches(b""));
        assert!(!SecretSet::parse("").matches(b""));
    }
}
