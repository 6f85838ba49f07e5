//! Identifier newtypes, parsed at the edge so that a malformed id never reaches the mapper.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Accepts any non-blank value (trimmed).
            pub fn parse(raw: &str) -> Option<Self> {
                let t = raw.trim();
                (!t.is_empty() && t.len() <= 256 && !t.chars().any(char::is_control))
                    .then(|| Self(t.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

macro_rules! number_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            pub fn new(v: u64) -> Self {
                Self(v)
            }

            /// Accepts digits, tolerating surrounding blanks (ids arrive as strings or numbers).
            pub fn parse(raw: &str) -> Option<Self> {
                let t = raw.trim();
                (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| t.parse().ok())
                    .flatten()
                    .map(Self)
            }

            /// From a JSON value that may be a number or a numeric string.
            pub fn from_json(v: &serde_json::Value) -> Option<Self> {
                match v {
                    serde_json::Value::Number(n) => n.as_u64().map(Self),
                    serde_json::Value::String(s) => Self::parse(s),
                    _ => None,
                }
            }

            pub fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

string_id!(
    /// Enerflo v2 deal id (a UUID string; kept as text so an odd format is not fatal).
    DealId
);
string_id!(
    /// Enerflo v2 customer id (UUID).
    CustomerUuid
);
string_id!(
    /// A record id in the CRM (contact, project or note), opaque to us.
    CrmId
);
string_id!(
    /// Enerflo v2 deal short code.
    ShortCode
);
number_id!(
    /// Enerflo v1 install id (the project in the Install Tracker).
    InstallId
);
number_id!(
    /// Enerflo v1 customer id.
    CustomerId
);
number_id!(
    /// Enerflo v1 survey id (a v1 "deal").
    SurveyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_ids_accept_numbers_and_numeric_strings_only() {
        assert_eq!(
            InstallId::from_json(&serde_json::json!(700001)),
            Some(InstallId::new(700001))
        );
        assert_eq!(
            InstallId::from_json(&serde_json::json!(" 42 ")),
            Some(InstallId::new(42))
        );
        assert_eq!(InstallId::from_json(&serde_json::json!("4x")), None);
        assert_eq!(InstallId::from_json(&serde_json::json!(-1)), None);
        assert_eq!(InstallId::from_json(&serde_json::json!(null)), None);
    }

    #[test]
    fn string_ids_reject_blank_and_control_characters() {
        assert!(DealId::parse("  ").is_none());
        assert!(DealId::parse("a\nb").is_none());
        assert_eq!(
            DealId::parse(" abc ").map(|d| d.to_string()),
            Some("abc".into())
        );
    }
}
