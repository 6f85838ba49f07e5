//! Stable content hashes: canonical JSON (object keys sorted) through SHA-256.

use ring::digest::{Context, SHA256};
use serde::Serialize;

/// Hex SHA-256 of a value's canonical JSON. `serde_json::Value` objects are `BTreeMap`s here (no
/// `preserve_order`), so key order in the input does not change the hash.
pub fn content_hash<T: Serialize + ?Sized>(value: &T) -> String {
    let canonical = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    sha256_hex(canonical.to_string().as_bytes())
}

/// Hex SHA-256 of a JSON value's canonical text, streamed into the hasher (no intermediate string).
pub fn json_sha256_hex(value: &serde_json::Value) -> String {
    struct HashWriter(Context);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // serde_json writes in small pieces: buffer them so the hasher sees large blocks.
    let mut w = std::io::BufWriter::with_capacity(8192, HashWriter(Context::new(&SHA256)));
    // Writing into a hasher cannot fail.
    let _ = serde_json::to_writer(&mut w, value);
    match w.into_inner() {
        Ok(hasher) => hex::encode(hasher.0.finish().as_ref()),
        Err(_) => sha256_hex(value.to_string().as_bytes()),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&SHA256, bytes).as_ref())
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
        assert_eq!(json_sha256_hex(&a), sha256_hex(a.to_string().as_bytes()));
        assert_eq!(json_sha256_hex(&a), json_sha256_hex(&b));
    }
}
