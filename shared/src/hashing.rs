//! Stable content hashes: canonical JSON (object keys sorted) through SHA-256.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of a value's canonical JSON. `serde_json::Value` objects are `BTreeMap`s here (no
/// `preserve_order`), so key order in the input does not change the hash.
pub fn content_hash<T: Serialize + ?Sized>(value: &T) -> String {
    let canonical = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    sha256_hex(canonical.to_string().as_bytes())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_does_not_change_the_hash_but_values_do() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"a":1,"b":{"c":2,"d":3}}"#).expect("json");
        let b: serde_json::Value =
            serde_json::from_str(r#"{"b":{"d":3,"c":2},"a":1}"#).expect("json");
        let c: serde_json::Value =
            serde_json::from_str(r#"{"b":{"d":3,"c":2},"a":2}"#).expect("json");
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(content_hash(&a), content_hash(&c));
    }
}
