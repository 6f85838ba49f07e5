//! Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over
//! `"{id}.{timestamp}.{body}"`, sent as `v1,<base64>`; several space-separated signatures may be
//! present (secret rotation). Verification is constant-time with a timestamp tolerance.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Accepted clock skew, past and future (the spec's 5 minutes).
pub const TOLERANCE_SECS: i64 = 300;

pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

// HMAC accepts keys of any length; this cannot happen.
fn unreachable_hmac() -> Hmac<Sha256> {
    #[allow(clippy::expect_used)]
    <Hmac<Sha256> as KeyInit>::new_from_slice(b"k").expect("hmac takes any key length")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("timestamp outside the tolerance window")]
    Timestamp,
    #[error("no signature matches")]
    Mismatch,
}

/// Verifies a delivery. `signatures` is the raw `webhook-signature` header value.
pub fn verify(
    key: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let id = id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let ts_raw = timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let sigs = signatures.ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let ts: i64 = ts_raw.trim().parse().map_err(|_| VerifyError::Timestamp)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Timestamp);
    }
    let expected = sign(key, id, ts, body);
    let expected_mac = expected.trim_start_matches("v1,");
    let expected_bytes = base64::engine::general_purpose::STANDARD
        .decode(expected_mac)
        .unwrap_or_default();
    let mut ok = subtle::Choice::from(0u8);
    for candidate in sigs.split_whitespace() {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        if bytes.len() == expected_bytes.len() {
            ok |= subtle::ConstantTimeEq::ct_eq(bytes.as_slice(), expected_bytes.as_slice());
        }
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("b64")
    }

    /// The test vector published with the Standard Webhooks reference libraries.
    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        let sig = sign(
            &key(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verify_accepts_any_listed_signature_and_rejects_tampering_and_stale_timestamps() {
        let body = br#"{"a":1}"#;
        let good = sign(&key(), "evt_1", 1000, body);
        let header = format!("v1,AAAA {good}");
        assert_eq!(
            verify(
                &key(),
                Some("evt_1"),
                Some("1000"),
                Some(&header),
                body,
                1100
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                &key(),
                Some("evt_1"),
                Some("1000"),
                Some(&good),
                br#"{"a":2}"#,
                1100
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&key(), Some("evt_2"), Some("1000"), Some(&good), body, 1100),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(
                &key(),
                Some("evt_1"),
                Some("1000"),
                Some(&good),
                body,
                1000 + 301
            ),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            verify(&key(), None, Some("1000"), Some(&good), body, 1000),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
    }
}
