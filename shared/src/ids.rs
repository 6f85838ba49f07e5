//! Identifier newtypes for ids the CRM hands us, parsed at the edge so that a malformed id is
//! answered with a clear error and never reaches a store key or an Enerflo path.
//!
//! Ids inside Enerflo's payloads are read by the tolerant readers of [`crate::enerflo::lenient`]
//! instead (an odd shape there reads as "absent", it is not the caller's error).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A record id in the CRM (contact, project or note), opaque to us.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CrmId(String);

impl CrmId {
    /// Accepts any non-blank value (trimmed) of at most 256 bytes without control characters.
    pub fn parse(raw: &str) -> Option<Self> {
        let t = raw.trim();
        (!t.is_empty() && t.len() <= 256 && !t.chars().any(char::is_control))
            .then(|| Self(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CrmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Enerflo v1 install id (the project in the Install Tracker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstallId(u64);

impl InstallId {
    /// Accepts digits only (no sign, no fraction), tolerating surrounding blanks.
    pub fn parse(raw: &str) -> Option<Self> {
        let t = raw.trim();
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
            .map(Self)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for InstallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_ids_are_digits_only() {
        assert_eq!(InstallId::parse("700001").map(InstallId::get), Some(700001));
        assert_eq!(InstallId::parse(" 42 ").map(InstallId::get), Some(42));
        for bad in ["", " ", "4x", "-1", "+1", "1.0", "99999999999999999999999"] {
            assert_eq!(InstallId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn crm_ids_reject_blank_and_control_characters() {
        assert!(CrmId::parse("  ").is_none());
        assert!(CrmId::parse("a\nb").is_none());
        assert!(CrmId::parse(&"x".repeat(257)).is_none());
        assert_eq!(
            CrmId::parse(" abc ").map(|d| d.to_string()),
            Some("abc".into())
        );
    }
}
